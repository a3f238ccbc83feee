"""The ``gatehouse`` command: one entry point, a subcommand per service or task.

Each service package registers its own subcommands (a ``register(subparsers)`` function in
its ``cli`` module), so this module only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gatehouse import __version__
from gatehouse.errors import GatehouseError

#: Modules whose ``register`` adds subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "gatehouse.node_cli",
    "gatehouse.access_point.cli",
    "gatehouse.policy.cli",
    "gatehouse.authentication.cli",
    "gatehouse.distribution.cli",
    "gatehouse.oath.tokens_cli",
    "gatehouse.administration.cli",
    "gatehouse.storage.cli",
    "gatehouse.demo_backend.cli",
    "gatehouse.cluster.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatehouse", description="Gatehouse access gateway")
    parser.add_argument("--version", action="version", version=f"gatehouse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue  # a service not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except GatehouseError as exc:
        print(f"gatehouse: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

"""Argument types shared by the subcommands of ``gatehouse``."""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from gatehouse.config.access_point import parse_listen

#: The subcommands of a ``gatehouse`` command, as ``register`` functions receive them.
Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def listen_arg(value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return int(value)


def add_home(parser: argparse.ArgumentParser) -> None:
    """``--home DIR`` (or GATEHOUSE_HOME): the installation a command acts on."""
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("GATEHOUSE_HOME", "var")),
        metavar="DIR",
        help="installation directory (default: $GATEHOUSE_HOME or ./var)",
    )


def lazy_handler(module: str, command: str) -> Callable[[argparse.Namespace], int]:
    """A handler that imports ``module`` only when the command runs (``gatehouse --help``
    and the other commands do not pay for it) and calls its ``command``."""

    def run_command(args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(
            importlib.import_module(module), command
        )
        return handler(args)

    return run_command


def home_action(
    actions: Sub, name: str, help_text: str, module: str, command: str
) -> argparse.ArgumentParser:
    """A subcommand that acts on the installation in ``--home``, run by ``module.command``."""
    parser = actions.add_parser(name, help=help_text)
    add_home(parser)
    parser.set_defaults(handler=lazy_handler(module, command))
    return parser


def admin_action(
    actions: Sub, name: str, help_text: str, module: str, command: str
) -> argparse.ArgumentParser:
    """A subcommand that talks to the Administration service (``--admin URL``, ``--home``),
    run by ``module.command``."""
    parser = home_action(actions, name, help_text, module, command)
    parser.add_argument(
        "--admin", metavar="URL", help="default: from HOME/administration.yaml's listen"
    )
    return parser

"""The ``gatehouse`` command: one entry point, a subcommand per service or task."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gatehouse import __version__
from gatehouse.config.access_point import parse_listen
from gatehouse.errors import GatehouseError


def _listen_arg(value: str) -> tuple[str, int]:
    try:
        return parse_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatehouse", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gatehouse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ap = sub.add_parser("access-point", help="run an Access Point (the reverse proxy)")
    ap.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    ap.add_argument("--listen", type=_listen_arg, metavar="HOST:PORT", help="override listen")
    ap.add_argument("--workers", type=_positive_int, metavar="N", help="override workers")

    demo = sub.add_parser("demo-backend", help="run the demo 'whoami' backend")
    demo.add_argument(
        "--listen", type=_listen_arg, default=("127.0.0.1", 9000), metavar="HOST:PORT"
    )
    demo.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    demo.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert")

    up = sub.add_parser("up", help="start a single node on this machine")
    up.add_argument("--config", metavar="FILE", help="Access Point config (default: built in)")
    up.add_argument("--listen", type=_listen_arg, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    up.add_argument(
        "--backend-listen", type=_listen_arg, default=("127.0.0.1", 9000), metavar="HOST:PORT"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "access-point":
            from gatehouse.access_point.server import run_access_point

            return run_access_point(args.config, listen=args.listen, workers=args.workers)
        if args.command == "demo-backend":
            from gatehouse.demo_backend.app import serve

            if bool(args.tls_cert) != bool(args.tls_key):
                print("gatehouse: --tls-cert and --tls-key go together", file=sys.stderr)
                return 2
            host, port = args.listen
            serve(host, port, certfile=args.tls_cert, keyfile=args.tls_key)
            return 0
        if args.command == "up":
            from gatehouse.node import run_up

            return run_up(args.config, listen=args.listen, backend_listen=args.backend_listen)
    except GatehouseError as exc:
        print(f"gatehouse: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2

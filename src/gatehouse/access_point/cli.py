"""``gatehouse access-point``."""

from __future__ import annotations

import argparse

from gatehouse.cli_support import listen_arg, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ap = sub.add_parser("access-point", help="run an Access Point (the reverse proxy)")
    ap.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    ap.add_argument("--listen", type=listen_arg, metavar="HOST:PORT", help="override listen")
    ap.add_argument("--workers", type=positive_int, metavar="N", help="override workers")
    ap.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from gatehouse.access_point.server import run_access_point

    return run_access_point(args.config, listen=args.listen, workers=args.workers)

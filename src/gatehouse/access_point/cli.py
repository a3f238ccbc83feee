"""``gatehouse access-point``: from a configuration file (``--config``) or following the
Administration service (``--state``, see :mod:`gatehouse.access_point.managed`)."""

from __future__ import annotations

import argparse

from gatehouse.cli_support import listen_arg, positive_int
from gatehouse.internal.managed import add_source_arguments, joining_of
from gatehouse.internal.service_tls import add_tls_argument


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ap = sub.add_parser("access-point", help="run an Access Point (the reverse proxy)")
    add_source_arguments(ap)
    ap.add_argument(
        "--listen",
        type=listen_arg,
        metavar="HOST:PORT",
        help="override listen (of the file or of every Admin version)",
    )
    ap.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="override workers (of the file or of every Admin version)",
    )
    add_tls_argument(ap)
    ap.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    joining = joining_of(args)
    if args.state is None:
        from gatehouse.access_point.server import run_access_point

        return run_access_point(
            args.config, listen=args.listen, workers=args.workers, internal_tls=args.tls
        )
    if args.tls is not None:
        from gatehouse.errors import GatehouseError

        raise GatehouseError("--tls is for --config: with --state DIR the service uses DIR/tls")
    from gatehouse.access_point.managed import run_managed
    from gatehouse.access_point.server import Overrides

    overrides = Overrides(listen=args.listen, workers=args.workers)
    return run_managed(args.state, joining, overrides)

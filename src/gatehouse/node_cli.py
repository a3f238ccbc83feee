"""``gatehouse up``."""

from __future__ import annotations

import argparse

from gatehouse.cli_support import add_home, listen_arg


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = sub.add_parser("up", help="start a single node on this machine")
    up.add_argument(
        "--config",
        metavar="FILE",
        help="installation configuration to publish (default: the built-in single node, "
        "published once)",
    )
    up.add_argument("--listen", type=listen_arg, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    up.add_argument(
        "--backend-listen", type=listen_arg, default=("127.0.0.1", 9000), metavar="HOST:PORT"
    )
    up.add_argument(
        "--policy-listen", type=listen_arg, default=("127.0.0.1", 8101), metavar="HOST:PORT"
    )
    up.add_argument(
        "--auth-listen", type=listen_arg, default=("127.0.0.1", 8201), metavar="HOST:PORT"
    )
    up.add_argument(
        "--admin-listen", type=listen_arg, default=("127.0.0.1", 8001), metavar="HOST:PORT"
    )
    up.add_argument(
        "--status-listen",
        type=listen_arg,
        default=("127.0.0.1", 8090),
        metavar="HOST:PORT",
        help="the Access Point's status listener: its configuration version and Policy "
        "routing (the public /_gatehouse/health says only up or down)",
    )
    up.add_argument(
        "--distribution-listen",
        type=listen_arg,
        default=("127.0.0.1", 8301),
        metavar="HOST:PORT",
        help="the Distribution service (codes by e-mail)",
    )
    up.add_argument(
        "--smtp-listen",
        type=listen_arg,
        default=("127.0.0.1", 8025),
        metavar="HOST:PORT",
        help="the demo mail server (SMTP, in the demo backend): the codes by e-mail go there",
    )
    up.add_argument(
        "--metrics-listen",
        type=_metrics_arg,
        default=("127.0.0.1", 9461),
        metavar="HOST:PORT|off",
        help="the first of five consecutive ports for the services' metrics listeners "
        "(Administration, Access Point, Policy, Authentication, Distribution; GET /metrics; "
        "default 127.0.0.1:9461); HOME/prometheus.yml lists them. 'off': no metrics",
    )
    add_home(up)
    up.set_defaults(handler=run)


def _metrics_arg(value: str) -> tuple[str, int] | None:
    if value == "off":
        return None
    host, port = listen_arg(value)
    if port + 4 > 65535:
        raise argparse.ArgumentTypeError("the port and the next four must be below 65536")
    return host, port


def run(args: argparse.Namespace) -> int:
    from gatehouse.node import run_up

    return run_up(
        args.config,
        listen=args.listen,
        backend_listen=args.backend_listen,
        home=args.home,
        policy_listen=args.policy_listen,
        auth_listen=args.auth_listen,
        admin_listen=args.admin_listen,
        status_listen=args.status_listen,
        distribution_listen=args.distribution_listen,
        smtp_listen=args.smtp_listen,
        metrics_listen=args.metrics_listen,
    )

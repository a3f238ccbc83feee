"""``gatehouse policy``: run a Policy service (decisions, sessions, the login portal)."""

from __future__ import annotations

import argparse

from gatehouse.cli_support import add_home, listen_arg


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ps = sub.add_parser("policy", help="run a Policy service (decisions and the login portal)")
    ps.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    ps.add_argument("--listen", type=listen_arg, metavar="HOST:PORT", help="override listen")
    add_home(ps)
    ps.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gatehouse.config.access_point import parse_listen
    from gatehouse.config.loader import load_file
    from gatehouse.config.policy import PolicyConfig
    from gatehouse.internal.hosting import serve
    from gatehouse.policy.app import create_app
    from gatehouse.policy.service import PolicyService
    from gatehouse.storage.home import database_urls, prepare_home

    config = load_file(PolicyConfig, args.config)
    home = prepare_home(args.home)
    urls = database_urls(home)
    service = PolicyService(
        config,
        session_db=config.policy.session_db or urls.session_db,
        user_db=urls.user_db,
        home=home,
        config_dir=Path(args.config).resolve().parent,
    )
    host, port = args.listen or parse_listen(config.policy.listen)
    return serve(create_app(config.login.portal_prefix, lambda: service), host, port)

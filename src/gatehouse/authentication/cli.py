"""``gatehouse authentication`` (the service) and the ``users`` / ``groups`` admin commands."""

from __future__ import annotations

import argparse

from gatehouse.authentication import users_cli
from gatehouse.cli_support import add_home, listen_arg


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser("authentication", help="run an Authentication service")
    auth.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    auth.add_argument("--listen", type=listen_arg, metavar="HOST:PORT", help="override listen")
    add_home(auth)
    auth.set_defaults(handler=run)
    users_cli.register(sub)


def run(args: argparse.Namespace) -> int:
    from gatehouse.authentication.app import create_app
    from gatehouse.authentication.config import AuthenticationConfig
    from gatehouse.config.access_point import parse_listen
    from gatehouse.config.loader import load_file
    from gatehouse.internal.hosting import serve
    from gatehouse.storage.home import database_urls, prepare_home

    settings = load_file(AuthenticationConfig, args.config).authentication
    user_db = settings.user_db or database_urls(prepare_home(args.home)).user_db
    host, port = args.listen or parse_listen(settings.listen)
    return serve(create_app(settings, user_db), host, port)

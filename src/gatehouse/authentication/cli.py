"""``gatehouse authentication`` (the service) and the ``users`` / ``groups`` admin commands.

The service's configuration comes from ``--config FILE`` or, with ``--state DIR``, from the
Administration service (:mod:`gatehouse.internal.managed`): the service registers if need be
and gets the version to start from before it listens, then follows Admin while it runs
(:meth:`gatehouse.authentication.app.Service.apply` says what applies live).
"""

from __future__ import annotations

import argparse

from gatehouse.authentication import users_cli
from gatehouse.internal.managed import add_service_arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser("authentication", help="run an Authentication service")
    add_service_arguments(auth)
    auth.set_defaults(handler=run)
    users_cli.register(sub)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gatehouse.authentication.app import ROLE, check_view, create_app
    from gatehouse.authentication.config import AuthenticationConfig
    from gatehouse.authentication.oauth_keys_client import STATE_FILE, admin_fetch
    from gatehouse.authentication.oauth_service import KEYS_FILE
    from gatehouse.config.access_point import parse_listen
    from gatehouse.internal.hosting import serve
    from gatehouse.internal.managed import load_configuration
    from gatehouse.internal.service_tls import credentials_of, revocations_of
    from gatehouse.oath.seeds import KEYRING_FILE
    from gatehouse.storage.home import database_urls, prepare_home

    config, agent = load_configuration(args, ROLE, check_view, AuthenticationConfig)
    settings = config.authentication
    home = prepare_home(args.home) if not (settings.user_db and settings.oath_db) else args.home
    user_db = settings.user_db or database_urls(home).user_db
    oath_db = settings.oath_db or database_urls(home).oath_db
    # A relative key file is relative to the installation home, like relative SQLite paths.
    keyring = Path(args.home) / (settings.oath_keyring or KEYRING_FILE)
    oauth2_db = settings.oauth2_db or database_urls(home).oauth2_db
    oauth_fetch = None
    if agent is not None:
        # Admin's keys (the view's oauth.keys), kept in the state directory.
        oauth_keys = Path(args.state) / STATE_FILE
        oauth_fetch = admin_fetch(agent)
    else:
        oauth_keys = Path(args.home) / (settings.oauth_keys_file or KEYS_FILE)
    host, port = args.listen or parse_listen(settings.listen)
    credentials = credentials_of(args, host)
    app = create_app(
        settings,
        user_db,
        agent,
        oath_db=oath_db,
        oath_keyring=keyring,
        credentials=credentials,
        oauth2_db=oauth2_db,
        oauth_keys=oauth_keys,
        oauth_fetch=oauth_fetch,
        failover_wait=config.database.failover_wait,
    )
    from gatehouse.metrics.roles import authentication_metrics

    metrics = authentication_metrics(app, agent, settings.metrics.listen)
    return serve(
        app,
        host,
        port,
        tls=None if credentials is None else credentials.server,
        revocations=revocations_of(agent),  # used only with tls
        metrics=metrics,
    )

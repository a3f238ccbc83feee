"""``gatehouse distribution`` (the service) and ``gatehouse outbox`` (the outbox, read and
retried directly in the outbox DB, like ``gatehouse tokens``).

The service's configuration comes from ``--config FILE`` or, with ``--state DIR``, from the
Administration service (:mod:`gatehouse.internal.managed`), as for ``gatehouse
authentication``; :meth:`gatehouse.distribution.service.Service.apply` says what applies live.
"""

from __future__ import annotations

import argparse

from gatehouse.distribution import outbox_cli
from gatehouse.internal.managed import add_service_arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dist = sub.add_parser(
        "distribution", help="run a Distribution service (codes by e-mail and SMS)"
    )
    add_service_arguments(dist)
    dist.set_defaults(handler=run)
    outbox_cli.register(sub)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gatehouse.config.access_point import parse_listen
    from gatehouse.distribution.app import create_app
    from gatehouse.distribution.bodies import KEY_FILE
    from gatehouse.distribution.config import DistributionConfig
    from gatehouse.distribution.service import ROLE, check_view
    from gatehouse.internal.hosting import serve
    from gatehouse.internal.managed import load_configuration
    from gatehouse.internal.service_tls import credentials_of, revocations_of
    from gatehouse.storage.home import database_urls, prepare_home

    config, agent = load_configuration(args, ROLE, check_view, DistributionConfig)
    settings = config.distribution
    home = prepare_home(args.home)
    outbox_db = settings.outbox_db or database_urls(home).outbox_db
    # A relative key file is relative to the installation home, like relative SQLite paths.
    keyring = Path(args.home) / (settings.outbox_keyring or KEY_FILE)
    host, port = args.listen or parse_listen(settings.listen)
    credentials = credentials_of(args, host)
    app = create_app(settings, outbox_db, keyring, Path(args.home), agent)
    from gatehouse.metrics.roles import distribution_metrics

    metrics = distribution_metrics(app, agent, credentials, settings.metrics.listen)
    return serve(
        app,
        host,
        port,
        tls=None if credentials is None else credentials.server,
        revocations=revocations_of(agent),  # used only with tls
        metrics=metrics,
    )

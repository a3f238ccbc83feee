"""``gatehouse policy``: run a Policy service (decisions, sessions, the login portal).

Its configuration comes from ``--config FILE`` or, with ``--state DIR``, from the
Administration service (:mod:`gatehouse.internal.managed`): the service registers if need be
and gets the version to start from before it listens, then follows Admin while it runs
(:meth:`gatehouse.policy.service.PolicyService.apply` says what applies live).
"""

from __future__ import annotations

import argparse

from gatehouse.internal.managed import add_service_arguments


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ps = sub.add_parser("policy", help="run a Policy service (decisions and the login portal)")
    add_service_arguments(ps)
    ps.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from gatehouse.config.access_point import parse_listen
    from gatehouse.config.loader import load_file
    from gatehouse.config.policy import PolicyConfig
    from gatehouse.internal.config_agent import ConfigAgent
    from gatehouse.internal.hosting import serve
    from gatehouse.internal.managed import joining_of, start_managed
    from gatehouse.internal.service_tls import credentials_of, revocations_of
    from gatehouse.logs import setup_logging
    from gatehouse.policy.app import create_app
    from gatehouse.policy.service import ROLE, PolicyService, check_view, start_check
    from gatehouse.storage.home import database_urls, prepare_home

    joining = joining_of(args)
    home = prepare_home(args.home)
    agent: ConfigAgent | None = None
    version = 0
    if args.state is not None:
        setup_logging()
        # Relative file paths in a published configuration are relative to the home.
        config_dir = home.resolve()
        check = start_check(config_dir, home)
        managed = asyncio.run(start_managed(args.state, ROLE, joining, check))
        config = check_view(managed.view)
        agent, version = managed.agent, managed.version
    else:
        config = load_file(PolicyConfig, args.config)
        config_dir = Path(args.config).resolve().parent
    host, port = args.listen or parse_listen(config.policy.listen)
    credentials = credentials_of(args, host)
    urls = database_urls(home)
    service = PolicyService(
        config,
        session_db=config.policy.session_db or urls.session_db,
        user_db=urls.user_db,
        home=home,
        config_dir=config_dir,
        agent=agent,
        version=version,
        credentials=credentials,
    )
    app = create_app(config.login.portal_prefix, lambda: service)
    from gatehouse.metrics.roles import policy_metrics

    metrics = policy_metrics(service, config.policy.metrics.listen)
    return serve(
        app,
        host,
        port,
        tls=None if credentials is None else credentials.server,
        revocations=revocations_of(agent),  # used only with tls
        metrics=metrics,
    )

"""``gatehouse administration`` (run the service), ``gatehouse config ...`` and
``gatehouse nodes token|revoke`` (talk to it).

Only argparse at import time: the service and the commands import what they need when they
run, so ``gatehouse --help`` stays fast.
"""

from __future__ import annotations

import argparse

from gatehouse.cli_support import Sub, add_home, admin_action, listen_arg


def register(sub: Sub) -> None:
    admin = sub.add_parser(
        "administration", help="run the Administration service (configuration and publishing)"
    )
    admin.add_argument("--config", required=True, metavar="FILE", help="YAML configuration file")
    admin.add_argument("--listen", type=listen_arg, metavar="HOST:PORT", help="override listen")
    add_home(admin)
    admin.set_defaults(handler=run)

    config = sub.add_parser("config", help="change, publish and inspect the configuration")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    apply = _action(actions, "apply", "save FILE as the draft (checked, not published)", "apply")
    apply.add_argument("file", metavar="FILE.yaml")
    _allow_removal_arg(apply)
    diff = _action(actions, "diff", "show what publishing the draft would change", "diff")
    diff.add_argument("--from", dest="since", type=int, metavar="N", help="default: newest")
    publish = _action(actions, "publish", "publish the draft as the next version", "publish")
    publish.add_argument("--comment", default="", metavar="C")
    _wait_arg(publish)
    _action(actions, "status", "show every service and the version it runs", "status")
    rollback = _action(
        actions, "rollback", "publish an earlier version again, as a new version", "rollback"
    )
    rollback.add_argument("version", type=int, metavar="VERSION")
    rollback.add_argument("--comment", default="", metavar="C")
    _allow_removal_arg(rollback)
    _wait_arg(rollback)
    export = _action(actions, "export", "print a published version's configuration", "export")
    export.add_argument("--version", type=int, metavar="N", help="default: the newest")

    nodes = sub.add_parser("nodes", help="let services join the installation, or revoke them")
    node_actions = nodes.add_subparsers(dest="nodes_command", required=True, metavar="ACTION")
    token = _action(
        node_actions, "token", "make a one-time join token for one service", "nodes_token"
    )
    token.add_argument(
        "--role",
        required=True,
        choices=("access_point", "policy", "authentication", "distribution"),
    )
    token.add_argument(
        "--id", required=True, metavar="ID", help="the id of the service that joins with it"
    )
    token.add_argument(
        "--ttl", default="1h", help="how long it is valid (default: 1h, at most 24h)"
    )
    token.add_argument(
        "--replace",
        action="store_true",
        help="enrol the service again although it is enrolled (a new machine, a lost state "
        "directory): its certificates in use are revoked",
    )
    revoke = _action(
        node_actions,
        "revoke",
        "revoke a service's certificates; every service refuses it at once",
        "nodes_revoke",
    )
    revoke.add_argument("id", metavar="ID", help="the service's id")
    revoke.add_argument("--reason", default="", metavar="TEXT", help="why, for the audit log")

    from gatehouse.administration import admins_args, oauth_args

    oauth_args.register(sub)
    admins_args.register(sub)


def _allow_removal_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-removal",
        action="extend",
        nargs="+",
        default=[],
        metavar="ID",
        help="remove these registered services (or the last resources of the Access Points) "
        "on purpose; without it such a configuration is refused",
    )


def _wait_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the services' acknowledgements (default: 10)",
    )


def _action(actions: Sub, name: str, help_text: str, command: str) -> argparse.ArgumentParser:
    return admin_action(actions, name, help_text, "gatehouse.administration.config_cli", command)


def run(args: argparse.Namespace) -> int:
    """Become the installation's Administration service: take the lock, migrate, load or
    make the signing key, the admin token and the internal CA, then serve over TLS (with a
    certificate from that CA) until SIGTERM."""
    import asyncio
    import os
    import signal

    from gatehouse.administration.errors import AdminAlreadyRunning, AdminLockLost
    from gatehouse.administration.service import (
        AdministrationService,
        LockKeeper,
        already_running,
        ensure_admin_token,
        load_settings,
        prepare_database,
        read_token,
    )
    from gatehouse.administration.signing import load_or_create_private_key
    from gatehouse.administration.store import AdminStore
    from gatehouse.errors import GatehouseError
    from gatehouse.storage.engine import Database
    from gatehouse.storage.home import prepare_home

    home = prepare_home(args.home)
    settings = load_settings(args.config, home, args.listen)
    keeper = LockKeeper(
        settings.database,
        settings.lock_check_interval,
        lambda: os.kill(os.getpid(), signal.SIGTERM),
        retake=settings.failover_wait,
    )
    try:
        keeper.start()
    except AdminAlreadyRunning as error:
        raise GatehouseError(already_running(error)) from None
    try:
        from gatehouse.administration.app import create_app
        from gatehouse.administration.credentials import admin_tls
        from gatehouse.internal.hosting import serve

        latest = asyncio.run(prepare_database(settings.database))
        key = load_or_create_private_key(settings.key_file)
        if ensure_admin_token(settings.token_file):
            print(f"admin token written to {settings.token_file} (mode 0600)", flush=True)
        token = read_token(settings.token_file)
        tls = admin_tls(home, settings.id, settings.host, settings.certificate_lifetime)
        from gatehouse.oath.seeds import Keyring

        oauth_keyring = (
            Keyring.load_or_create(settings.oauth_keyring) if settings.oauth_keyring else None
        )

        from gatehouse.administration.admins_signin import (
            AuthServiceChecker,
            authentication_endpoints,
        )

        def make_service() -> AdministrationService:
            service = AdministrationService(
                AdminStore(Database(settings.database, failover_wait=settings.failover_wait)),
                key,
                token,
                latest,
                tls.ca,
                certificate_lifetime=settings.certificate_lifetime,
                oauth_keyring=oauth_keyring,
            )
            # Console sign-ins are checked by the newest version's Authentication services,
            # over mutual TLS with Admin's own certificate.
            service.client_context = tls.credentials.client
            service.checker = AuthServiceChecker(
                lambda: authentication_endpoints(
                    service.latest.content if service.latest else None
                ),
                lambda: tls.credentials.client,
                revoked=service.revoked,
            )
            return service

        from gatehouse.administration.tokens_api import HomeTokens

        app = create_app(make_service, tls.keep_renewed, tokens=lambda: HomeTokens(home))
        from gatehouse.metrics.roles import administration_metrics

        metrics = administration_metrics(app, tls, settings.metrics_listen)
        code = serve(app, settings.host, settings.port, tls=tls.context, metrics=metrics)
    finally:
        keeper.stop()
    if keeper.lost:
        raise AdminLockLost(
            f"lost the Administration lock ({keeper.description}); stopped so that "
            "another Administration service can take over"
        )
    return code

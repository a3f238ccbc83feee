"""``gatehouse db upgrade``: create or migrate an installation's databases."""

from __future__ import annotations

import argparse
import asyncio

from gatehouse.cli_support import add_home


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="manage the installation's databases")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = actions.add_parser(
        "upgrade", help="create or migrate the user, session, OATH, outbox and OAuth2 databases"
    )
    add_home(up)
    up.add_argument(
        "--which",
        choices=("user", "session", "oath", "outbox", "oauth2", "all"),
        default="all",
        help="which database to migrate (default: all)",
    )
    up.set_defaults(handler=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    from gatehouse.storage.home import database_urls, prepare_home
    from gatehouse.storage.migrate import upgrade_installation

    urls = database_urls(prepare_home(args.home))
    if args.which not in ("oath", "outbox", "oauth2"):
        asyncio.run(upgrade_installation(urls, args.which))
    if args.which in ("oath", "all"):
        asyncio.run(upgrade_installation(urls, "oath"))
    if args.which in ("outbox", "all"):
        asyncio.run(upgrade_installation(urls, "outbox"))
    if args.which in ("oauth2", "all"):
        asyncio.run(upgrade_installation(urls, "oauth2"))
    parts = []
    if args.which not in ("oath", "outbox", "oauth2"):
        parts += [f"user DB: {redact(urls.user_db)}", f"session DB: {redact(urls.session_db)}"]
    if args.which in ("oath", "all"):
        parts.append(f"OATH DB: {redact(urls.oath_db)}")
    if args.which in ("outbox", "all"):
        parts.append(f"outbox DB: {redact(urls.outbox_db)}")
    if args.which in ("oauth2", "all"):
        parts.append(f"OAuth2 DB: {redact(urls.oauth2_db)}")
    print(f"databases up to date ({', '.join(parts)})")
    return 0


def redact(url: str) -> str:
    from gatehouse.storage.engine import parse_url

    return parse_url(url).render_as_string(hide_password=True)

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
    from gatehouse.cli_tables import progress
    from gatehouse.storage.home import database_urls, prepare_home
    from gatehouse.storage.migrate import upgrade_installation

    urls = database_urls(prepare_home(args.home))
    steps: list[str] = []
    if args.which not in ("oath", "outbox", "oauth2"):
        steps.append(args.which)
    steps += [branch for branch in ("oath", "outbox", "oauth2") if args.which in (branch, "all")]
    # A progress bar on a terminal (stderr): migrations of big databases take a while.
    with progress("migrating", len(steps)) as bar:
        for done, step in enumerate(steps, 1):
            asyncio.run(upgrade_installation(urls, step))  # type: ignore[arg-type]
            bar.advance(done, step)
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

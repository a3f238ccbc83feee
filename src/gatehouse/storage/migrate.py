"""Run the Alembic migrations programmatically; services call :func:`upgrade` on start.

The user DB and the session DB are two Alembic branches (``user``, ``session``) so each can
be migrated on its own server; on one shared database both branches live side by side. The
Administration service's tables are a third branch (``admin``), and the OATH DB's a fourth
(``oath``), the Distribution service's outbox a fifth (``outbox``), the OAuth2 DB's a sixth
(``oauth2``); these four are migrated
only when asked for by name: ``all`` means the user and session databases.
Concurrent starts are serialised: a PostgreSQL advisory lock, or ``BEGIN IMMEDIATE`` on
SQLite, is held while the migrations run.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from gatehouse.storage.engine import create_engine, parse_url, translate_errors
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.home import DatabaseURLs

Which = Literal["user", "session", "admin", "oath", "outbox", "oauth2", "all"]

MIGRATIONS = Path(__file__).parent / "migrations"
TARGETS: dict[str, tuple[str, ...]] = {
    "user": ("user@head",),
    "session": ("session@head",),
    "admin": ("admin@head",),
    "oath": ("oath@head",),
    "outbox": ("outbox@head",),
    "oauth2": ("oauth2@head",),
    "all": ("user@head", "session@head"),
}
#: Arbitrary constant naming Gatehouse's migration lock among PostgreSQL advisory locks.
PG_MIGRATION_LOCK = 0x6761_7465_686F


#: For drills and tests only: a directory of extra Alembic revisions (a simulated next
#: release's migration, tests/cluster/test_upgrade.py) added to the version locations.
TEST_MIGRATIONS_ENV = "GATEHOUSE_TEST_MIGRATIONS"


def alembic_config(url: str | URL) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    extra = os.environ.get(TEST_MIGRATIONS_ENV)
    if extra:
        config.set_main_option("path_separator", "os")
        locations = os.pathsep.join([str(MIGRATIONS / "versions"), extra])
        config.set_main_option("version_locations", locations)
    rendered = parse_url(url).render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def _run(connection: Connection, config: Config, targets: tuple[str, ...]) -> None:
    config.attributes["connection"] = connection
    for target in targets:
        command.upgrade(config, target)


async def upgrade(url: str | URL, which: Which = "all") -> None:
    """Bring the ``which`` tables of the database at ``url`` to the newest revision."""
    targets = TARGETS[which]
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        async with translate_errors(), engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
                )
            else:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            await conn.run_sync(_run, config, targets)
            await conn.commit()
    finally:
        await engine.dispose()


async def upgrade_installation(urls: DatabaseURLs, which: Which = "all") -> None:
    """Migrate an installation's databases: one run when they share a URL, else one each.

    The Administration service's tables (``admin``) live in the user DB; ``oath`` migrates
    the OATH DB, ``outbox`` the outbox DB and ``oauth2`` the OAuth2 DB (their own URLs)."""
    if which == "admin":
        await upgrade(urls.user_db, "admin")
        return
    if which == "oath":
        await upgrade(urls.oath_db, "oath")
        return
    if which == "outbox":
        if not urls.outbox_db:
            raise ValueError("no outbox DB URL")
        await upgrade(urls.outbox_db, "outbox")
        return
    if which == "oauth2":
        if not urls.oauth2_db:
            raise ValueError("no OAuth2 DB URL")
        await upgrade(urls.oauth2_db, "oauth2")
        return
    if urls.shared:
        await upgrade(urls.user_db, which)
        return
    if which in ("user", "all"):
        await upgrade(urls.user_db, "user")
    if which in ("session", "all"):
        await upgrade(urls.session_db, "session")


log = logging.getLogger("gatehouse.storage")


async def start_migrations(
    url: str | URL, which: Which, ready: asyncio.Event
) -> asyncio.Task[None] | None:
    """Migrate now; if the database is unavailable, keep trying in a background task (which
    is returned) while the service answers 503. ``ready`` is set once migrated."""
    try:
        await upgrade(url, which)
    except DatabaseUnavailable as error:
        log.warning("%s DB not available yet, retrying: %s", which, error)
        return asyncio.create_task(migrate_when_available(url, which, ready))
    ready.set()
    return None


async def migrate_when_available(
    url: str | URL,
    which: Which,
    ready: asyncio.Event,
    retry_min: float = 0.5,
    retry_max: float = 5.0,
) -> None:
    """Migrate, retrying with back-off while the database is unavailable; set ``ready`` then.

    Services start even when their database is down (they answer 503 meanwhile), so a
    database that comes up later is picked up without a restart.
    """
    delay = retry_min
    while True:
        await asyncio.sleep(delay)
        try:
            await upgrade(url, which)
        except DatabaseUnavailable as error:
            log.warning("%s DB still not available: %s", which, error)
            delay = min(delay * 2, retry_max)
        else:
            log.info("%s DB available, migrations done", which)
            ready.set()
            return

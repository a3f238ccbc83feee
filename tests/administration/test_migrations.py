"""The ``admin`` migration branch creates exactly the modelled tables, beside the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from gatehouse.administration.tables import AdminBase
from gatehouse.storage.engine import Database
from gatehouse.storage.home import DatabaseURLs
from gatehouse.storage.migrate import upgrade, upgrade_installation

ADMIN_TABLES = {
    "admin_drafts",
    "admin_versions",
    "admin_services",
    "admin_join_tokens",
    "admin_audit",
    "admin_certificates",
    "admin_oauth_keys",
    "admin_administrators",
    "admin_personal_tokens",
    "admin_console_sessions",
}
OTHER_TABLES = {
    "users",
    "groups",
    "memberships",
    "login_failures",
    "audit_events",
    "sessions",
    "assertion_keys",
}


def tables(url: str) -> set[str]:
    async def go() -> set[str]:
        db = Database(url)
        try:
            async with db.connect() as conn:
                names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        finally:
            await db.dispose()
        return set(names) - {"alembic_version"}

    return asyncio.run(go())


def test_the_admin_branch_matches_the_tables(db_url: str) -> None:
    asyncio.run(upgrade(db_url, "admin"))
    assert tables(db_url) == ADMIN_TABLES

    def compare(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, AdminBase.metadata))

    async def go() -> list[object]:
        db = Database(db_url)
        try:
            async with db.connect() as conn:
                return await conn.run_sync(compare)
        finally:
            await db.dispose()

    assert asyncio.run(go()) == []


def test_all_leaves_the_admin_tables_out_and_both_live_side_by_side(db_url: str) -> None:
    asyncio.run(upgrade(db_url, "all"))
    assert tables(db_url) == OTHER_TABLES
    asyncio.run(upgrade(db_url, "admin"))
    assert tables(db_url) == OTHER_TABLES | ADMIN_TABLES
    asyncio.run(upgrade(db_url, "all"))
    asyncio.run(upgrade(db_url, "admin"))  # no-ops now
    assert tables(db_url) == OTHER_TABLES | ADMIN_TABLES


def test_an_installation_keeps_the_admin_tables_in_the_user_db(tmp_path: Path) -> None:
    urls = DatabaseURLs(
        f"sqlite+aiosqlite:///{tmp_path / 'users.db'}",
        f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}",
        f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}",
    )
    asyncio.run(upgrade_installation(urls, "admin"))
    assert tables(urls.user_db) == ADMIN_TABLES
    assert tables(urls.session_db) == set()

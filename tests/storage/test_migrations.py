"""Migrations create exactly the modelled tables, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect, select, text
from sqlalchemy.engine import Connection

from gatehouse.storage.engine import Database
from gatehouse.storage.home import DatabaseURLs
from gatehouse.storage.migrate import upgrade, upgrade_installation
from gatehouse.storage.models import LoginFailure, Session, SessionBase, User, UserBase

USER_TABLES = {"users", "groups", "memberships", "login_failures", "audit_events"}
SESSION_TABLES = {"sessions", "assertion_keys"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    return str(request.getfixturevalue("postgres_url"))


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


def diff(url: str, metadata: MetaData) -> list[object]:
    def compare(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async def go() -> list[object]:
        db = Database(url)
        try:
            async with db.connect() as conn:
                return await conn.run_sync(compare)
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_all_creates_every_table(db_url: str) -> None:
    asyncio.run(upgrade(db_url, "all"))
    assert tables(db_url) == USER_TABLES | SESSION_TABLES


def test_migrations_match_the_models(db_url: str) -> None:
    asyncio.run(upgrade(db_url, "all"))
    combined = MetaData()
    for table in [*UserBase.metadata.tables.values(), *SessionBase.metadata.tables.values()]:
        table.to_metadata(combined)
    assert diff(db_url, combined) == []


def test_each_database_alone(db_url: str) -> None:
    asyncio.run(upgrade(db_url, "session"))
    assert tables(db_url) == SESSION_TABLES
    asyncio.run(upgrade(db_url, "user"))
    assert tables(db_url) == USER_TABLES | SESSION_TABLES
    asyncio.run(upgrade(db_url, "all"))  # a no-op now
    assert tables(db_url) == USER_TABLES | SESSION_TABLES


def test_separate_urls_get_their_own_tables(tmp_path: Path) -> None:
    urls = DatabaseURLs(
        f"sqlite+aiosqlite:///{tmp_path / 'users.db'}",
        f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}",
        f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}",
    )
    asyncio.run(upgrade_installation(urls))
    assert tables(urls.user_db) == USER_TABLES
    assert tables(urls.session_db) == SESSION_TABLES


def test_timestamps_round_trip_as_aware_utc(db_url: str) -> None:
    asyncio.run(upgrade(db_url, "all"))
    local = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))

    async def go() -> tuple[datetime, datetime, list[str]]:
        db = Database(db_url)
        try:
            async with db.session() as session:
                session.add(
                    LoginFailure(
                        key="user:x", count=1, first_at=local, expires_at=local, attempt="a"
                    )
                )
                session.add(
                    Session(
                        id_hash="h" * 32,
                        username="x",
                        groups=["a", "b"],
                        methods=["password"],
                        idle_expires_at=local,
                        absolute_expires_at=local,
                    )
                )
            async with db.session() as session:
                row = (await session.execute(select(LoginFailure))).scalar_one()
                sess = (await session.execute(select(Session))).scalar_one()
                return row.first_at, sess.created_at, sess.groups
        finally:
            await db.dispose()

    first_at, created_at, groups = asyncio.run(go())
    assert first_at == local
    assert first_at.tzinfo == UTC
    assert first_at.hour == 5
    assert created_at.tzinfo == UTC
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)
    assert groups == ["a", "b"]


def test_naive_timestamps_are_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    asyncio.run(upgrade(url, "user"))

    async def go() -> None:
        db = Database(url)
        try:
            async with db.session() as session:
                session.add(LoginFailure(key="user:x", count=1, first_at=datetime(2030, 1, 1)))
        finally:
            await db.dispose()

    with pytest.raises(Exception, match="naive datetime"):
        asyncio.run(go())


def test_memberships_cascade_when_a_user_is_deleted(db_url: str) -> None:
    asyncio.run(upgrade(db_url, "user"))

    async def go() -> int:
        db = Database(db_url)
        try:
            async with db.session() as session:
                session.add(User(username="ann", password_hash=None))
                await session.flush()
                await session.execute(text("INSERT INTO groups (name) VALUES ('ops')"))
                await session.execute(
                    text(
                        "INSERT INTO memberships (user_id, group_id)"
                        " SELECT u.id, g.id FROM users u, groups g"
                    )
                )
            async with db.connect() as conn:
                await conn.execute(text("DELETE FROM users"))
            async with db.connect() as conn:
                return int(
                    (await conn.execute(text("SELECT count(*) FROM memberships"))).scalar_one()
                )
        finally:
            await db.dispose()

    assert asyncio.run(go()) == 0


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    async def go() -> tuple[object, ...]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
        try:
            async with db.connect() as conn:
                values = []
                for name in ("journal_mode", "busy_timeout", "foreign_keys"):
                    values.append((await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one())
                return tuple(values)
        finally:
            await db.dispose()

    assert asyncio.run(go()) == ("wal", 5000, 1)


def test_concurrent_starts_migrate_once(tmp_path: Path) -> None:
    """Several services starting together on one SQLite file must not trip over each other."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"
    code = (
        "import asyncio, sys; from gatehouse.storage.migrate import upgrade; "
        "asyncio.run(upgrade(sys.argv[1], 'all'))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE)
        for _ in range(5)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 5, errors
    assert tables(url) == USER_TABLES | SESSION_TABLES


def test_concurrent_starts_on_postgres(postgres_url: str) -> None:
    async def go() -> None:
        await asyncio.gather(*(upgrade(postgres_url, "all") for _ in range(4)))

    asyncio.run(go())
    assert tables(postgres_url) == USER_TABLES | SESSION_TABLES

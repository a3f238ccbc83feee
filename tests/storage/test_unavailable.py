"""Driver errors that mean "cannot serve now" become DatabaseUnavailable at the boundary."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from gatehouse.errors import ConfigError
from gatehouse.storage.engine import Database, parse_url, unavailable_reason, warm_when_ready
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import upgrade
from tests.support.postgres import PostgresCluster
from tests.support.processes import free_port


async def ping(url: str) -> None:
    db = Database(url)
    try:
        await db.ping()
    finally:
        await db.dispose()


def test_connection_refused() -> None:
    url = f"postgresql+asyncpg://gatehouse@127.0.0.1:{free_port()}/x"
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        asyncio.run(ping(url))


def test_migrations_on_an_unreachable_server() -> None:
    url = f"postgresql+asyncpg://gatehouse@127.0.0.1:{free_port()}/x"
    with pytest.raises(DatabaseUnavailable):
        asyncio.run(upgrade(url, "all"))


def test_sqlite_file_that_cannot_be_opened(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'g.db'}"
    with pytest.raises(DatabaseUnavailable, match="unable to open"):
        asyncio.run(ping(url))


def test_missing_database(postgres_cluster: PostgresCluster) -> None:
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        asyncio.run(ping(postgres_cluster.url("no_such_db")))


def test_other_errors_are_not_hidden(postgres_url: str) -> None:
    async def go() -> None:
        db = Database(postgres_url)
        try:
            async with db.connect() as conn:
                await conn.execute(text("SELECT * FROM no_such_table"))
        finally:
            await db.dispose()

    with pytest.raises(Exception, match="no_such_table") as info:
        asyncio.run(go())
    assert not isinstance(info.value, DatabaseUnavailable)


def test_stopped_server_then_recovery(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    """A stopped server answers DatabaseUnavailable; once back, the same engine recovers."""

    async def go() -> None:
        db = Database(postgres_url)
        try:
            await db.ping()
            postgres_cluster.stop()
            try:
                with pytest.raises(DatabaseUnavailable):
                    await db.ping()
            finally:
                postgres_cluster.start()
            await db.ping()
        finally:
            await db.dispose()

    asyncio.run(go())


def test_read_only_standby_is_unavailable(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    """Writing to a server that became read-only (a standby during a switch-over)."""
    asyncio.run(upgrade(postgres_url, "user"))
    name = postgres_url.rsplit("/", 1)[1]
    postgres_cluster.sql(f"ALTER DATABASE {name} SET default_transaction_read_only = on")

    async def go() -> None:
        db = Database(postgres_url)
        try:
            async with db.connect() as conn:
                await conn.execute(text("INSERT INTO groups (name) VALUES ('x')"))
        finally:
            await db.dispose()

    with pytest.raises(DatabaseUnavailable, match="read-only"):
        asyncio.run(go())


def test_multi_host_url_skips_a_dead_host(
    postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    name = postgres_url.rsplit("/", 1)[1]
    dead = free_port()
    url = (
        f"postgresql+asyncpg://gatehouse@/{name}"
        f"?host=127.0.0.1:{dead}&host=127.0.0.1:{postgres_cluster.port}"
    )
    asyncio.run(ping(url))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x/y", "unsupported database URL scheme 'mysql'"),
        ("sqlite:///x.db", "unsupported database URL scheme 'sqlite'"),
        ("nonsense", "not a database URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_url(url)


def test_a_connection_closed_while_asyncpg_sets_it_up_is_unavailability() -> None:
    """asyncpg raises its own InterfaceError, unwrapped by SQLAlchemy, when the server goes
    away while SQLAlchemy's on-connect hook sets the JSON codec up (seen in CI: a PostgreSQL
    stopped under a pool being warmed)."""
    import asyncpg

    closed = asyncpg.exceptions.InterfaceError("connection is closed")
    assert unavailable_reason(closed) == "connection failed: connection is closed"
    misuse = asyncpg.exceptions.InterfaceError("cannot perform operation: another operation")
    assert unavailable_reason(misuse) is None  # a bug, not a server away: not hidden


def test_a_pool_that_cannot_be_warmed_does_not_fail_its_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        async def warm(self) -> None:
            raise RuntimeError("driver trouble")

    async def go() -> None:
        ready = asyncio.Event()
        ready.set()
        await warm_when_ready(ready, Broken())  # type: ignore[arg-type]

    asyncio.run(go())
    assert "warming the pool failed" in caplog.text

"""Multi-host PostgreSQL URLs: connections follow the writable primary across a promotion.

The failover tests kill the primary (SIGKILL, every backend at once), promote the synchronous
standby and keep using the same :class:`Database`: while the database switches, callers see
:class:`DatabaseUnavailable` and nothing else, service comes back without a restart, and every
write acknowledged before the kill is on the new primary.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from gatehouse.errors import ConfigError
from gatehouse.policy.sessions import Identity, SessionStore, Timeouts
from gatehouse.storage.engine import Database, asyncpg_connect_args, create_engine, parse_url
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.postgres_ha.pair import Pair
from tests.support.postgres import postgres_pair

__all__ = ["postgres_pair"]

#: The goal: service back within this long after the standby is promoted.
RECOVERY_BUDGET = 15.0
INSERT = text("INSERT INTO acked (n) VALUES (:n)")


# -- URL forms (no server needed) -------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "host=127.0.0.1,127.0.0.1&port=5001,5002",
        "host=127.0.0.1:5001&host=127.0.0.1:5002",
    ],
)
def test_multi_host_forms_reach_both_servers(query: str) -> None:
    url = f"postgresql+asyncpg://gatehouse@/app?{query}"
    args = asyncpg_connect_args(url)
    assert args["host"] == ["127.0.0.1", "127.0.0.1"]
    assert args["port"] == [5001, 5002]
    assert args["target_session_attrs"] == "read-write"
    engine = create_engine(url)
    _, engine_args = engine.dialect.create_connect_args(engine.url)
    assert engine_args["host"] == args["host"]
    assert engine_args["port"] == args["port"]


def test_target_session_attrs_from_the_url_wins() -> None:
    url = "postgresql+asyncpg://g@/app?host=h1,h2&port=1,2&target_session_attrs=primary"
    assert asyncpg_connect_args(url)["target_session_attrs"] == "primary"


def test_one_host_keeps_asyncpg_defaults() -> None:
    args = asyncpg_connect_args("postgresql+asyncpg://g@127.0.0.1:5432/app")
    assert (args["host"], args["port"]) == ("127.0.0.1", 5432)
    assert "target_session_attrs" not in args


def test_sqlite_has_no_asyncpg_arguments() -> None:
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        asyncpg_connect_args("sqlite+aiosqlite:///x.db")


@pytest.mark.parametrize(
    "query",
    ["host=h1:1,h2:2", "host=h1&host=h2", "host=h1:1&host=h2:2&port=1"],
)
def test_multi_host_urls_the_driver_cannot_use_are_config_errors(query: str) -> None:
    with pytest.raises(ConfigError, match=r"multiple host|multihost"):
        parse_url(f"postgresql+asyncpg://g@/app?{query}")


# -- failover with a real primary and synchronous standby ---------------------------------------


@pytest.mark.slow
def test_writes_go_to_the_primary_whatever_the_host_order(postgres_pair: Pair) -> None:
    primary, standby = postgres_pair.nodes
    primary.sql("CREATE DATABASE app")
    hosts = "host=127.0.0.1,127.0.0.1"
    standby_first = (
        f"postgresql+asyncpg://gatehouse@/app?{hosts}&port={standby.port},{primary.port}"
    )
    only_standby = f"postgresql+asyncpg://gatehouse@/app?{hosts}&port={standby.port},{standby.port}"

    async def asyncpg_port(url: str) -> int:
        import asyncpg

        conn = await asyncpg.connect(**asyncpg_connect_args(url))
        try:
            return int(await conn.fetchval("SELECT current_setting('port')"))
        finally:
            await conn.close()

    async def server_port(url: str) -> int:
        database = Database(url)
        try:
            async with database.connect() as conn:
                port = await conn.scalar(text("SELECT current_setting('port')::int"))
                await conn.execute(text("CREATE TABLE IF NOT EXISTS t (n int)"))
            assert isinstance(port, int)
            return port
        finally:
            await database.dispose()

    assert asyncio.run(server_port(standby_first)) == primary.port
    assert asyncio.run(asyncpg_port(standby_first)) == primary.port
    with pytest.raises(DatabaseUnavailable, match="no server takes writes"):
        asyncio.run(server_port(only_standby))


async def until_available(
    attempt: Callable[[], Awaitable[object]], errors: list[BaseException], budget: float
) -> float:
    """Retry ``attempt`` until it succeeds; returns how long that took."""
    start = time.monotonic()
    while True:
        try:
            await attempt()
            return time.monotonic() - start
        except Exception as error:  # every kind is recorded; the tests check which
            errors.append(error)
        if time.monotonic() - start > budget:
            pytest.fail(f"still failing after {budget:.0f} s: {errors[-1]!r}")
        await asyncio.sleep(0.05)


def only_unavailable(errors: list[BaseException]) -> None:
    others = [e for e in errors if not isinstance(e, DatabaseUnavailable)]
    assert not others, f"errors other than DatabaseUnavailable: {others[:5]!r}"


@pytest.mark.slow
def test_writes_follow_the_promoted_standby(postgres_pair: Pair) -> None:
    """Four writers and one open transaction across kill -9 of the primary and promotion."""
    primary, standby = postgres_pair.nodes
    primary.sql("CREATE DATABASE app")
    database = Database(postgres_pair.url("app"))
    acknowledged: set[int] = set()
    errors: list[BaseException] = []
    stop = asyncio.Event()
    successes_after_promotion = 0
    promoted_at: float | None = None
    first_write_after_promotion: float | None = None
    promotion = 0.0

    async def write(n: int) -> None:
        nonlocal successes_after_promotion, first_write_after_promotion
        async with database.connect() as conn:
            await conn.execute(INSERT, {"n": n})
        acknowledged.add(n)  # the commit returned: the standby has it (synchronous)
        if promoted_at is not None:
            successes_after_promotion += 1
            if first_write_after_promotion is None:
                first_write_after_promotion = time.monotonic() - promoted_at

    async def writer(first: int) -> None:
        n = first
        while not stop.is_set():
            try:
                await write(n)
            except Exception as error:
                errors.append(error)
                await asyncio.sleep(0.02)
            n += 1

    async def in_flight_when_killed() -> None:
        async with database.connect() as conn:
            await conn.execute(INSERT, {"n": -1})
            await asyncio.to_thread(primary.kill)
            await conn.execute(INSERT, {"n": -2})

    async def go() -> None:
        nonlocal promoted_at, promotion
        async with database.connect() as conn:
            await conn.execute(text("CREATE TABLE acked (n integer PRIMARY KEY)"))
        writers = [asyncio.create_task(writer(w * 1_000_000)) for w in range(4)]
        try:
            while len(acknowledged) < 200:
                await asyncio.sleep(0.01)
            # A transaction in flight when the primary dies fails as unavailable.
            with pytest.raises(DatabaseUnavailable):
                await in_flight_when_killed()
            before_kill = set(acknowledged)
            await asyncio.sleep(1.0)  # no primary at all for a while
            assert acknowledged == before_kill  # no primary, no acknowledged write
            promoting = time.monotonic()
            await asyncio.to_thread(standby.promote)
            promoted_at = time.monotonic()
            promotion = promoted_at - promoting
            while successes_after_promotion < 50:
                assert time.monotonic() - promoted_at < RECOVERY_BUDGET, errors[-1:]
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.gather(*writers)
        async with database.connect() as conn:
            stored = set((await conn.execute(text("SELECT n FROM acked"))).scalars())
        missing = acknowledged - stored
        assert not missing, f"{len(missing)} acknowledged writes lost"
        assert -1 not in stored
        await database.dispose()

    asyncio.run(go())
    assert errors, "the switch went unnoticed: the test did not test anything"
    only_unavailable(errors)
    assert first_write_after_promotion is not None
    reasons = Counter(str(e)[:90] for e in errors)
    print(
        f"\npg_ctl promote took {promotion * 1000:.0f} ms, first write "
        f"{first_write_after_promotion * 1000:.0f} ms later; {len(acknowledged)} writes "
        f"acknowledged, {len(errors)} DatabaseUnavailable: {dict(reasons)}"
    )


@pytest.mark.slow
def test_an_idle_pool_needs_no_failed_request_after_promotion(postgres_pair: Pair) -> None:
    """Pooled connections to the dead primary are replaced on checkout, not handed out."""
    primary, standby = postgres_pair.nodes
    database = Database(postgres_pair.url("postgres"))

    async def hold(ready: asyncio.Barrier) -> None:
        async with database.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await ready.wait()  # all at once: the pool keeps three connections

    async def go() -> None:
        ready = asyncio.Barrier(3)
        await asyncio.gather(*(hold(ready) for _ in range(3)))
        assert database.engine.pool.checkedin() == 3  # type: ignore[attr-defined]
        await asyncio.to_thread(primary.kill)
        await asyncio.to_thread(standby.promote)
        for _ in range(5):  # would fail with "connection lost" on a stale connection
            async with database.connect() as conn:
                port = await conn.scalar(text("SELECT current_setting('port')::int"))
            assert port == standby.port
        await database.dispose()

    asyncio.run(go())


@pytest.mark.slow
def test_sessions_survive_the_promotion(postgres_pair: Pair) -> None:
    """Sessions created before kill -9 of the primary are found after promotion, same store."""
    primary, standby = postgres_pair.nodes
    primary.sql("CREATE DATABASE sessions")
    url = postgres_pair.url("sessions")
    now = datetime.now(UTC)
    errors: list[BaseException] = []

    async def go() -> None:
        await upgrade(url, "session")
        database = Database(url)
        store = SessionStore(database, Timeouts(idle=3600, absolute=86400))
        created = [await store.create(Identity(f"user{i}"), ["password"], now) for i in range(20)]
        await asyncio.to_thread(primary.kill)
        with pytest.raises(DatabaseUnavailable):
            await store.lookup(created[0][0], now, cached=False)
        await asyncio.to_thread(standby.promote)
        later = now + timedelta(seconds=60)  # late enough to touch (write) on lookup

        async def first_lookup() -> None:
            assert await store.lookup(created[0][0], later, cached=False) is not None

        await until_available(first_lookup, errors, RECOVERY_BUDGET)
        for session_id, record in created:
            found = await store.lookup(session_id, later, cached=False)
            assert found is not None
            assert (found.username, found.id_hash) == (record.username, record.id_hash)
        new_id, new = await store.create(Identity("after"), ["password"], later)
        assert await store.lookup(new_id, later, cached=False) == new
        await database.dispose()

    asyncio.run(go())
    only_unavailable(errors)

"""The OATH DB's code tables on SQLite and PostgreSQL: single use in one conditional UPDATE
(two engines racing: exactly one wins; the same attempt again is ok), bounded attempts, the
resend throttle counted under a lock (concurrent sends never pass it), retries of one send,
and purging."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import select

from gatehouse.authentication.code_store import CodeStore, Created, NewCode
from gatehouse.authentication.codes import Throttle
from gatehouse.authentication.config import CodeSettings
from gatehouse.oath.models import OathCode
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]

T = TypeVar("T")
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
UNIX = NOW.timestamp()
SETTINGS = CodeSettings(resend_interval=30, resend_max=5, resend_window=900, max_attempts=3)


@pytest.fixture(params=["sqlite", "postgresql"])
def oath_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    asyncio.run(upgrade(url, "oath"))
    return url


def with_stores(url: str, body: Callable[[CodeStore, CodeStore], Awaitable[T]]) -> T:
    """Two stores on two engines (two pools), like two Authentication services."""

    async def go() -> T:
        one, two = Database(url), Database(url)
        try:
            return await body(CodeStore(one.engine), CodeStore(two.engine))
        finally:
            await one.dispose()
            await two.dispose()

    return asyncio.run(go())


def new(key: str, user: str = "alice", at: datetime = NOW, hash_: bytes = b"h" * 32) -> NewCode:
    return NewCode(
        username=user,
        method="email_otp",
        send_key=key,
        key_id="k1",
        code_hash=hash_,
        sealed=b"sealed",
        digits=6,
        recipient_hint="a***@example.org",
        created_at=at,
        expires_at=at + timedelta(minutes=5),
    )


async def made(store: CodeStore, key: str, at: datetime = NOW) -> Created:
    outcome = await store.create(new(key, at=at), SETTINGS, at.timestamp())
    assert isinstance(outcome, Created), outcome
    return outcome


def test_a_send_is_counted_once_and_a_retry_finds_its_code(oath_db: str) -> None:
    async def go(store: CodeStore, _two: CodeStore) -> None:
        first = await made(store, "send-key-0000000001")
        assert first.new
        assert first.row.sealed == b"sealed"
        again = await store.create(new("send-key-0000000001"), SETTINGS, UNIX + 1)
        assert isinstance(again, Created)
        assert (again.new, again.row.id) == (False, first.row.id)
        throttled = await store.create(new("send-key-0000000002"), SETTINGS, UNIX + 1)
        assert throttled == Throttle(False, (UNIX,), 29.0)
        assert await store.accepted(first.row.id, "message-id-000000001")
        assert not await store.accepted(first.row.id, "message-id-000000002")
        row = await store.by_message("alice", "message-id-000000001")
        assert row is not None
        assert row.sealed is None
        assert await store.by_message("bob", "message-id-000000001") is None

    with_stores(oath_db, go)


def test_concurrent_sends_never_pass_the_throttle(oath_db: str) -> None:
    async def go(one: CodeStore, two: CodeStore) -> None:
        settings = CodeSettings(resend_interval=0, resend_max=3, resend_window=900)
        outcomes = await asyncio.gather(
            *(
                (one if n % 2 else two).create(new(f"send-key-concurrent-{n:02d}"), settings, UNIX)
                for n in range(12)
            )
        )
        assert sum(isinstance(o, Created) for o in outcomes) == 3
        assert all(isinstance(o, Created | Throttle) for o in outcomes)
        # Another user is throttled apart.
        assert isinstance(
            await one.create(new("send-key-bob-0000001", "bob"), settings, UNIX), Created
        )

    with_stores(oath_db, go)


def test_a_code_is_consumed_once_by_two_engines_racing(oath_db: str) -> None:
    async def go(one: CodeStore, two: CodeStore) -> None:
        for n in range(20):
            row = (await made(one, f"send-key-race-{n:06d}", at=NOW + timedelta(hours=n))).row
            now = NOW + timedelta(hours=n, minutes=1)
            won = await asyncio.gather(
                one.consume(row.id, f"attempt-one-{n:06d}", now, 3),
                two.consume(row.id, f"attempt-two-{n:06d}", now, 3),
            )
            assert sorted(won) == [False, True]
            winner = f"attempt-one-{n:06d}" if won[0] else f"attempt-two-{n:06d}"
            # The winning submission retried (its service died before answering): ok again.
            assert await two.consume(row.id, winner, now + timedelta(seconds=5), 3)
            assert not await one.consume(row.id, "attempt-another-01", now, 3)

    with_stores(oath_db, go)


def test_expired_and_dead_codes_are_not_consumed(oath_db: str) -> None:
    async def go(store: CodeStore, _two: CodeStore) -> None:
        row = (await made(store, "send-key-expiry-0001")).row
        assert not await store.consume(row.id, "attempt-late-00001", row.expires_at, 3)
        assert await store.fail("alice", "email_otp", NOW, 3) == [1]
        assert await store.fail("alice", "email_otp", NOW, 3) == [2]
        assert await store.fail("alice", "email_otp", NOW, 3) == [3]
        assert await store.fail("alice", "email_otp", NOW, 3) == []  # dead: no longer counted
        assert not await store.consume(row.id, "attempt-dead-00001", NOW, 3)
        assert await store.fail("alice", "sms_otp", NOW, 3) == []

    with_stores(oath_db, go)


def test_failures_count_on_every_live_code_of_the_user(oath_db: str) -> None:
    async def go(store: CodeStore, _two: CodeStore) -> None:
        settings = CodeSettings(resend_interval=0, resend_max=5)
        for n in range(3):
            await store.create(new(f"send-key-many-{n:05d}"), settings, UNIX + n)
        await store.create(new("send-key-bob-many-01", "bob"), settings, UNIX)
        assert sorted(await store.fail("alice", "email_otp", NOW, 3)) == [1, 1, 1]
        assert [r.failures for r in await store.candidates("bob", "email_otp")] == [0]

    with_stores(oath_db, go)


def test_purge_erases_sealed_copies_and_deletes_old_rows(oath_db: str) -> None:
    async def go(store: CodeStore, _two: CodeStore) -> None:
        row = (await made(store, "send-key-purge-00001")).row
        assert await store.purge(row.expires_at) == 0
        async with store.engine.connect() as conn:
            sealed = await conn.scalar(select(OathCode.sealed).where(OathCode.id == row.id))
        assert sealed is None
        assert await store.purge(row.expires_at + timedelta(hours=1)) == 1
        assert await store.candidates("alice", "email_otp") == []

    with_stores(oath_db, go)


def test_latest_is_the_newest_usable_code_with_a_message(oath_db: str) -> None:
    async def go(store: CodeStore, _two: CodeStore) -> None:
        assert await store.latest("alice", "email_otp", NOW, 3) is None
        row = (await made(store, "send-key-latest-0001")).row
        assert await store.latest("alice", "email_otp", NOW, 3) is None  # not accepted yet
        await store.accepted(row.id, "message-id-latest-01")
        found = await store.latest("alice", "email_otp", NOW, 3)
        assert found is not None
        assert found.message_id == "message-id-latest-01"
        assert await store.latest("alice", "sms_otp", NOW, 3) is None
        assert await store.latest("alice", "email_otp", row.expires_at, 3) is None
        for _ in range(3):
            await store.fail("alice", "email_otp", NOW, 3)
        assert await store.latest("alice", "email_otp", NOW, 3) is None  # dead

    with_stores(oath_db, go)

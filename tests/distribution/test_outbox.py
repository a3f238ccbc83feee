"""The outbox store on SQLite: one row per key, leases, the marks that erase the body, expiry
taken once, retries only before expiry, and concurrent submissions sharing a commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gatehouse.distribution.bodies import Body, BodyKeys, KeyringError
from gatehouse.distribution.outbox import NewMessage, Outbox, new_message_id
from gatehouse.storage.engine import create_engine
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.types import utcnow

T = TypeVar("T")
NOW = utcnow()


def run(tmp_path: Path, work: Callable[[Outbox], Awaitable[T]]) -> T:
    url = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"

    async def go() -> T:
        await upgrade(url, "outbox")
        engine = create_engine(url)
        try:
            return await work(Outbox(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def message(key: str, ttl: float = 60, **changes: Any) -> NewMessage:
    values: dict[str, Any] = {
        "id": new_message_id(),
        "key": key.ljust(16, "k"),
        "purpose": "code",
        "username": "jane",
        "email": "jane@example.org",
        "phone": None,
        "body_key_id": "k1",
        "body_ciphertext": b"sealed" * 8,
        "channels": None,
        "created_at": NOW,
        "expires_at": NOW + timedelta(seconds=ttl),
    }
    values.update(changes)
    return NewMessage(**values)


def test_a_key_is_one_message_even_when_submitted_at_once(tmp_path: Path) -> None:
    async def work(outbox: Outbox) -> None:
        first = message("a")
        twice = [message("a"), message("b"), message("a")]
        results = await asyncio.gather(outbox.submit(first), *(outbox.submit(m) for m in twice))
        rows = [row for row, _ in results]
        new = [is_new for _, is_new in results]
        assert new == [True, False, True, False]
        assert rows[1].id == rows[3].id == first.id
        assert rows[2].id == twice[1].id
        assert len(await outbox.list_messages()) == 2

    run(tmp_path, work)


def test_leases_marks_and_erasure(tmp_path: Path) -> None:
    async def work(outbox: Outbox) -> None:
        for key in ("a", "b", "c"):
            await outbox.submit(message(key))
        leased, _ = await outbox.submit(message("d"), ("svc-a", NOW + timedelta(seconds=30)))
        assert leased.lease_owner == "svc-a"
        mine = await outbox.claim("svc-a", 2, 30, NOW)
        theirs = await outbox.claim("svc-b", 5, 30, NOW)
        assert len(mine) == 2
        assert len(theirs) == 1  # "d" is leased, two are svc-a's
        assert not {m.id for m in mine} & {m.id for m in theirs}
        # A lease that ran out makes the message due for anyone.
        later = NOW + timedelta(seconds=31)
        again = await outbox.claim("svc-b", 5, 30, later)
        assert {m.id for m in again} == {m.id for m in [*mine, *theirs, leased]}
        # svc-a lost its lease: it cannot fail or give back the message, but what it sent
        # was sent.
        assert not await outbox.mark_failed(mine[0].id, "svc-a", 1, "x", later)
        assert not await outbox.release(mine[0].id, "svc-a")
        assert await outbox.mark_sent(mine[0].id, "mail", 1, later)
        assert not await outbox.mark_sent(mine[0].id, "mail", 1, later)  # once only
        sent = await outbox.get(mine[0].id)
        assert sent is not None
        assert (sent.status, sent.sent_channel, sent.body_ciphertext) == ("sent", "mail", None)
        assert await outbox.mark_failed(theirs[0].id, "svc-b", 2, "all failed", later)
        failed = await outbox.get(theirs[0].id)
        assert failed is not None
        assert (failed.status, failed.attempts, failed.rounds) == ("failed", 2, 1)
        assert failed.body_ciphertext is not None
        assert await outbox.counts() == {"accepted": 2, "failed": 1, "sent": 1}

    run(tmp_path, work)


def test_expiry_is_taken_once_and_retry_only_before_it(tmp_path: Path) -> None:
    async def work(outbox: Outbox) -> None:
        short, _ = await outbox.submit(message("short", ttl=5))
        held, _ = await outbox.submit(message("held", ttl=5))
        long, _ = await outbox.submit(message("long", ttl=600))
        await outbox.claim("svc-a", 1, 60, NOW + timedelta(seconds=1))  # takes "short"
        at = NOW + timedelta(seconds=6)
        # A sweep takes only messages nobody holds; the holder takes its own.
        swept = await outbox.expire(at)
        assert [m.id for m in swept] == [held.id]
        assert await outbox.expire(at) == []
        own = await outbox.expire(at, owner="svc-a", message_id=short.id)
        assert [m.id for m in own] == [short.id]
        for gone in (short, held):
            row = await outbox.get(gone.id)
            assert row is not None
            assert (row.status, row.body_ciphertext) == ("expired", None)
        assert await outbox.retry(held.id, at) is None
        await outbox.mark_failed(long.id, "nobody", 1, "x", at)  # not leased: refused
        retried = await outbox.retry(long.id, at)
        assert retried is not None
        assert retried.next_attempt_at == at
        assert await outbox.retry("no-such-message-id", at) is None

    run(tmp_path, work)


def test_bodies_open_only_for_their_message(tmp_path: Path) -> None:
    keys = BodyKeys.load_or_create(tmp_path / "outbox.key")
    assert (tmp_path / "outbox.key").stat().st_mode & 0o777 == 0o600
    key_id, blob = keys.seal("message-1", Body("Your code", "Code 123456"))
    assert b"123456" not in blob
    assert keys.open("message-1", key_id, blob) == Body("Your code", "Code 123456")
    again = BodyKeys.load_or_create(tmp_path / "outbox.key")  # the same key from the file
    assert again.open("message-1", key_id, blob).text == "Code 123456"
    with pytest.raises(KeyringError) as caught:
        keys.open("message-2", key_id, blob)
    assert "123456" not in str(caught.value)


def test_a_due_time_is_reported(tmp_path: Path) -> None:
    async def work(outbox: Outbox) -> datetime | None:
        assert await outbox.next_due() is None
        await outbox.submit(message("a"))
        return await outbox.next_due()

    assert run(tmp_path, work) == NOW


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    BodyKeys.load_or_create(tmp_path / "outbox.key")
    (tmp_path / "outbox.key").chmod(0o644)
    with pytest.raises(KeyringError, match=r"outbox key file .* readable by others"):
        BodyKeys.load_or_create(tmp_path / "outbox.key")


def test_db_upgrade_which_outbox(tmp_path: Path) -> None:
    import sqlite3
    import subprocess

    from tests.support.processes import GATEHOUSE

    home = tmp_path / "home"
    done = subprocess.run(
        [*GATEHOUSE, "db", "upgrade", "--which", "outbox", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (
        done.stdout
        == f"databases up to date (outbox DB: sqlite+aiosqlite:///{home / 'outbox.db'})\n"
    )
    with sqlite3.connect(home / "outbox.db") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "outbox_messages" in tables
    assert not (home / "gatehouse.db").exists()  # only the outbox DB was made


def test_old_sent_and_expired_messages_are_purged(tmp_path: Path) -> None:
    async def work(outbox: Outbox) -> None:
        sent, _ = await outbox.submit(message("sent"))
        expired, _ = await outbox.submit(message("expired", ttl=1))
        pending, _ = await outbox.submit(message("pending", ttl=86400))
        await outbox.mark_sent(sent.id, "mail", 1, NOW)
        await outbox.expire(NOW + timedelta(seconds=2))
        assert await outbox.purge(NOW) == 0  # none older than the cut yet
        assert await outbox.purge(NOW + timedelta(days=8)) == 2
        assert [m.id for m in await outbox.list_messages()] == [pending.id]
        assert expired.id != pending.id

    run(tmp_path, work)

"""The session store on SQLite and PostgreSQL: ids, hashes, expiry, touch, revocation."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import delete, select

from gatehouse.policy.sessions import (
    Identity,
    SessionRecord,
    SessionStore,
    Timeouts,
    hash_session_id,
    new_session_id,
)
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.models import Session as SessionRow
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]

T = TypeVar("T")
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ALICE = Identity("alice", "Alice Example", "alice@example.com", ("staff", "admins"))


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Harness:
    """A store on a migrated database, driven from synchronous tests."""

    def __init__(self, url: str, timeouts: Timeouts) -> None:
        self.loop = asyncio.new_event_loop()
        self.url = url
        self.ended: list[tuple[list[str], str]] = []
        self.run(upgrade(url, "session"))
        self.db = Database(url)
        self.store = SessionStore(self.db, timeouts, self._on_end)

    async def _on_end(self, records: Sequence[SessionRecord], reason: str) -> None:
        self.ended.append(([r.id_hash for r in records], reason))

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def create(self, identity: Identity = ALICE, at: datetime = T0) -> tuple[str, SessionRecord]:
        return self.run(self.store.create(identity, ["password"], at, client_ip="192.0.2.7"))

    def lookup(self, session_id: str | None, at: datetime) -> SessionRecord | None:
        return self.run(self.store.lookup(session_id, at))

    def rows(self) -> list[SessionRow]:
        async def go() -> list[SessionRow]:
            async with self.db.session() as db:
                return list((await db.scalars(select(SessionRow))).all())

        return self.run(go())

    def close(self) -> None:
        self.run(self.db.dispose())
        self.loop.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make(db_url: str) -> Iterator[Callable[[float, float], Harness]]:
    made: list[Harness] = []

    def factory(idle: float = 60, absolute: float = 600) -> Harness:
        harness = Harness(db_url, Timeouts(idle, absolute))
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.close()


def test_ids_are_random_and_only_their_hash_is_stored(
    make: Callable[[float, float], Harness],
) -> None:
    h = make(60, 600)
    sid, record = h.create()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", sid)  # 32 random bytes
    assert record.id_hash == hash_session_id(sid)
    assert re.fullmatch(r"[0-9a-f]{32}", record.id_hash)
    (row,) = h.rows()
    stored = " ".join(str(getattr(row, c)) for c in SessionRow.__table__.columns.keys())  # noqa: SIM118
    assert sid not in stored
    assert row.username == "alice"
    assert row.groups == ["staff", "admins"]
    assert row.methods == ["password"]
    assert row.client_ip == "192.0.2.7"
    assert len({new_session_id() for _ in range(1000)}) == 1000


def test_lookup_finds_live_sessions_only(make: Callable[[float, float], Harness]) -> None:
    h = make(60, 600)
    sid, _ = h.create()
    found = h.lookup(sid, later(1))
    assert found is not None
    assert (found.username, found.display_name, found.email) == (
        "alice",
        "Alice Example",
        "alice@example.com",
    )
    assert found.groups == ("staff", "admins")
    for junk in (None, "", "x", sid[:-1], sid + "A", new_session_id(), sid.upper() + "!"):
        assert h.lookup(junk, later(1)) is None


def test_idle_expiry_moves_with_use_and_ends_the_session(
    make: Callable[[float, float], Harness],
) -> None:
    h = make(2, 600)
    sid, record = h.create()
    assert record.idle_expires_at == later(2)
    touched = h.lookup(sid, later(1.5))
    assert touched is not None
    assert touched.idle_expires_at == later(3.5)
    assert h.rows()[0].idle_expires_at == later(3.5)  # written to the database
    assert h.lookup(sid, later(3.0)) is not None
    assert h.lookup(sid, later(5.1)) is None  # idle for more than 2 s
    assert h.rows() == []  # the expired session was deleted
    assert h.ended == [([record.id_hash], "expired")]


def test_absolute_expiry_wins_over_use(make: Callable[[float, float], Harness]) -> None:
    h = make(2, 5)
    sid, record = h.create()
    for t in (1.5, 3.0, 4.5):
        assert h.lookup(sid, later(t)) is not None
    last = h.lookup(sid, later(4.9))
    assert last is not None
    assert last.idle_expires_at == later(5)  # never past the absolute expiry
    assert h.lookup(sid, later(5.0)) is None
    assert h.ended == [([record.id_hash], "expired")]


def test_touch_is_throttled(make: Callable[[float, float], Harness]) -> None:
    h = make(3600, 86400)
    sid, _ = h.create()
    first = h.lookup(sid, later(1))
    assert first is not None
    assert first.last_seen_at == T0  # within the touch interval: no write
    assert h.rows()[0].last_seen_at == T0
    second = h.lookup(sid, later(6))
    assert second is not None
    assert second.last_seen_at == later(6)
    assert h.rows()[0].last_seen_at == later(6)
    assert h.rows()[0].idle_expires_at == later(3606)


def test_end_and_revoke(make: Callable[[float, float], Harness]) -> None:
    h = make(60, 600)
    a1, r1 = h.create()
    a2, r2 = h.create(at=later(1))
    b1, rb = h.create(Identity("bob"))
    listed = h.run(h.store.live(later(2), "alice"))
    assert [r.id_hash for r in listed] == [r1.id_hash, r2.id_hash]
    assert len(h.run(h.store.live(later(2)))) == 3

    ended = h.run(h.store.end(a1))
    assert ended is not None
    assert ended.id_hash == r1.id_hash
    assert h.lookup(a1, later(2)) is None
    assert h.run(h.store.end(a1)) is None  # already gone

    assert [r.id_hash for r in h.run(h.store.revoke_hashes([rb.id_hash, "nothex"]))] == [rb.id_hash]
    assert h.lookup(b1, later(2)) is None
    assert [r.id_hash for r in h.run(h.store.revoke_user("alice"))] == [r2.id_hash]
    assert h.lookup(a2, later(2)) is None
    assert h.run(h.store.revoke_user("alice")) == []
    assert h.ended == [
        ([r1.id_hash], "logout"),
        ([rb.id_hash], "revoked"),
        ([r2.id_hash], "revoked"),
    ]


def test_purge_removes_expired_sessions(make: Callable[[float, float], Harness]) -> None:
    h = make(10, 600)
    _, old = h.create()
    live_id, live = h.create(at=later(8))
    purged = h.run(h.store.purge_expired(later(11)))
    assert [r.id_hash for r in purged] == [old.id_hash]
    assert [r.id_hash for r in h.run(h.store.live(later(11)))] == [live.id_hash]
    assert h.lookup(live_id, later(12)) is not None
    assert h.ended == [([old.id_hash], "expired")]


def test_info_is_json_ready(make: Callable[[float, float], Harness]) -> None:
    h = make(60, 600)
    _, record = h.create()
    info = record.info()
    assert info["id_hash"] == record.id_hash
    assert info["created_at"] == "2030-01-01T12:00:00Z"
    assert info["expires_at"] == "2030-01-01T12:01:00Z"
    assert info["groups"] == ["staff", "admins"]


def _delete_rows_behind_the_store(h: Harness) -> None:
    """Delete every session row directly, as another instance would."""

    async def go() -> None:
        async with h.db.session() as db:
            await db.execute(delete(SessionRow))

    h.run(go())


def test_cache_answers_without_the_database_until_a_revocation_is_heard(
    make: Callable[[float, float], Harness],
) -> None:
    h = make(60, 600)
    h.store.cache_ttl = 30.0
    sid, record = h.create()
    assert h.lookup(sid, later(1)) is not None  # read and cached
    _delete_rows_behind_the_store(h)
    # Within the TTL the cached copy answers: no database round trip per decision ...
    assert h.lookup(sid, later(1)) is not None
    # ... until this instance hears of the revocation (local or through LISTEN/NOTIFY).
    h.store.forget([record.id_hash])
    assert h.lookup(sid, later(1)) is None


def test_cache_is_bypassed_while_revocations_may_be_missed(
    make: Callable[[float, float], Harness],
) -> None:
    h = make(60, 600)
    h.store.cache_ttl = 30.0
    sid, _ = h.create()
    assert h.lookup(sid, later(1)) is not None
    _delete_rows_behind_the_store(h)
    assert h.run(h.store.lookup(sid, later(1), cached=False)) is None


def test_cache_expires_and_never_outlives_the_session(
    make: Callable[[float, float], Harness],
) -> None:
    h = make(10, 600)
    h.store.cache_ttl = 0.05
    sid, _ = h.create()
    assert h.lookup(sid, later(1)) is not None
    _delete_rows_behind_the_store(h)
    time.sleep(0.1)
    assert h.lookup(sid, later(1)) is None, "the cached copy expired"
    h.store.cache_ttl = 30.0
    sid, _ = h.create()
    assert h.lookup(sid, later(1)) is not None
    assert h.lookup(sid, later(11)) is None, "idle-expired even though cached"


def test_logout_drops_the_cached_session(make: Callable[[float, float], Harness]) -> None:
    h = make(60, 600)
    h.store.cache_ttl = 30.0
    sid, _ = h.create()
    assert h.lookup(sid, later(1)) is not None
    h.run(h.store.end(sid))
    assert h.lookup(sid, later(1)) is None


def test_end_sessions_keeps_only_the_excepted_session(
    make: Callable[[float, float], Harness],
) -> None:
    h = make(60, 600)
    a1, r1 = h.create()
    a2, r2 = h.create(at=later(1))
    a3, r3 = h.create(at=later(2))
    b1, _ = h.create(Identity("bob"))
    assert h.lookup(a1, later(3)) is not None  # cached now: ending must drop it too
    ended = h.run(
        h.store.end_sessions("alice", reason="password_changed", except_session=r2.id_hash)
    )
    assert sorted(r.id_hash for r in ended) == sorted([r1.id_hash, r3.id_hash])
    assert h.lookup(a1, later(3)) is None
    assert h.lookup(a3, later(3)) is None
    assert h.lookup(a2, later(3)) is not None, "the session that changed the password stays"
    assert h.lookup(b1, later(3)) is not None, "other users keep theirs"
    assert h.ended == [([r.id_hash for r in ended], "password_changed")]
    ended = h.run(h.store.end_sessions("alice", reason="groups_changed"))
    assert [r.id_hash for r in ended] == [r2.id_hash]
    assert h.lookup(a2, later(3)) is None

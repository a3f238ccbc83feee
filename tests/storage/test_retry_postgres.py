"""Waiting for the database through an outage, on a real PostgreSQL server of this module's
own (it is stopped, restarted, and made to lose a commit, which the shared one must not).

A commit is cut off for real: with ``synchronous_standby_names`` naming a standby that does
not exist, COMMIT waits for it after the transaction is durable on the server; terminating
that backend then drops the connection *during* COMMIT with the transaction committed — the
case a client cannot tell apart from a commit that never happened (what a primary killed
while its standby acknowledges looks like). The retry must find out by reading.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from gatehouse.authentication.config import Lockout, PasswordHash
from gatehouse.authentication.lockout import ip_key
from gatehouse.authentication.passwords import Passwords
from gatehouse.authentication.verifier import Invalid, Limits, Verifier
from gatehouse.config.policy import SessionSettings
from gatehouse.policy.sessions import (
    DECISION_WAIT,
    Identity,
    SessionStore,
    Timeouts,
    hash_session_id,
)
from gatehouse.storage.engine import Database
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.models import LoginFailure
from gatehouse.storage.models import Session as SessionRow
from tests.support.postgres import PostgresCluster, require_bindir


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(require_bindir())
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def url(server: PostgresCluster) -> str:
    name = server.create_database()
    # The cluster runs with synchronous_commit=off; this database's sessions wait for the
    # synchronous standby (when one is named), as production's do.
    server.sql(f"ALTER DATABASE {name} SET synchronous_commit = on")
    url = server.url(name)
    asyncio.run(upgrade(url, "all"))
    return url


def store(database: Database) -> SessionStore:
    settings = SessionSettings()
    return SessionStore(database, Timeouts(settings.idle_timeout, settings.absolute_timeout))


def later(seconds: float, action: object) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()  # type: ignore[operator]

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


async def rows(database: Database) -> int:
    async with database.session() as db:
        return len((await db.scalars(select(SessionRow.id_hash))).all())


def test_a_sign_in_waits_for_a_server_that_is_down_and_comes_back(
    server: PostgresCluster, url: str
) -> None:
    async def go() -> None:
        database = Database(url, failover_wait=15)
        sessions = store(database)
        await sessions.create(Identity("warm"), ["password"], datetime.now(UTC))
        server.stop()
        back = later(1.5, server.start)
        started = time.monotonic()
        session_id, _record = await sessions.create(
            Identity("alice"), ["password"], datetime.now(UTC)
        )
        waited = time.monotonic() - started
        back.join()
        assert waited >= 1.0, waited  # it did wait for the server, and then succeeded
        assert database.outage.active is False
        found = await sessions.lookup(session_id, datetime.now(UTC), touch=False, cached=False)
        assert found is not None
        assert found.username == "alice"
        assert await rows(database) == 2
        await database.dispose()

    asyncio.run(go())


def test_after_the_wait_the_error_is_raised(server: PostgresCluster, url: str) -> None:
    async def go() -> None:
        database = Database(url, failover_wait=1.0)
        sessions = store(database)
        await sessions.create(Identity("warm"), ["password"], datetime.now(UTC))
        server.stop()
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable):
                await sessions.create(Identity("bob"), ["password"], datetime.now(UTC))
            assert 1.0 <= time.monotonic() - started < 4.0
        finally:
            server.start()
        await database.dispose()

    asyncio.run(go())


def test_a_transaction_cut_in_the_middle_is_run_again_whole(
    server: PostgresCluster, url: str
) -> None:
    """The server is stopped between two statements of one transaction and started again:
    the whole transaction runs again and its effect is there once."""

    async def go() -> None:
        database = Database(url, failover_wait=15)
        attempts = 0

        async def work(db: object) -> int:
            nonlocal attempts
            attempts += 1
            conn = db  # an AsyncSession
            await conn.execute(  # type: ignore[attr-defined]
                text(
                    "INSERT INTO sessions (id_hash, username, display_name, groups, methods, "
                    "created_at, last_seen_at, idle_expires_at, absolute_expires_at) VALUES "
                    "('cut', 'carol', '', '[]', '[]', now(), now(), now() + interval '1 hour', "
                    "now() + interval '1 hour')"
                )
            )
            if attempts == 1:
                await asyncio.to_thread(server.stop)
                later(1.0, server.start)
            await conn.execute(text("SELECT 1"))  # type: ignore[attr-defined]
            return attempts

        assert await database.run(work) >= 2
        async with database.session() as db:
            found = (await db.scalars(select(SessionRow.username))).all()
        assert found == ["carol"]
        await database.dispose()

    asyncio.run(go())


class CutCommit:
    """Makes the next COMMIT on the database wait for a standby that does not exist, and
    terminates the backend waiting in it (the transaction is committed, the client does not
    hear so)."""

    def __init__(self, server: PostgresCluster) -> None:
        self.server = server
        self.cut = 0

    def __enter__(self) -> CutCommit:
        self.server.sql("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        self.server.sql("SELECT pg_reload_conf()")
        # The checkpointer applies it (WalSndCtl->sync_standbys_defined) a moment later.
        time.sleep(0.5)
        self.thread = threading.Thread(target=self._cut, daemon=True)
        self.thread.start()
        return self

    def _cut(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = self.server.sql(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            ).split()
            if pids:
                # Terminated before the setting is reset (a reset releases the waiting commit,
                # which would then succeed); the retry's commit waits at most until then.
                self.server.sql(f"SELECT pg_terminate_backend({pids[0]})")
                self.cut += 1
                self.server.sql("ALTER SYSTEM RESET synchronous_standby_names")
                self.server.sql("SELECT pg_reload_conf()")
                return
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.thread.join(25)
        self.server.sql("ALTER SYSTEM RESET synchronous_standby_names")
        self.server.sql("SELECT pg_reload_conf()")


def test_a_sign_in_whose_commit_was_cut_off_is_resolved_by_reading(
    server: PostgresCluster, url: str
) -> None:
    async def go() -> None:
        database = Database(url, failover_wait=15)
        sessions = store(database)
        await sessions.create(Identity("warm"), ["password"], datetime.now(UTC))
        with CutCommit(server) as cut:
            session_id, _ = await sessions.create(Identity("dave"), ["password"], datetime.now(UTC))
        assert cut.cut == 1  # the commit really was cut off
        found = await sessions.lookup(session_id, datetime.now(UTC), touch=False, cached=False)
        assert found is not None
        assert found.username == "dave"
        assert await rows(database) == 2
        await database.dispose()

    asyncio.run(go())


def test_a_lockout_reservation_whose_commit_was_cut_off_counts_once(
    server: PostgresCluster, url: str
) -> None:
    async def go() -> None:
        database = Database(url, failover_wait=15)
        passwords = Passwords(PasswordHash())
        verifier = Verifier(database, passwords, Limits.of(Lockout()))
        with CutCommit(server) as cut:
            outcome = await verifier.verify("nobody", "wrong", "192.0.2.7")
        assert cut.cut == 1
        assert isinstance(outcome, Invalid)
        async with database.session() as db:
            count = await db.scalar(
                select(LoginFailure.count).where(LoginFailure.key == ip_key("192.0.2.7"))
            )
        assert count == 1  # counted once, not once per attempt
        await database.dispose()

    asyncio.run(go())


def test_decisions_on_known_sessions_are_answered_while_the_server_is_down(
    server: PostgresCluster, url: str
) -> None:
    async def go() -> None:
        database = Database(url, failover_wait=15)
        sessions = store(database)
        now = datetime.now(UTC)
        known, _ = await sessions.create(Identity("erin"), ["password"], now)
        revoked, _ = await sessions.create(Identity("frank"), ["password"], now)
        other = SessionStore(database, sessions.timeouts)  # another Policy service
        unknown, _ = await other.create(Identity("grace"), ["password"], now)
        server.stop()
        try:
            started = time.monotonic()
            record = await sessions.lookup(known, datetime.now(UTC), cached=False, stale_ok=True)
            assert record is not None
            assert record.username == "erin"
            assert time.monotonic() - started < 1.0  # no wait for a session read recently
            sessions.forget([hash_session_id(revoked)])  # a revocation heard: not answered
            with pytest.raises(DatabaseUnavailable):
                await sessions.lookup(revoked, datetime.now(UTC), cached=False, stale_ok=True)
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable):  # never read here: a short wait, then 503
                await sessions.lookup(unknown, datetime.now(UTC), cached=False, stale_ok=True)
            assert DECISION_WAIT <= time.monotonic() - started < DECISION_WAIT + 2
            # Without stale_ok (the portal, a logout page) the database is waited for.
            assert database.outage.active
        finally:
            server.start()
        record = await sessions.lookup(unknown, datetime.now(UTC), cached=False, stale_ok=True)
        assert record is not None
        assert record.username == "grace"
        await database.dispose()

    asyncio.run(go())

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
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest
from sqlalchemy import select, text

from gatehouse.administration.store import AdminStore
from gatehouse.administration.tables import AuditRow
from gatehouse.authentication.calls import OTP_VERIFY
from gatehouse.authentication.config import Lockout, PasswordHash
from gatehouse.authentication.lockout import ip_key
from gatehouse.authentication.passwords import Passwords
from gatehouse.authentication.verifier import Invalid, Limits, Verifier
from gatehouse.config.policy import PolicyConfig, SessionSettings
from gatehouse.distribution.outbox import Outbox
from gatehouse.oath.otp import time_step, totp
from gatehouse.oauth2.store import OAuth2Store
from gatehouse.policy.app import create_app as create_policy_app
from gatehouse.policy.calls import DecisionRequest
from gatehouse.policy.service import PolicyService
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
from tests.authentication.test_otp_support import SHA1_SEED, App, Clock, running
from tests.distribution.test_outbox import message
from tests.oauth2.test_store import NOW as OAUTH_NOW
from tests.oauth2.test_store import new_code, tokens_for
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


# -- OTP, OAuth2, the outbox and acknowledgements through an outage ------------------------


def a_totp_code(step: int) -> str:
    return totp(SHA1_SEED, step * 30.0, 30, 6, "sha1")


async def otp_app_token(app: App) -> int:
    await app.add_token("TOTP1", "olga", SHA1_SEED)
    return (await app.store.get("TOTP1")).id


async def otp_verify(app: App, code: str, attempt: str) -> str:
    status, body = await app.call(
        OTP_VERIFY, {"username": "olga", "code": code, "client_ip": "192.0.2.9", "attempt": attempt}
    )
    assert status == 200, body  # never a 503
    return str(body["result"])


async def every_branch(url: str) -> None:
    for branch in ("oath", "oauth2", "outbox", "admin"):
        await upgrade(url, branch)


async def audited(database: Database, action: str) -> list[tuple[object, ...]]:
    async with database.session() as db:
        rows = await db.execute(
            select(AuditRow.at, AuditRow.who, AuditRow.what).where(AuditRow.action == action)
        )
    return [tuple(row) for row in rows]


@dataclass
class Work:
    """What the four kinds of work of the tests below are done with: an in-process
    Authentication app with a TOTP token, an OAuth2 code, the outbox and Admin's store with
    ps1 registered, all on one PostgreSQL database that waits 15 s through an outage."""

    clock: Clock
    database: Database
    oauth: OAuth2Store
    outbox: Outbox
    admin: AdminStore
    app: Any
    token: Any
    code: Any


@asynccontextmanager
async def four_kinds_of_work(url: str, tmp_path: Path, code_name: str) -> AsyncIterator[Work]:
    await every_branch(url)
    clock = Clock(1_800_000_000.0)
    database = Database(url, failover_wait=15)
    oauth = OAuth2Store(database.engine, database.waiting)
    outbox = Outbox(database.engine, database.waiting)
    admin = AdminStore(database)
    try:
        async with running(
            tmp_path, user_db=url, oath_db=url, clock=clock, failover_wait=15
        ) as app:
            token = await otp_app_token(app)
            code = new_code(code_name)
            await oauth.add_code(code, OAUTH_NOW)
            await admin.register_service("ps1", "policy", "node1", "https://ps1:1", "test")
            yield Work(clock, database, oauth, outbox, admin, app, token, code)
    finally:
        await database.dispose()


def test_otp_oauth_outbox_and_ack_work_started_while_the_server_is_down_completes_after_it(
    server: PostgresCluster, url: str, tmp_path: Path
) -> None:
    """One outage, four kinds of work started in it (an OTP code, a code exchange, a message,
    an acknowledgement): each waits, completes once the server is back, once."""

    async def go() -> None:
        async with four_kinds_of_work(url, tmp_path, "outage") as work:
            clock, database, oauth, outbox, admin, app = (
                work.clock,
                work.database,
                work.oauth,
                work.outbox,
                work.admin,
                work.app,
            )
            code = work.code
            tokens = tokens_for(code.id)
            step = time_step(clock.now, 30)
            server.stop()
            back = later(1.5, server.start)
            started = time.monotonic()
            try:
                results = await asyncio.gather(
                    otp_verify(app, a_totp_code(step), "otp-attempt-0001"),
                    oauth.exchange_code(code.id, tokens, OAUTH_NOW),
                    outbox.submit(message("outage")),
                    admin.record_ack("ps1", 4, audit="runs version 4"),
                )
                waited = time.monotonic() - started
            finally:
                back.join()
            assert waited >= 1.0, waited
            otp, exchanged, (row, is_new), _ = results
            assert otp == "ok"
            assert exchanged is True
            assert is_new is True
            assert await otp_verify(app, a_totp_code(step), "otp-attempt-0002") == "invalid"  # once
            assert [t.id for t in await oauth.family(code.id)] == [tokens.id]
            assert [m.id for m in await outbox.list_messages()] == [row.id]
            (service,) = [s for s in await admin.list_services() if s.id == "ps1"]
            assert service.running_version == 4
            acks = await audited(database, "service.ack")
            assert len(acks) == 1, acks

    asyncio.run(go())


def test_otp_oauth_outbox_and_ack_commits_cut_off_are_applied_once(
    server: PostgresCluster, url: str, tmp_path: Path
) -> None:
    """Each write's COMMIT cut off after it took effect (CutCommit): found by reading, not
    applied again, and answered as the work that happened."""

    async def go() -> None:
        async with four_kinds_of_work(url, tmp_path, "cut") as work:
            clock, database, oauth, outbox, admin, app = (
                work.clock,
                work.database,
                work.oauth,
                work.outbox,
                work.admin,
                work.app,
            )
            token, code = work.token, work.code
            await outbox.submit(message("warm"))
            step = time_step(clock.now, 30)
            with CutCommit(server) as cut:
                assert await otp_verify(app, a_totp_code(step), "otp-attempt-0001") == "ok"
            assert cut.cut == 1
            assert await otp_verify(app, a_totp_code(step), "otp-attempt-0002") == "invalid"
            found = await app.store.by_id(token)
            assert found is not None
            assert found.last_attempt == "otp-attempt-0001"
            with CutCommit(server) as cut:
                assert await app.store.record_failure(token, 10, 60.0, attempt="bad-1")
            assert cut.cut == 1
            assert (await app.store.get("TOTP1")).failures == 1
            tokens = tokens_for(code.id)
            with CutCommit(server) as cut:
                assert await oauth.exchange_code(code.id, tokens, OAUTH_NOW)
            assert cut.cut == 1
            assert [t.id for t in await oauth.family(code.id)] == [tokens.id]
            with CutCommit(server) as cut:
                _row, is_new = await outbox.submit(message("cut"))
            assert cut.cut == 1
            assert is_new
            assert len(await outbox.list_messages()) == 2
            with CutCommit(server) as cut:
                await admin.record_ack("ps1", 5, audit="runs version 5")
            assert cut.cut == 1
            acks = await audited(database, "service.ack")
            assert len(acks) == 1, acks

    asyncio.run(go())


# -- a session no Policy service has read, while the database is away ----------------------


def test_a_browser_whose_session_was_not_read_here_waits_on_the_portal_not_an_error(
    server: PostgresCluster, url: str, tmp_path: Path
) -> None:
    """A GET's decision sends the browser to the portal's wait page, which waits for the
    database and sends it back; the decision then reads the session and allows. A POST's
    decision is refused (503: the Access Point asks another Policy service)."""

    async def go() -> None:
        config = PolicyConfig.model_validate(
            {"resources": {"app": None}, "database": {"failover_wait": 15}}
        )
        service = PolicyService(
            config, session_db=url, user_db=url, home=tmp_path, config_dir=tmp_path
        )
        app = create_policy_app("/_gatehouse/", lambda: service)
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(service.ready.wait(), 30)
            made_elsewhere = Database(url)  # another Policy service made the session
            session_id, _ = await store(made_elsewhere).create(
                Identity("hana"), ["password"], datetime.now(UTC)
            )
            await made_elsewhere.dispose()
            asked: DecisionRequest = {
                "session": session_id,
                "resource": "app",
                "method": "GET",
                "path": "/reports",
                "url": "http://app.example/reports",
                "client_ip": "192.0.2.1",
                "headers": {},
                "ap": "ap1",
            }
            server.stop()
            back = later(4.0, server.start)  # after the two decisions (1.5 s each)
            try:
                with pytest.raises(DatabaseUnavailable):
                    await service.decide({**asked, "method": "POST"})
                answer = await service.decide(asked)
                assert answer["decision"] == "authenticate"
                wait = f"/_gatehouse/wait?rd={quote('http://app.example/reports', safe='')}"
                assert answer["login_url"] == wait
                portal = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app),
                    base_url="http://app.example",
                    cookies={"gatehouse_session": session_id},
                )
                async with portal:
                    started = time.monotonic()
                    page = await portal.get(wait)
                    waited = time.monotonic() - started
            finally:
                back.join()
            assert page.status_code == 303, page.text
            assert page.headers["location"] == "http://app.example/reports"
            assert waited >= 0.5, waited  # it did wait for the server
            answer = await service.decide(asked)
            assert answer["decision"] == "allow"

    asyncio.run(go())

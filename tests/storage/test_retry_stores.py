"""The stores that wait through a failover, in-process on SQLite: each write's commit is cut
off *after* it took effect (the transaction's context raises "connection lost" once it has
committed, which is what a client sees when the primary dies during COMMIT), and the work
must end as if it had run once: an OTP step accepted once and its submission answered ok,
a failure counted once, a code exchanged once (not taken for a replay by its own exchange),
a message accepted once and answered as new, an acknowledgement audited once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select

from gatehouse.administration.store import AdminStore
from gatehouse.administration.tables import AuditRow
from gatehouse.authentication.code_store import CodeStore
from gatehouse.distribution.outbox import Outbox
from gatehouse.oath.store import TokenStore
from gatehouse.oauth2.store import OAuth2Store
from gatehouse.storage.engine import Database
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import Which, upgrade
from gatehouse.storage.retry import NO_WAIT, Waiting, waits
from tests.authentication.test_code_store import SETTINGS, new
from tests.distribution.test_outbox import message
from tests.oauth2.test_store import NOW as OAUTH_NOW
from tests.oauth2.test_store import new_code, tokens_for

T = TypeVar("T")
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Cut:
    """Replaces ``owner.<attr>`` (a transaction context) with one whose next ``times``
    transactions commit and then fail as if the connection died during COMMIT."""

    def __init__(self, owner: object, attr: str = "_transaction", times: int = 1) -> None:
        self.original: Callable[[], AbstractAsyncContextManager[Any]] = getattr(owner, attr)
        self.left = times
        self.cut = 0
        setattr(owner, attr, self._context)

    @asynccontextmanager
    async def _context(self) -> AsyncIterator[Any]:
        async with self.original() as handle:
            yield handle
        if self.left > 0:  # committed: now the answer is "lost"
            self.left -= 1
            self.cut += 1
            raise DatabaseUnavailable("database unavailable: connection lost during COMMIT")


def on_sqlite(tmp_path: Path, branch: Which, body: Callable[[Database], Awaitable[T]]) -> T:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"

    async def go() -> T:
        await upgrade(url, branch)
        database = Database(url, failover_wait=5.0)
        try:
            return await body(database)
        finally:
            await database.dispose()

    return asyncio.run(go())


# -- the helpers ----------------------------------------------------------------------------


class Counter:
    def __init__(self, waiting: Waiting) -> None:
        self.waiting = waiting
        self.calls = 0

    @waits
    async def flaky(self, fail: int) -> int:
        self.calls += 1
        if self.calls <= fail:
            raise DatabaseUnavailable("database unavailable: connection refused")
        return self.calls


def test_a_waiting_method_is_run_again_whole_and_without_a_wait_once() -> None:
    waiting = Counter(Waiting(5.0))
    assert asyncio.run(waiting.flaky(2)) == 3
    once = Counter(NO_WAIT)
    try:
        asyncio.run(once.flaky(1))
    except DatabaseUnavailable:
        pass
    else:
        raise AssertionError("NO_WAIT tried again")
    assert once.calls == 1


# -- OTP --------------------------------------------------------------------------------------


async def a_token(store: TokenStore, type_: str = "totp") -> int:
    token = await store.add("T1", type=type_, seed_key_id="k", seed_ciphertext=b"x", owner="al")  # type: ignore[arg-type]
    return token.id


def test_an_otp_step_whose_commit_was_cut_off_is_accepted_once(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        store = TokenStore(db.engine, db.waiting)
        token = await a_token(store)
        cut = Cut(store)
        assert await store.consume_totp(token, 1000, 0, now=NOW, attempt="first")
        assert cut.cut == 1
        assert not await store.consume_totp(token, 1000, 0, now=NOW, attempt="second")
        found = await store.by_id(token)
        assert found is not None
        assert (found.last_step, found.last_attempt) == (1000, "first")

    on_sqlite(tmp_path, "oath", body)


def test_an_otp_failure_whose_commit_was_cut_off_counts_once(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        store = TokenStore(db.engine, db.waiting)
        token = await a_token(store)
        cut = Cut(store)
        result = await store.record_failure(token, 5, 60.0, now=NOW, attempt="check-1")
        assert cut.cut == 1
        assert result.failures == 1
        # The same check again (the Policy service retrying it elsewhere): still once.
        assert (
            await store.record_failure(token, 5, 60.0, now=NOW, attempt="check-1")
        ).failures == 1
        assert (
            await store.record_failure(token, 5, 60.0, now=NOW, attempt="check-2")
        ).failures == 2

    on_sqlite(tmp_path, "oath", body)


def test_a_resync_whose_commit_was_cut_off_says_it_moved(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        store = TokenStore(db.engine, db.waiting)
        await a_token(store, "hotp")
        cut = Cut(store)
        assert await store.resync_counter("T1", 7)
        assert cut.cut == 1
        assert (await store.get("T1")).counter == 7
        assert not await store.resync_counter("T1", 7)

    on_sqlite(tmp_path, "oath", body)


def test_a_one_time_code_failure_whose_commit_was_cut_off_counts_once(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        store = CodeStore(db.engine, db.waiting)
        await store.create(new("send-1", at=NOW), SETTINGS, NOW.timestamp())
        cut = Cut(store)
        assert list(await store.fail("alice", "email_otp", NOW, 3)) == [1]
        assert cut.cut == 1
        (code,) = await store.candidates("alice", "email_otp")
        assert code.failures == 1
        # A consumption by a submission is still decided by its own attempt.
        assert await store.consume(code.id, "submission", NOW, 3)

    on_sqlite(tmp_path, "oath", body)


# -- OAuth2 -----------------------------------------------------------------------------------


def test_a_code_exchange_whose_commit_was_cut_off_is_exchanged_once(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        store = OAuth2Store(db.engine, db.waiting)
        store._reader_path = None  # the async transaction (PostgreSQL's path) on SQLite
        try:
            code = new_code("attempt-1")
            await store.add_code(code, OAUTH_NOW)
            tokens = tokens_for(code.id)
            cut = Cut(store)
            # Run again, the conditional UPDATE would find the code used: the token row
            # (its id chosen before the write) tells that this exchange is the one.
            assert await store.exchange_code(code.id, tokens, OAUTH_NOW)
            assert cut.cut == 1
            assert [row.id for row in await store.family(code.id)] == [tokens.id]
            assert not await store.exchange_code(code.id, tokens_for(code.id), OAUTH_NOW)
            # A refresh likewise.
            rotated = tokens_for(code.id)
            Cut(store)
            assert await store.rotate_refresh(tokens.id, rotated, OAUTH_NOW)
            assert len(await store.family(code.id)) == 2
        finally:
            store.close()

    on_sqlite(tmp_path, "oauth2", body)


def test_the_sqlite_fast_path_is_taken_first(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        store = OAuth2Store(db.engine, db.waiting)
        try:
            code = new_code("attempt-2")
            await store.add_code(code, OAUTH_NOW)
            cut = Cut(store)  # the async transaction: not used when the file is free
            assert await store.exchange_code(code.id, tokens_for(code.id), OAUTH_NOW)
            assert (await store.find_code(code.code_hash)) is not None
            assert cut.cut == 0
        finally:
            store.close()

    on_sqlite(tmp_path, "oauth2", body)


# -- the outbox -------------------------------------------------------------------------------


def test_a_message_whose_commit_was_cut_off_is_accepted_once_and_new(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        outbox = Outbox(db.engine, db.waiting)
        cut = Cut(outbox)
        row, is_new = await outbox.submit(message("cut"))
        assert cut.cut == 1
        assert is_new
        assert [m.id for m in await outbox.list_messages()] == [row.id]

    on_sqlite(tmp_path, "outbox", body)


# -- acknowledgements -------------------------------------------------------------------------


def test_an_ack_whose_commit_was_cut_off_is_recorded_and_audited_once(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        ticks = iter(range(1, 10**6))
        # A clock that moves on each reading, as the real one does.
        store = AdminStore(db, clock=lambda: NOW + timedelta(microseconds=next(ticks)))
        await store.register_service("ps1", "policy", "node1", "https://ps1:1", "test")
        cut = Cut(store, "_write")
        await store.record_ack("ps1", 3, audit="runs version 3")
        assert cut.cut == 1
        (service,) = [s for s in await store.list_services() if s.id == "ps1"]
        assert service.running_version == 3
        async with db.session() as session:
            audited = await session.scalar(
                select(func.count()).select_from(AuditRow).where(AuditRow.action == "service.ack")
            )
        assert audited == 1

    on_sqlite(tmp_path, "admin", body)


def test_the_wait_page_answers_before_an_access_point_gives_up_on_it() -> None:
    from gatehouse.access_point.runtime import PORTAL_READ_TIMEOUT
    from gatehouse.config.database import DatabaseSettings
    from gatehouse.policy.portal import WAIT_PAGE_LIMIT

    # The browser gets the page's answer (303, or the 503 page), never the AP's timeout; the
    # default failover_wait is waited for in full.
    assert DatabaseSettings().failover_wait <= WAIT_PAGE_LIMIT <= PORTAL_READ_TIMEOUT - 10

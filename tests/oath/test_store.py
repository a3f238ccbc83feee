"""The OATH DB's token store on SQLite and PostgreSQL: CRUD, single use of every step and
counter (also between two engines racing), failure counting and locks, its migration branch
and its URL in an installation."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from gatehouse.oath.models import OathBase
from gatehouse.oath.store import (
    InvalidToken,
    TokenAssigned,
    TokenExists,
    TokenNotFound,
    TokenRow,
    TokenStore,
    check_fields,
    usable,
)
from gatehouse.storage.engine import Database
from gatehouse.storage.home import DatabaseURLs, database_urls, prepare_home
from gatehouse.storage.migrate import upgrade, upgrade_installation
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]

T = TypeVar("T")
SEED = b"\x00ciphertext\xff" * 3
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def oath_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty OATH DB on each engine."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "oath.db")
    else:
        url = str(request.getfixturevalue("postgres_url"))
    asyncio.run(upgrade(url, "oath"))
    return url


def with_store(url: str, body: Callable[[TokenStore], Awaitable[T]]) -> T:
    async def go() -> T:
        db = Database(url)
        try:
            return await body(TokenStore(db.engine))
        finally:
            await db.dispose()

    return asyncio.run(go())


def with_two_stores(url: str, body: Callable[[TokenStore, TokenStore], Awaitable[T]]) -> T:
    """Two engines, so two connection pools: as two Authentication services would have."""

    async def go() -> T:
        first, second = Database(url), Database(url)
        try:
            return await body(TokenStore(first.engine), TokenStore(second.engine))
        finally:
            await first.dispose()
            await second.dispose()

    return asyncio.run(go())


async def add_totp(store: TokenStore, serial: str = "T1", owner: str | None = "alice") -> TokenRow:
    return await store.add(
        serial, type="totp", seed_key_id="k1", seed_ciphertext=SEED, owner=owner, now=NOW
    )


async def add_hotp(store: TokenStore, serial: str = "H1", owner: str | None = "alice") -> TokenRow:
    return await store.add(
        serial, type="hotp", seed_key_id="k1", seed_ciphertext=SEED, owner=owner, now=NOW
    )


# -- administration -------------------------------------------------------------------------


def test_add_get_list_assign_delete(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        totp = await store.add(
            "T1",
            type="totp",
            algorithm="sha512",
            digits=8,
            period=60,
            seed_key_id="k1",
            seed_ciphertext=SEED,
            owner="alice",
            description="phone",
            now=NOW,
        )
        assert (totp.serial, totp.owner, totp.type, totp.algorithm) == (
            "T1",
            "alice",
            "totp",
            "sha512",
        )
        assert (totp.digits, totp.period, totp.seed_key_id, totp.seed_ciphertext) == (
            8,
            60,
            "k1",
            SEED,
        )
        assert (totp.counter, totp.last_step, totp.drift, totp.failures) == (0, -1, 0, 0)
        assert (totp.state, totp.locked_until, totp.description) == ("active", None, "phone")
        assert (totp.created_at, totp.last_used_at) == (NOW, None)
        assert "ciphertext" not in repr(totp)
        hotp = await add_hotp(store, "H1", owner=None)
        assert await store.get("T1") == totp
        assert await store.by_id(hotp.id) == hotp
        assert await store.find("nope") is None
        assert await store.by_id(hotp.id + 1000) is None
        assert [t.serial for t in await store.list_tokens()] == ["H1", "T1"]
        assert await store.list_tokens("alice") == [totp]
        assert await store.list_tokens(unassigned=True) == [hotp]

        assert (await store.assign("H1", "bob")).owner == "bob"
        assert (await store.assign("H1", "bob")).owner == "bob"  # already theirs: fine
        with pytest.raises(TokenAssigned, match="assigned to 'bob'"):
            await store.assign("H1", "alice")
        assert (await store.unassign("H1")).owner is None
        assert (await store.assign("H1", "alice")).owner == "alice"
        assert [t.serial for t in await store.list_tokens("alice")] == ["H1", "T1"]
        # What a sign-in reads: the tokens and the enrolment flag, in one transaction.
        owned, required = await store.owner_status("alice")
        assert ([t.serial for t in owned], required) == (["H1", "T1"], False)
        await store.require_enrolment("alice", True)
        assert (await store.owner_status("alice"))[1] is True
        assert await store.owner_status("nobody") == ([], False)
        await store.require_enrolment("alice", False)

        assert (await store.set_state("H1", "disabled")).state == "disabled"
        assert [t.serial for t in await store.active_for("alice")] == ["T1"]
        assert (await store.set_state("H1", "active")).state == "active"

        await store.delete("H1")
        assert await store.find("H1") is None
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: store.get("H1"),
            lambda: store.delete("H1"),
            lambda: store.assign("H1", "alice"),
            lambda: store.unassign("H1"),
            lambda: store.set_state("H1", "active"),
            lambda: store.unlock("H1"),
        ]
        for operation in operations:
            with pytest.raises(TokenNotFound, match="no token has serial 'H1'"):
                await operation()

    with_store(oath_db, go)


def test_serials_are_unique(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        await add_totp(store, "S1")
        with pytest.raises(TokenExists, match="serial 'S1' exists"):
            await add_hotp(store, "S1", owner="bob")
        assert [t.type for t in await store.list_tokens()] == ["totp"]

    with_store(oath_db, go)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"serial": ""}, "invalid serial"),
        ({"serial": "a b"}, "invalid serial"),
        ({"serial": "x" * 65}, "invalid serial"),
        ({"type": "motp"}, "invalid type"),
        ({"algorithm": "md5"}, "invalid algorithm"),
        ({"digits": 7}, "invalid digits"),
        ({"period": 45}, "invalid period"),
        ({"seed_key_id": ""}, "invalid seed key id"),
        ({"owner": "not a user"}, "invalid owner"),
        ({"state": "revoked"}, "invalid state"),
        ({"counter": -1}, "invalid counter"),
    ],
)
def test_fields_out_of_range_are_refused(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "serial": "OATH0001",
        "type": "hotp",
        "algorithm": "sha1",
        "digits": 6,
        "period": 30,
        "seed_key_id": "k1",
        "owner": None,
        "state": "active",
        "counter": 0,
    }
    check_fields(**fields)  # type: ignore[arg-type]
    with pytest.raises(InvalidToken, match=message):
        check_fields(**{**fields, **change})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("type", "'motp'"),
        ("algorithm", "'md5'"),
        ("digits", "7"),
        ("period", "45"),
        ("state", "'x'"),
    ],
)
def test_the_database_checks_the_enumerations(oath_db: str, column: str, value: str) -> None:
    values = {
        "serial": "'X'",
        "type": "'totp'",
        "algorithm": "'sha1'",
        "digits": "6",
        "period": "30",
        "state": "'active'",
        column: value,
    }
    names = ", ".join(values)
    statement = text(
        f"INSERT INTO oath_tokens ({names}, seed_key_id, seed_ciphertext, counter, last_step,"
        f" drift, failures, description, created_at) VALUES ({', '.join(values.values())},"
        " 'k', :seed, 0, -1, 0, 0, '', :now)"
    )

    async def go(store: TokenStore) -> None:
        async with store.engine.begin() as conn:
            await conn.execute(statement, {"seed": SEED, "now": NOW})

    with pytest.raises(IntegrityError, match=f"ck_oath_tokens_{column}"):
        with_store(oath_db, go)


# -- single use ------------------------------------------------------------------------------


def test_a_time_step_is_accepted_once_and_never_an_earlier_one(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        token = await add_totp(store)
        assert await store.consume_totp(token.id, 1000, drift=0, now=NOW)
        assert not await store.consume_totp(token.id, 1000, drift=0, now=NOW)  # replay
        assert await store.consume_totp(token.id, 1002, drift=1, now=NOW)
        assert not await store.consume_totp(token.id, 1001, drift=0, now=NOW)  # earlier
        assert not await store.consume_totp(token.id, 1002, drift=1, now=NOW)
        after = await store.get("T1")
        assert (after.last_step, after.drift, after.last_used_at) == (1002, 1, NOW)
        assert not await store.consume_hotp(token.id, 5, now=NOW)  # not a HOTP token
        assert not await store.consume_totp(token.id + 1000, 2000, drift=0)  # no such token

    with_store(oath_db, go)


def test_the_hotp_counter_never_goes_back(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        token = await add_hotp(store)
        assert await store.consume_hotp(token.id, 0, now=NOW)
        assert not await store.consume_hotp(token.id, 0, now=NOW)
        assert await store.consume_hotp(token.id, 7, now=NOW)  # within a look-ahead window
        assert (await store.get("H1")).counter == 8
        for counter in (3, 7):
            assert not await store.consume_hotp(token.id, counter, now=NOW)
        assert await store.consume_hotp(token.id, 8, now=NOW)
        assert (await store.get("H1")).counter == 9
        assert not await store.consume_totp(token.id, 100, drift=0)  # not a TOTP token

    with_store(oath_db, go)


def test_disabled_pending_and_locked_tokens_accept_nothing(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        totp, hotp = await add_totp(store), await add_hotp(store)
        for state in ("disabled", "pending", "locked"):
            await store.set_state("T1", state)
            await store.set_state("H1", state)
            assert not await store.consume_totp(totp.id, 10, drift=0)
            assert not await store.consume_hotp(hotp.id, 0)
            assert await store.active_for("alice") == []
        assert (await store.get("T1")).last_step == -1
        assert (await store.get("H1")).counter == 0

    with_store(oath_db, go)


def test_a_pending_enrolment_is_confirmed_once(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        token = await store.add(
            "P1", type="totp", seed_key_id="k1", seed_ciphertext=SEED, owner="al", state="pending"
        )
        assert await store.active_for("al") == []
        assert await store.activate_totp(token.id, 500, drift=0, now=NOW)
        assert not await store.activate_totp(token.id, 501, drift=0, now=NOW)  # active now
        assert not await store.consume_totp(token.id, 500, drift=0, now=NOW)  # step used
        assert await store.consume_totp(token.id, 501, drift=0, now=NOW)
        assert [t.serial for t in await store.active_for("al")] == ["P1"]

    with_store(oath_db, go)


def test_the_same_attempt_is_accepted_again_and_no_other(oath_db: str) -> None:
    """A retry of one submission (the answer was lost) is accepted again without moving the
    step or counter; another submission of the same code is a replay."""

    async def go(store: TokenStore) -> None:
        totp, hotp = await add_totp(store), await add_hotp(store)
        first, second = "attempt-0000000001", "attempt-0000000002"
        assert await store.consume_totp(totp.id, 1000, 0, now=NOW, attempt=first)
        assert await store.consume_totp(totp.id, 1000, 0, now=NOW, attempt=first)
        assert not await store.consume_totp(totp.id, 1000, 0, now=NOW, attempt=second)
        assert not await store.consume_totp(totp.id, 1000, 0, now=NOW)
        assert not await store.consume_totp(totp.id, 999, 0, now=NOW, attempt=first)
        assert (await store.get("T1")).last_attempt == first
        assert await store.consume_totp(totp.id, 1001, 0, now=NOW, attempt=second)
        assert not await store.consume_totp(totp.id, 1000, 0, now=NOW, attempt=first)
        assert not await store.consume_totp(totp.id, 1001, 0, now=NOW, attempt=first)

        assert await store.consume_hotp(hotp.id, 4, now=NOW, attempt=first)
        assert await store.consume_hotp(hotp.id, 4, now=NOW, attempt=first)
        assert (await store.get("H1")).counter == 5
        assert not await store.consume_hotp(hotp.id, 4, now=NOW, attempt=second)
        assert not await store.consume_hotp(hotp.id, 3, now=NOW, attempt=first)
        # A consumption without an attempt forgets the last one.
        assert await store.consume_hotp(hotp.id, 5, now=NOW)
        assert not await store.consume_hotp(hotp.id, 5, now=NOW, attempt=first)
        assert (await store.get("H1")).last_attempt is None

    with_store(oath_db, go)


def test_a_pending_token_replaces_the_earlier_one_and_confirms_idempotently(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        await store.require_enrolment("al", True)
        assert await store.enrolment_required("al")
        assert not await store.enrolment_required("bob")
        active = await add_totp(store, "A1", owner="al")
        one = await store.replace_pending("al", "P1", seed_key_id="k1", seed_ciphertext=SEED)
        two = await store.replace_pending("al", "P2", seed_key_id="k1", seed_ciphertext=SEED)
        assert (one.state, two.state, two.type) == ("pending", "pending", "totp")
        assert await store.find("P1") is None
        assert (await store.pending_for("al")) == two
        assert await store.pending_for("bob") is None
        with pytest.raises(TokenExists):
            await store.replace_pending("bob", "A1", seed_key_id="k1", seed_ciphertext=SEED)
        with pytest.raises(InvalidToken):
            await store.replace_pending("no one", "X1", seed_key_id="k1", seed_ciphertext=SEED)
        attempt = "attempt-0000000001"
        assert await store.activate_totp(two.id, 77, 0, now=NOW, attempt=attempt)
        assert not await store.enrolment_required("al")  # cleared with the confirmation
        assert await store.activate_totp(two.id, 77, 0, now=NOW, attempt=attempt)  # a retry
        assert not await store.activate_totp(two.id, 77, 0, now=NOW, attempt="other-attempt-00")
        assert not await store.activate_totp(two.id, 78, 0, now=NOW, attempt=attempt)
        assert not await store.activate_totp(active.id, 79, 0, now=NOW)  # not pending
        assert await store.pending_for("al") is None
        assert (await store.get("A1")).state == "active"
        await store.require_enrolment("al", True)
        await store.require_enrolment("al", True)
        assert await store.enrolment_required("al")
        await store.require_enrolment("al", False)
        assert not await store.enrolment_required("al")

    with_store(oath_db, go)


# -- failures and locks ----------------------------------------------------------------------


def test_failures_lock_at_the_limit_until_the_time_out_or_an_unlock(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        token = await add_totp(store)
        for n in range(1, 3):
            result = await store.record_failure(token.id, 3, 60, now=NOW)
            assert (result.failures, result.state, result.locked) == (n, "active", False)
        result = await store.record_failure(token.id, 3, 60, now=NOW)
        until = NOW + timedelta(seconds=60)
        assert (result.failures, result.locked, result.locked_until) == (3, True, until)
        # A failure during the lock counts but does not extend it.
        later = NOW + timedelta(seconds=30)
        result = await store.record_failure(token.id, 3, 60, now=later)
        assert (result.failures, result.locked_until) == (4, until)
        assert not await store.consume_totp(token.id, 10, drift=0, now=later)
        assert await store.active_for("alice", now=later) == []

        # The lock runs out: the token answers again, and one more failure locks it again.
        after = until + timedelta(seconds=1)
        assert not usable(await store.get("T1"), later)
        assert usable(await store.get("T1"), after)
        assert [t.serial for t in await store.active_for("alice", now=after)] == ["T1"]
        result = await store.record_failure(token.id, 3, 60, now=after)
        assert (result.failures, result.locked_until) == (5, after + timedelta(seconds=60))

        unlocked = await store.unlock("T1")
        assert (unlocked.state, unlocked.failures, unlocked.locked_until) == ("active", 0, None)
        assert await store.consume_totp(token.id, 10, drift=0, now=later)

    with_store(oath_db, go)


def test_a_success_after_the_lock_ran_out_clears_it(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        totp, hotp = await add_totp(store), await add_hotp(store)
        for token in (totp, hotp):
            await store.record_failure(token.id, 1, 10, now=NOW)
        after = NOW + timedelta(seconds=11)
        assert await store.consume_totp(totp.id, 7, drift=0, now=after)
        assert await store.consume_hotp(hotp.id, 0, now=after)
        for serial in ("T1", "H1"):
            row = await store.get(serial)
            assert (row.state, row.failures, row.locked_until, row.last_used_at) == (
                "active",
                0,
                None,
                after,
            )

    with_store(oath_db, go)


def test_a_success_resets_the_failures(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        token = await add_totp(store)
        await store.record_failure(token.id, 3, 60)
        await store.record_failure(token.id, 3, 60)
        assert await store.consume_totp(token.id, 1, drift=0)
        assert (await store.record_failure(token.id, 3, 60)).failures == 1

    with_store(oath_db, go)


def test_locks_without_a_time_out_and_tokens_that_never_lock(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        token = await add_totp(store)
        result = await store.record_failure(token.id, 1, None, now=NOW)
        assert (result.locked, result.locked_until) == (True, None)
        assert await store.active_for("alice", now=NOW + timedelta(days=365)) == []

        # Pending and disabled tokens count failures but never lock, so that unlocking
        # cannot turn a pending token active.
        for state in ("pending", "disabled"):
            await store.set_state("T1", state)
            result = await store.record_failure(token.id, 1, 60, now=NOW)
            assert (result.state, result.locked_until) == (state, None)
            assert (await store.unlock("T1")).state == state
        with pytest.raises(TokenNotFound):
            await store.record_failure(token.id + 1000, 1, 60)

    with_store(oath_db, go)


def test_seeds_are_replaced_only_if_unchanged(oath_db: str) -> None:
    async def go(store: TokenStore) -> None:
        await add_totp(store)
        assert not await store.replace_seed("T1", "k2", b"new", old_key_id="k0")
        assert not await store.replace_seed(
            "T1", "k2", b"new", old_key_id="k1", old_ciphertext=b"x"
        )
        assert await store.replace_seed("T1", "k2", b"new", old_key_id="k1", old_ciphertext=SEED)
        row = await store.get("T1")
        assert (row.seed_key_id, row.seed_ciphertext) == ("k2", b"new")
        assert not await store.replace_seed("T1", "k3", b"newer", old_key_id="k1")
        assert not await store.replace_seed("T9", "k3", b"newer", old_key_id="k2")

    with_store(oath_db, go)


# -- races between two engines ------------------------------------------------------------------


def race(url: str, rounds: int) -> None:
    """Each round, both engines consume the same fresh TOTP step and the same HOTP counter at
    once: exactly one of the two wins each time."""

    async def go(one: TokenStore, two: TokenStore) -> None:
        totp, hotp = await add_totp(one), await add_hotp(one)
        await two.get("T1")  # both pools hold a connection before the first round
        for step in range(100, 100 + rounds):
            totp_won = await asyncio.gather(
                one.consume_totp(totp.id, step, drift=0), two.consume_totp(totp.id, step, drift=0)
            )
            hotp_won = await asyncio.gather(
                two.consume_hotp(hotp.id, step), one.consume_hotp(hotp.id, step)
            )
            assert sorted(totp_won) == [False, True], (step, totp_won)
            assert sorted(hotp_won) == [False, True], (step, hotp_won)
        assert (await one.get("T1")).last_step == 100 + rounds - 1
        assert (await two.get("H1")).counter == 100 + rounds

    with_two_stores(url, go)


def failure_race(url: str, attempts: int, max_failures: int) -> None:
    """Failures from both engines at once are all counted, and the token locks once."""

    async def go(one: TokenStore, two: TokenStore) -> None:
        token = await add_totp(one, "F1")
        results = await asyncio.gather(
            *(
                (one if n % 2 else two).record_failure(token.id, max_failures, 60, now=NOW)
                for n in range(attempts)
            )
        )
        assert sorted(r.failures for r in results) == list(range(1, attempts + 1))
        locked = [r for r in results if r.locked]
        assert len(locked) == attempts - max_failures + 1
        assert {r.locked_until for r in locked} == {NOW + timedelta(seconds=60)}

    with_two_stores(url, go)


def test_two_engines_race_on_postgresql(postgres_url: str) -> None:
    asyncio.run(upgrade(postgres_url, "oath"))
    race(postgres_url, 200)
    failure_race(postgres_url, 20, 10)


def test_two_engines_race_on_sqlite(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "oath.db")
    asyncio.run(upgrade(url, "oath"))
    race(url, 50)
    failure_race(url, 20, 10)


# -- migrations and the installation -----------------------------------------------------------


def table_names(url: str) -> set[str]:
    async def go(store: TokenStore) -> set[str]:
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        return set(names) - {"alembic_version"}

    return with_store(url, go)


def test_the_oath_branch_creates_its_table_once(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "oath.db")
    asyncio.run(upgrade(url, "oath"))
    assert table_names(url) == set(OathBase.metadata.tables)
    asyncio.run(upgrade(url, "oath"))  # a no-op now
    assert table_names(url) == set(OathBase.metadata.tables)
    asyncio.run(upgrade(url, "all"))  # the other branches beside it, if one DB holds all
    assert "oath_tokens" in table_names(url)
    assert "users" in table_names(url)


def test_the_migration_matches_the_model(oath_db: str) -> None:
    def compare(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, OathBase.metadata))

    async def go(store: TokenStore) -> list[object]:
        async with store.engine.connect() as conn:
            return await conn.run_sync(compare)

    assert with_store(oath_db, go) == []


def test_an_installation_migrates_the_oath_db_at_its_own_url(tmp_path: Path) -> None:
    urls = DatabaseURLs(
        sqlite_url(tmp_path / "users.db"),
        sqlite_url(tmp_path / "users.db"),
        sqlite_url(tmp_path / "oath.db"),
    )
    asyncio.run(upgrade_installation(urls, "oath"))
    assert table_names(urls.oath_db) == set(OathBase.metadata.tables)
    assert {"oath_tokens", "oath_users", "oath_codes"} <= table_names(urls.oath_db)
    assert table_names(urls.user_db) == set()
    asyncio.run(upgrade_installation(urls))  # "all" leaves the OATH DB alone
    assert "oath_tokens" not in table_names(urls.user_db)


def test_the_oath_db_defaults_to_its_own_file_in_home(tmp_path: Path) -> None:
    assert database_urls(tmp_path).oath_db == sqlite_url(tmp_path / "oath.db")
    (tmp_path / "databases.yaml").write_text("user_db: postgresql+asyncpg://g@db/g\n")
    assert database_urls(tmp_path).oath_db == sqlite_url(tmp_path / "oath.db")


def test_the_oath_db_is_read_from_databases_yaml(tmp_path: Path) -> None:
    pg = "postgresql+asyncpg://gatehouse@/oath?host=db1,db2&port=5432,5432"
    (tmp_path / "databases.yaml").write_text(f"user_db: sqlite+aiosqlite:///u.db\noath_db: {pg}\n")
    urls = database_urls(tmp_path)
    assert (urls.user_db, urls.session_db, urls.oath_db) == (
        sqlite_url(tmp_path / "u.db"),
        sqlite_url(tmp_path / "u.db"),
        pg,
    )
    (tmp_path / "databases.yaml").write_text(
        "user_db: sqlite+aiosqlite:///u.db\noath_db: sqlite+aiosqlite:///otp/tokens.db\n"
    )
    assert database_urls(tmp_path).oath_db == sqlite_url(tmp_path / "otp" / "tokens.db")
    (tmp_path / "databases.yaml").write_text("user_db: sqlite+aiosqlite:///u.db\noath_db: x\n")
    with pytest.raises(Exception, match="oath_db: not a database URL"):
        database_urls(tmp_path)


def test_prepare_home_tightens_the_oath_db(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    oath = home / "oath.db"
    oath.write_bytes(b"")
    os.chmod(oath, 0o644)
    prepare_home(home)
    assert stat.S_IMODE(oath.stat().st_mode) == 0o600

"""Brute-force rules: the pure functions, and the atomic SQL that must agree with them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gatehouse.authentication import lockout
from gatehouse.authentication.lockout import Counter, Rule, Verdict
from gatehouse.storage.engine import Database

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
RULE = Rule.of(3, window=60, lock=30)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(times: list[float], rule: Rule = RULE) -> list[Counter]:
    counter: Counter | None = None
    out = []
    for t in times:
        counter = lockout.after_failure(counter, at(t), rule)
        out.append(counter)
    return out


def test_counts_within_the_window_and_locks_at_the_limit() -> None:
    first, second, third = run([0, 10, 20])
    assert (first.count, first.locked_until) == (1, None)
    assert (second.count, second.first_at) == (2, at(0))
    assert (third.count, third.locked_until, third.expires_at) == (3, at(50), at(110))


@pytest.mark.parametrize(
    ("now", "verdict"),
    [
        (20, Verdict(True, 30)),
        (49.2, Verdict(True, 1)),
        (49.99, Verdict(True, 1)),
        (50, Verdict(False)),
        (70, Verdict(False)),
    ],
)
def test_check(now: float, verdict: Verdict) -> None:
    locked = run([0, 10, 20])[-1]
    assert lockout.check(locked, at(now)) == verdict


def test_a_count_starts_over_a_window_after_its_last_attempt() -> None:
    # RULE: 3 attempts, window 60 s. Each attempt keeps the row alive for the window.
    assert [c.count for c in run([0, 59, 118])] == [1, 2, 3]
    assert [c.count for c in run([0, 59, 119, 178])] == [1, 2, 1, 2]
    assert run([0, 59])[-1].expires_at == at(119)


def test_attempts_during_a_lock_are_refused_and_not_counted() -> None:
    locked = run([0, 1, 2])[-1]
    assert locked.locked_until == at(32)
    again, counted = lockout.reserve_rule(locked, at(10), RULE)
    assert (again, counted) == (locked, False)


def test_each_attempt_after_a_lock_doubles_it_up_to_the_cap() -> None:
    rule = Rule.of(3, window=60, lock=30, lock_max=100)
    counters: list[Counter] = []
    counter: Counter | None = None
    t = 0.0
    for _ in range(7):
        counter, counted = lockout.reserve_rule(counter, at(t), rule)
        assert counted
        counters.append(counter)
        if counter.locked_until is not None:
            t = (counter.locked_until - T0).total_seconds()
    locks = [
        (c.locked_until - c.first_at).total_seconds() if c.locked_until else None for c in counters
    ]
    assert [c.count for c in counters] == [1, 2, 3, 4, 5, 6, 7]
    assert locks[:3] == [None, None, 30]
    # 30, then 60, then capped at 100 — each measured from its own attempt.
    lock_lengths = [(c.locked_until - at(0)).total_seconds() for c in counters[2:]]
    assert lock_lengths == [30, 90, 190, 290, 390]
    # A row lives a window past the end of its last lock.
    assert counters[-1].expires_at == at(450)


def test_release_gives_back_one_attempt() -> None:
    locked = run([0, 1, 2])[-1]
    released = lockout.release_rule(locked, RULE)
    assert released is not None
    assert (released.count, released.locked_until) == (2, None)
    assert lockout.release_rule(run([0])[0], RULE) is None


def test_single_failure_rule_locks_at_once() -> None:
    assert run([0], Rule.of(1, 60, 30))[0].locked_until == at(30)


def test_lock_max_defaults_to_four_locks() -> None:
    assert Rule.of(5, 900, 900).lock_max == timedelta(hours=1)
    assert Rule.of(5, 900, 900, 60).lock_max == timedelta(seconds=900)


def test_combine_takes_the_longest_lock() -> None:
    assert lockout.combine([]) == lockout.OPEN
    assert lockout.combine([Verdict(False), Verdict(True, 5), Verdict(True, 9)]) == Verdict(True, 9)


def test_keys() -> None:
    assert lockout.account_key("alice") == "user:alice"
    assert lockout.ip_key("2001:DB8:0::1") == "ip:2001:db8::1"
    assert lockout.ip_key("192.0.2.1") == "ip:192.0.2.1"
    assert lockout.ip_key("::ffff:192.0.2.1") == "ip:192.0.2.1"


# -- the SQL agrees with the rules ---------------------------------------------------------


@pytest.fixture
def db(user_db: str) -> Iterator[tuple[asyncio.Runner, Database]]:
    with asyncio.Runner() as runner:
        database = Database(user_db)
        try:
            yield runner, database
        finally:
            runner.run(database.dispose())


_keys = itertools.count()

rules = st.builds(
    Rule.of,
    st.integers(1, 5),
    st.integers(1, 8).map(float),
    st.integers(1, 8).map(float),
    st.none() | st.integers(1, 40).map(float),
)
# Whole and half seconds hit the window and lock boundaries exactly, where off-by-one
# comparisons would differ.
gaps = st.lists(st.integers(0, 20).map(lambda n: n / 2), min_size=1, max_size=12)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rule=rules, gaps=gaps)
@example(rule=Rule.of(3, 4, 8), gaps=[0, 1, 3])  # the third failure is exactly at window end
@example(rule=Rule.of(2, 8, 2), gaps=[0, 1, 2])  # the third failure is exactly at lock end
def test_sql_matches_the_rules(
    db: tuple[asyncio.Runner, Database], rule: Rule, gaps: list[float]
) -> None:
    runner, database = db
    key = f"user:k{next(_keys)}"
    times = list(itertools.accumulate(gaps))

    async def go() -> list[tuple[Counter, bool]]:
        out = []
        for t in times:
            async with database.connect() as conn:
                out.append(await lockout.reserve(conn, key, at(t), rule))
        async with database.connect() as conn:
            stored = await lockout.load(conn, [key])
        assert stored[key] == out[-1][0]
        return out

    expected: list[tuple[Counter, bool]] = []
    counter: Counter | None = None
    for t in times:
        counter, counted = lockout.reserve_rule(counter, at(t), rule)
        expected.append((counter, counted))
    # The same states, and the same attempts counted (True) or refused (False).
    assert runner.run(go()) == expected


def test_reset(db: tuple[asyncio.Runner, Database]) -> None:
    runner, database = db

    async def go() -> dict[str, Counter]:
        async with database.connect() as conn:
            await lockout.record_failure(conn, "user:a", T0, RULE)
            await lockout.record_failure(conn, "ip:192.0.2.1", T0, RULE)
            await lockout.reset(conn, "user:a")
            return await lockout.load(conn, ["user:a", "ip:192.0.2.1"])

    assert list(runner.run(go())) == ["ip:192.0.2.1"]


def test_concurrent_failures_are_all_counted(db: tuple[asyncio.Runner, Database]) -> None:
    """Many simultaneous failures on one key, each on its own connection: none is lost."""
    runner, database = db
    rule = Rule.of(1000, 600, 600)

    async def one() -> int:
        async with database.connect() as conn:
            return (await lockout.record_failure(conn, "user:hot", T0, rule)).count

    async def go() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(25))))

    assert sorted(runner.run(go())) == list(range(1, 26))


def test_concurrent_reservations_let_exactly_max_failures_through(
    db: tuple[asyncio.Runner, Database],
) -> None:
    """40 attempts at once on one key, each on its own connection: 5 may check a password."""
    runner, database = db
    rule = Rule.of(5, 600, 600)

    async def one() -> bool:
        async with database.connect() as conn:
            return (await lockout.reserve(conn, "user:hot", T0, rule))[1]

    async def go() -> list[bool]:
        return list(await asyncio.gather(*(one() for _ in range(40))))

    assert runner.run(go()).count(True) == 5


def test_release_and_purge_in_sql(db: tuple[asyncio.Runner, Database]) -> None:
    runner, database = db

    async def go() -> tuple[dict[str, Counter], dict[str, Counter], int]:
        async with database.connect() as conn:
            for _ in range(3):
                await lockout.reserve(conn, "ip:192.0.2.7", T0, RULE)
            await lockout.reserve(conn, "ip:192.0.2.8", T0, RULE)
            await lockout.reserve(conn, "ip:192.0.2.9", at(100), RULE)
            await lockout.release(conn, "ip:192.0.2.7", RULE)
            await lockout.release(conn, "ip:192.0.2.8", RULE)
            released = await lockout.load(conn, ["ip:192.0.2.7", "ip:192.0.2.8"])
            # 192.0.2.7 expires at 90 s (lock end + window), 192.0.2.9 at 160 s.
            gone = await lockout.purge(conn, at(90))
            left = await lockout.load(conn, ["ip:192.0.2.7", "ip:192.0.2.9"])
            return released, left, gone

    released, left, gone = runner.run(go())
    assert list(released) == ["ip:192.0.2.7"]
    assert (released["ip:192.0.2.7"].count, released["ip:192.0.2.7"].locked_until) == (2, None)
    assert (gone, list(left)) == (1, ["ip:192.0.2.9"])


def test_reset_of_an_account_forgets_its_devices(db: tuple[asyncio.Runner, Database]) -> None:
    runner, database = db
    keys = ["user:a_b", "dev:a_b:AAAAAAAAAAA", "dev:aXb:AAAAAAAAAAA", "unknown:7"]
    trusts = ["td:a_b:AAAAAAAAAAA", "td:aXb:AAAAAAAAAAA"]

    async def go() -> tuple[list[str], list[bool]]:
        async with database.connect() as conn:
            for key in keys:
                await lockout.reserve(conn, key, T0, RULE)
            await lockout.trust(conn, "a_b", "AAAAAAAAAAA", T0)
            await lockout.trust(conn, "aXb", "AAAAAAAAAAA", T0)
            await lockout.reset(conn, "user:a_b")
            left = sorted(await lockout.load(conn, keys + trusts))
            valid = [
                await lockout.trusted(conn, name, "AAAAAAAAAAA", at(60))
                for name in ("a_b", "aXb", "nobody")
            ]
            return left, valid

    # '_' in the name is not a LIKE wildcard: aXb's device and its trust stay.
    left, valid = runner.run(go())
    assert left == ["dev:aXb:AAAAAAAAAAA", "td:aXb:AAAAAAAAAAA", "unknown:7"]
    assert valid == [False, True, False]


def test_unknown_names_share_a_bounded_set_of_keys() -> None:
    keys = {lockout.unknown_key(f"ghost{n}") for n in range(20000)}
    assert len(keys) <= lockout.UNKNOWN_BUCKETS
    assert lockout.unknown_key("ghost1") == lockout.unknown_key("ghost1")
    assert len(lockout.device_key("x" * 64, "A" * 11)) == 80

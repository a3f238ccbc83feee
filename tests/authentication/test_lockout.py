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
    assert (third.count, third.locked_until) == (3, at(50))


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


def test_window_expiry_starts_over() -> None:
    assert [c.count for c in run([0, 59, 60, 61])] == [1, 2, 1, 2]


def test_failure_after_a_lock_starts_over() -> None:
    counters = run([0, 1, 2, 32, 33])
    assert [c.count for c in counters] == [1, 2, 3, 1, 2]
    assert counters[-1].locked_until is None


def test_failure_during_a_lock_extends_it() -> None:
    assert run([0, 1, 2, 10])[-1].locked_until == at(40)


def test_single_failure_rule_locks_at_once() -> None:
    assert run([0], Rule.of(1, 60, 30))[0].locked_until == at(30)


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

    async def go() -> list[Counter]:
        out = []
        for t in times:
            async with database.connect() as conn:
                out.append(await lockout.record_failure(conn, key, at(t), rule))
        async with database.connect() as conn:
            stored = await lockout.load(conn, [key])
        assert stored[key] == out[-1]
        return out

    assert runner.run(go()) == run(times, rule)


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

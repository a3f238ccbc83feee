"""The retry rules of :mod:`gatehouse.storage.retry`, in-process: a transaction context that
fails as told (before or at its commit), and what the loop then does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.retry import Outage, transaction


class FakeDatabase:
    """``plan``: per attempt, ``"ok"``, ``"down"`` (fails before the work), ``"commit"``
    (the work ran, then the commit is lost *after* it took effect) or ``"rollback"`` (the
    commit is lost and did not take effect)."""

    def __init__(self, *plan: str) -> None:
        self.plan = list(plan)
        self.committed: list[str] = []
        self.attempts = 0

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[list[str]]:
        self.attempts += 1
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "down":
            raise DatabaseUnavailable("database unavailable: connection refused")
        pending: list[str] = []
        yield pending
        if step in ("ok", "commit"):
            self.committed.extend(pending)
        if step in ("commit", "rollback"):
            raise DatabaseUnavailable("database unavailable: connection lost")


async def insert(pending: list[str]) -> str:
    pending.append("row")
    return "inserted"


def run(db: FakeDatabase, wait: float = 5.0, resolve: bool = True) -> str:
    async def found(pending: list[str]) -> str | None:
        return "found" if "row" in db.committed else None

    return asyncio.run(transaction(db.begin, insert, wait=wait, resolve=found if resolve else None))


def test_an_unavailable_database_is_waited_for() -> None:
    db = FakeDatabase("down", "down", "down")
    assert run(db) == "inserted"
    assert (db.attempts, db.committed) == (4, ["row"])


def test_a_commit_that_took_effect_is_found_by_reading_not_done_again() -> None:
    db = FakeDatabase("commit")
    assert run(db) == "found"
    assert db.committed == ["row"]


def test_a_commit_that_did_not_take_effect_is_done_again() -> None:
    db = FakeDatabase("rollback")
    assert run(db) == "inserted"
    assert db.committed == ["row"]


def test_without_resolve_the_work_is_simply_run_again() -> None:
    # For work whose repetition is harmless: the caller says so by giving no resolve.
    db = FakeDatabase("commit")
    assert run(db, resolve=False) == "inserted"
    assert db.committed == ["row", "row"]


def test_the_wait_is_bounded() -> None:
    db = FakeDatabase(*["down"] * 1000)
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        run(db, wait=0.3)
    assert 0.3 <= time.monotonic() - start < 1.5
    db = FakeDatabase("down")
    with pytest.raises(DatabaseUnavailable):
        run(db, wait=0)  # no wait: one attempt
    assert db.attempts == 1


def test_other_errors_are_not_retried() -> None:
    attempts = 0

    async def broken(pending: list[str]) -> str:
        nonlocal attempts
        attempts += 1
        raise ValueError("a bad query")

    with pytest.raises(ValueError, match="bad query"):
        asyncio.run(transaction(FakeDatabase().begin, broken, wait=5))
    assert attempts == 1


def active(outage: Outage) -> bool:
    return outage.active


def test_the_outage_is_noted_and_ends_when_a_probe_succeeds() -> None:
    async def go() -> None:
        answers = ["down", "down", "ok"]

        async def probe() -> None:
            if answers.pop(0) == "down":
                raise DatabaseUnavailable("down")

        outage = Outage(probe, interval=0.01)
        db = FakeDatabase("down")
        with pytest.raises(DatabaseUnavailable):
            await transaction(db.begin, insert, wait=0, outage=outage)
        assert active(outage)
        for _ in range(100):
            if not active(outage):
                break
            await asyncio.sleep(0.01)
        assert not active(outage)
        assert answers == []
        await outage.close()

    asyncio.run(go())

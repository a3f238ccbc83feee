"""AckWriter: acknowledgements that arrive together are written together (in-process)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gatehouse.administration.acks import AckWriter
from gatehouse.administration.errors import UnknownService
from gatehouse.administration.store import Ack
from gatehouse.errors import GatehouseError


class SlowDatabase:
    """A write takes 20 ms, like a commit on a busy disk; it remembers every batch."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def write(self, acks: Sequence[Ack]) -> list[GatehouseError | None]:
        self.batches.append([a.service_id for a in acks])
        await asyncio.sleep(0.02)
        if self.fail:
            raise GatehouseError("database unavailable")
        return [UnknownService(a.service_id) if a.service_id == "ghost" else None for a in acks]


def test_twenty_acks_at_once_take_two_transactions_and_each_caller_its_outcome() -> None:
    async def scenario() -> None:
        db = SlowDatabase()
        writer = AckWriter(db.write)
        first = asyncio.create_task(writer.record(Ack("s0", 1)))
        await asyncio.sleep(0)  # the first starts a transaction; the rest arrive meanwhile
        ids = [f"s{i}" for i in range(1, 20)] + ["ghost"]
        rest = [writer.record(Ack(i, 1)) for i in ids]
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        assert db.batches == [["s0"], ids]
        assert writer.batches == 2
        assert outcomes[:-1] == [None] * 20
        assert isinstance(outcomes[-1], UnknownService)

    asyncio.run(scenario())


def test_a_failed_write_fails_every_ack_of_its_batch_and_the_next_batch_is_written() -> None:
    async def scenario() -> None:
        db = SlowDatabase(fail=True)
        writer = AckWriter(db.write)
        results = await asyncio.gather(
            *(writer.record(Ack(f"s{i}", 1)) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, GatehouseError) for r in results)
        db.fail = False
        await writer.record(Ack("s9", 2))
        assert db.batches[-1] == ["s9"]

    asyncio.run(scenario())


def test_a_caller_that_goes_away_leaves_its_ack_to_be_written() -> None:
    async def scenario() -> None:
        db = SlowDatabase()
        writer = AckWriter(db.write)
        task = asyncio.create_task(writer.record(Ack("s1", 1)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert db.batches == [["s1"]]

    asyncio.run(scenario())

"""Acknowledgements written in groups: one transaction for all that arrive together.

A publish wakes every service's long poll at once, so their acknowledgements arrive within
a few milliseconds of each other. Written one transaction each, they queue on the
database's write lock (SQLite's busy handler sleeps between tries, up to 100 ms a time):
the last service of twenty waited hundreds of milliseconds for the others' commits. Here
the first acknowledgement starts a transaction and every one that arrives while it commits
goes into the next, so a publish to N services costs a few commits, whatever N.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from gatehouse.administration.store import Ack
from gatehouse.errors import GatehouseError

Write = Callable[[Sequence[Ack]], Awaitable[Sequence[GatehouseError | None]]]


class AckWriter:
    """Batches :class:`Ack` records into ``write`` calls (one transaction each), one at a
    time; each caller learns its own outcome."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._pending: list[tuple[Ack, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: Transactions written (for tests and metrics).
        self.batches = 0

    async def record(self, ack: Ack) -> None:
        """Write ``ack`` with whatever else is waiting; raises what its write raised, or
        the error its own record met (:class:`UnknownService`)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((ack, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="acknowledgements")
        # Shielded: a caller that goes away leaves its ack to be written with the others.
        await asyncio.shield(done)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            self.batches += 1
            try:
                outcomes = await self._write([ack for ack, _ in batch])
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if done.done():
                    continue
                if outcome is None:
                    done.set_result(None)
                else:
                    done.set_exception(outcome)

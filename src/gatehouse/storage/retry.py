"""Waiting for the database through a failover: whole transactions tried again, bounded.

When the PostgreSQL primary is lost, its standby takes over within seconds; work that needs
the database waits for it (up to ``database.failover_wait``, 20 s by default) instead of
failing the user's request. A transaction that fails because the database is unavailable
(:class:`~gatehouse.storage.errors.DatabaseUnavailable`) is run again from its start, on a new
connection, until it commits or the wait is over; then the last error is raised (the caller
answers 503 as before).

A failure *before* the commit rolled the transaction back: running it again is always right.
A failure *at* the commit (the connection lost while COMMIT was under way) leaves its outcome
unknown: the transaction may be on the new primary. Such a transaction is not guessed about:

* work whose repetition is harmless (a conditional update, a delete, a read) is simply run
  again (``resolve`` None);
* work that must not happen twice passes ``resolve``: a read, run first on the next attempt,
  that finds out whether the work committed (e.g. the session row with the id chosen before
  the write is there) and returns its result; ``None`` means it did not, and the work runs.

:class:`Outage` remembers that the database is unavailable, so readers that can answer
without it (the Policy service's decisions on sessions it read recently) do not wait, and
probes it in the background until it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from gatehouse.storage.errors import DatabaseUnavailable

log = logging.getLogger("gatehouse.storage")

T = TypeVar("T")
C = TypeVar("C")
P = ParamSpec("P")

#: How long work that needs the database waits for it by default, seconds: more than a
#: Patroni failover with the documented settings takes (ttl 10 s), less than a browser's patience.
DEFAULT_FAILOVER_WAIT = 20.0
#: Pauses between attempts: short at first (a pooled connection that died is replaced at
#: once), then every half second.
FIRST_DELAY = 0.05
MAX_DELAY = 0.5


class CommitUnknown(Exception):
    """Internal: the transaction's COMMIT failed; it may or may not have committed."""


class Outage:
    """Whether the database answered the last time it was asked, and since when it did not.

    ``probe`` (a trivial query) is run in the background while the database is unavailable,
    so the outage ends as soon as the database is back even when nobody else asks it.
    """

    def __init__(
        self,
        probe: Callable[[], Awaitable[None]] | None = None,
        interval: float = MAX_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self.interval = interval
        self.clock = clock
        #: When the first failure of the current outage was seen; None while available.
        self.since: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def age(self) -> float:
        """Seconds since the outage began (0 while the database is available)."""
        return 0.0 if self.since is None else self.clock() - self.since

    def failed(self, error: BaseException) -> None:
        if self.since is None:
            self.since = self.clock()
            log.warning("database unavailable, waiting for it: %s", error)
            self._start_probe()

    def succeeded(self) -> None:
        if self.since is not None:
            log.info("database available again after %.1fs", self.clock() - self.since)
            self.since = None

    def _start_probe(self) -> None:
        if self._probe is None or (self._task is not None and not self._task.done()):
            return
        try:
            self._task = asyncio.get_running_loop().create_task(self._probe_until_back())
        except RuntimeError:  # no running loop (a synchronous caller): nobody to probe for
            self._task = None

    async def _probe_until_back(self) -> None:
        assert self._probe is not None
        while self.since is not None:
            await asyncio.sleep(self.interval)
            try:
                await self._probe()
            except DatabaseUnavailable:
                continue
            except Exception:  # not an outage we can wait out: leave it to the callers
                log.exception("database probe failed")
                return
            self.succeeded()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None


async def _attempt(
    begin: Callable[[], AbstractAsyncContextManager[C]], work: Callable[[C], Awaitable[T]]
) -> T:
    committing = False
    try:
        async with begin() as handle:
            result = await work(handle)
            committing = True  # leaving the block commits
        return result
    except DatabaseUnavailable as error:
        if committing:
            raise CommitUnknown() from error
        raise


async def transaction(
    begin: Callable[[], AbstractAsyncContextManager[C]],
    work: Callable[[C], Awaitable[T]],
    *,
    wait: float,
    outage: Outage | None = None,
    resolve: Callable[[C], Awaitable[T | None]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``work`` in a transaction from ``begin`` (a context that commits when it ends and
    translates driver errors into :class:`DatabaseUnavailable`), again from the start while
    the database is unavailable, for at most ``wait`` seconds.

    ``resolve``: see the module docstring. Errors other than an unavailable database are
    raised at once (a retry would not help).

    Raises:
        DatabaseUnavailable: still unavailable after ``wait`` seconds.
    """
    deadline = clock() + wait
    delay = FIRST_DELAY
    unknown = False
    while True:
        try:
            if unknown and resolve is not None:
                found = await _attempt(begin, resolve)
                if found is not None:
                    if outage is not None:
                        outage.succeeded()
                    return found
                unknown = False
            result = await _attempt(begin, work)
        except (DatabaseUnavailable, CommitUnknown) as exc:
            error = exc.__cause__ if isinstance(exc, CommitUnknown) else exc
            assert isinstance(error, DatabaseUnavailable)
            unknown = unknown or isinstance(exc, CommitUnknown)
            if outage is not None:
                outage.failed(error)
            left = deadline - clock()
            if left <= 0:
                raise error from None
            await asyncio.sleep(min(delay, left))
            delay = min(MAX_DELAY, delay * 2)
            continue
        if outage is not None:
            outage.succeeded()
        return result


@asynccontextmanager
async def _no_transaction() -> AsyncIterator[None]:
    yield None


@dataclass(frozen=True, slots=True)
class Waiting:
    """How long a store's work waits for its database (``wait``, seconds; 0: one attempt, for
    command-line tools) and the :class:`Outage` it reports to. A store that holds an engine
    rather than a :class:`~gatehouse.storage.engine.Database` is given one
    (``Database.waiting``)."""

    wait: float = 0.0
    outage: Outage | None = field(default=None, compare=False)

    async def run(
        self,
        begin: Callable[[], AbstractAsyncContextManager[C]],
        work: Callable[[C], Awaitable[T]],
        resolve: Callable[[C], Awaitable[T | None]] | None = None,
    ) -> T:
        """:func:`transaction` with this wait and outage."""
        return await transaction(begin, work, wait=self.wait, outage=self.outage, resolve=resolve)

    async def again(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call`` (one or more whole transactions, each committed inside it) run again from
        its start while the database is unavailable. Only for work whose repetition is
        harmless (reads, conditional updates, deletes): a commit cut off inside ``call``
        cannot be told from a failure before it, and is simply run again."""
        return await transaction(
            _no_transaction, lambda _: call(), wait=self.wait, outage=self.outage
        )


#: One attempt, no outage tracking: what a store built without a wait does.
NO_WAIT = Waiting()


class HasWaiting(Protocol):
    waiting: Waiting


S = TypeVar("S", bound=HasWaiting)


def waits(
    method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """A store method run again whole while its database is unavailable (``self.waiting``):
    :meth:`Waiting.again`, so only for methods whose repetition is harmless."""

    @wraps(method)
    async def waiting(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.waiting.again(lambda: method(self, *args, **kwargs))

    return waiting

"""The delivery workers: claim due messages from the outbox with a lease, try their channels in
order, and record the outcome.

A message accepted by a service with a worker free is stored already leased to that service
and handed to the worker at once (:meth:`Deliverer.reserve`, :meth:`Deliverer.take`): no claim,
no wait. Otherwise one dispatcher per service claims as many due messages as it has free
workers (``workers``) and delivers each in a task of its own; it claims again at once when a
message was accepted here without a worker (:meth:`Deliverer.wake`), when a worker comes free
while messages may be waiting, and every ``poll_interval`` (messages other services accepted,
retries that came due, leases that ran out). A message goes out over the first channel that
takes it; when every channel failed it is due again after an exponential backoff
(:func:`backoff`), until its expiry: then it is dead-lettered (``expired``) with an event on
``gatehouse.audit``. A message is never handed to a channel at or after its expiry, and its
lease is lengthened before a channel attempt that could outlast it (a service that lost the
lease stops). Deliveries are recorded (sent, body erased) together, a few milliseconds apart.

Delivery is at least once: a service that dies after a channel took a message and before it
was recorded sent leaves a message another service delivers again after the lease. Every
delivery of one message carries the same idempotency key (``Message-ID: <ID@gatehouse>``,
``Idempotency-Key: ID``). Nothing here logs or stores a message's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatehouse.distribution.bodies import BodyKeys, KeyringError
from gatehouse.distribution.channels import ChannelFailure, Outgoing, Sender, plan
from gatehouse.distribution.config import DeliverySettings
from gatehouse.distribution.outbox import MessageRow, Outbox
from gatehouse.metrics.service import DELIVERIES
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.types import utcnow

__all__ = ["Deliverer", "Stats", "backoff", "lease_owner"]

log = logging.getLogger("gatehouse.distribution")
audit = logging.getLogger("gatehouse.audit")

#: Seconds a lease lengthened for a channel attempt lasts beyond twice the channel's timeout.
LEASE_MARGIN = 1.0
#: How often sent and expired messages older than :data:`RETENTION` are deleted.
PURGE_INTERVAL = 600.0
RETENTION = timedelta(days=7)
#: Seconds a delivery waits to be written with those that finish right after it.
RECORD_DELAY = 0.005
#: Tries to record a delivery while the outbox DB is briefly unavailable.
MARK_TRIES = 5


def backoff(rounds: int, initial: float, maximum: float) -> float:
    """Seconds before the next round after ``rounds`` earlier rounds all failed (0: the first
    failed round): ``initial``, doubled each round, at most ``maximum``."""
    return float(min(maximum, initial * 2 ** min(rounds, 40)))


def lease_owner(service_id: str) -> str:
    """A lease owner name unique to this process: the service id, the pid, a random part."""
    return f"{service_id}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(slots=True)
class Stats:
    sent: int = 0
    failed_rounds: int = 0
    expired: int = 0
    attempts: int = 0


class Deliverer:
    """The delivery workers of one service."""

    def __init__(
        self,
        outbox: Outbox,
        keys: BodyKeys | None,
        owner: str,
        settings: DeliverySettings,
        senders: Sequence[Sender],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.outbox = outbox
        self.keys = keys
        self.owner = owner
        self.settings = settings
        self.senders: tuple[Sender, ...] = tuple(senders)
        self.clock = clock
        self.stats = Stats()
        self._wake = asyncio.Event()
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._db_error: str | None = None
        self._last_expiry_sweep = 0.0
        self._last_purge = 0.0
        self._retired: list[asyncio.Task[None]] = []
        #: Workers promised to messages being accepted here (:meth:`reserve`).
        self._reserved = 0
        #: Due messages may be waiting for a worker here (the last claim took as many as it
        #: could, or a message was accepted without one): claim again as workers come free.
        self._backlog = True
        #: Deliveries done and not yet recorded: written together by :meth:`_record`.
        self._marks: list[tuple[MessageRow, str, int]] = []
        self._marks_waiting = asyncio.Event()
        self._recorder: asyncio.Task[None] | None = None

    # -- configuration ----------------------------------------------------------------------

    def configure(self, settings: DeliverySettings, senders: Sequence[Sender]) -> None:
        """Use ``settings`` and ``senders`` from now on; deliveries under way finish with the
        channels they started with, which are closed once they are done."""
        old = self.senders
        self.settings = settings
        self.senders = tuple(senders)
        in_flight = list(self._busy.values())
        self._retired.append(asyncio.create_task(_close_after(old, in_flight)))
        self.wake()

    def wake(self) -> None:
        """Look for due messages now (a message was just accepted here)."""
        self._backlog = True
        self._wake.set()

    @property
    def busy(self) -> int:
        return len(self._busy)

    def reserve(self) -> tuple[str, datetime] | None:
        """A worker for a message being accepted here, if one is free: the lease to store
        it with (``(owner, until)``); then :meth:`take` (or :meth:`unreserve`) must follow."""
        if self._stopping or self.keys is None or not self.senders:
            return None
        if len(self._busy) + self._reserved >= self.settings.workers:
            return None
        self._reserved += 1
        return self.owner, self.clock() + timedelta(seconds=self.settings.lease)

    def unreserve(self) -> None:
        self._reserved -= 1

    def take(self, message: MessageRow) -> None:
        """Deliver ``message``, stored leased to this service with :meth:`reserve`'s lease."""
        self._reserved -= 1
        self._start(message)

    # -- the dispatcher ---------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and deliver until :meth:`stop`."""
        loop = asyncio.get_running_loop()
        self._recorder = asyncio.create_task(self._record_forever())
        while not self._stopping:
            self._wake.clear()
            full_claim = False
            try:
                now_mono = loop.time()
                if now_mono - self._last_expiry_sweep >= self.settings.poll_interval:
                    self._last_expiry_sweep = now_mono
                    await self._expire_due()
                if now_mono - self._last_purge >= PURGE_INTERVAL:
                    self._last_purge = now_mono
                    gone = await self.outbox.purge(self.clock() - RETENTION)
                    if gone:
                        log.info("deleted %d sent or expired messages older than 7 days", gone)
                free = self.settings.workers - len(self._busy) - self._reserved
                if free > 0:
                    claimed = await self.outbox.claim(
                        self.owner, free, self.settings.lease, self.clock()
                    )
                    for message in claimed:
                        self._start(message)
                    full_claim = len(claimed) == free
                    self._backlog = full_claim
                self._db_ok()
            except DatabaseUnavailable as error:
                self._db_down(error)
            except Exception:
                log.exception("the delivery dispatcher failed; trying again")
            if full_claim and len(self._busy) + self._reserved < self.settings.workers:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval):
                    await self._wake.wait()

    def _start(self, message: MessageRow) -> None:
        if message.id in self._busy:  # our own lease ran out and we claimed it again
            return
        task = asyncio.create_task(self._deliver_safely(message))
        self._busy[message.id] = task
        task.add_done_callback(functools.partial(self._done, message.id))

    def _done(self, message_id: str, _task: asyncio.Task[None]) -> None:
        self._busy.pop(message_id, None)
        if self._backlog:  # a worker came free and messages may be waiting for one
            self._wake.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; let deliveries under way finish for ``grace`` seconds, then give the
        rest back (due at once for the other services) and close the channels."""
        self._stopping = True
        self._wake.set()
        busy = list(self._busy.values())
        if busy:
            _done, pending = await asyncio.wait(busy, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for task in self._retired:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
        if self._marks:
            with contextlib.suppress(DatabaseUnavailable):
                await self._record()
        for sender in self.senders:
            with contextlib.suppress(Exception):
                await sender.aclose()

    # -- one message ------------------------------------------------------------------------

    async def _deliver_safely(self, message: MessageRow) -> None:
        try:
            await self.deliver(message)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.outbox.release(message.id, self.owner))
            raise
        except DatabaseUnavailable as error:
            self._db_down(error)
        except Exception:
            log.exception("delivering message %s failed", message.id)

    async def deliver(self, message: MessageRow) -> None:
        """Try ``message``'s channels in order (it is leased to this service)."""
        if self.clock() >= message.expires_at:
            await self._expire_due(message.id)
            return
        if self.keys is None:  # not loaded yet: give it back for now
            await self.outbox.release(message.id, self.owner)
            return
        if message.body_ciphertext is None or message.body_key_id is None:
            await self._fail(message, 0, "the message has no body (erased)")
            return
        try:
            body = self.keys.open(message.id, message.body_key_id, message.body_ciphertext)
        except KeyringError as error:
            log.error("message %s: the body cannot be opened: %s", message.id, error)
            await self._fail(message, 0, "the body cannot be opened with the outbox key file")
            return
        steps = plan(self.senders, message.channels, message.email, message.phone)
        if not steps:
            await self._fail(message, 0, "no configured channel for the message's recipients")
            return
        lease_until = message.lease_until or self.clock()
        attempts = 0
        errors: list[str] = []
        for sender, to in steps:
            now = self.clock()
            if now >= message.expires_at:
                errors.append("expired before the next channel")
                break
            # A channel may take twice its timeout (connect, then the exchange): the lease
            # must outlast that, or another service could deliver the message meanwhile.
            longest = sender.timeout * 2
            if (lease_until - now).total_seconds() < longest:
                extra = max(longest + LEASE_MARGIN, self.settings.lease)
                lease_until = now + timedelta(seconds=extra)
                if not await self.outbox.extend(message.id, self.owner, lease_until):
                    log.warning(
                        "message %s: lease lost, left to the service holding it", message.id
                    )
                    self.stats.attempts += attempts
                    return
            attempts += 1
            try:
                await sender.send(Outgoing(message.id, to, body.subject, body.text))
            except ChannelFailure as failure:
                DELIVERIES.labels(sender.name, "failed").inc()
                errors.append(str(failure))
                log.info("message %s: channel %s failed: %s", message.id, sender.name, failure)
                continue
            except Exception as error:  # a bug in a channel must not stop the others
                DELIVERIES.labels(sender.name, "failed").inc()
                errors.append(f"{sender.name}: internal error ({type(error).__name__})")
                log.error(
                    "message %s: channel %s failed unexpectedly: %s",
                    message.id,
                    sender.name,
                    type(error).__name__,
                )
                continue
            DELIVERIES.labels(sender.name, "sent").inc()
            await self._mark_sent(message, sender.name, attempts)
            return
        self.stats.attempts += attempts
        await self._fail(message, attempts, "; ".join(errors))

    async def _mark_sent(self, message: MessageRow, channel: str, attempts: int) -> None:
        """Record a delivery: queued for :meth:`_record_forever`, which writes every delivery
        done meanwhile in one transaction (the worker is free at once). A service that dies
        before the write has its message delivered again after the lease (at least once)."""
        self.stats.sent += 1
        self.stats.attempts += attempts
        self._marks.append((message, channel, attempts))
        self._marks_waiting.set()

    async def _record_forever(self) -> None:
        while True:
            await self._marks_waiting.wait()
            # Deliveries finishing within a few milliseconds are written together.
            await asyncio.sleep(RECORD_DELAY)
            self._marks_waiting.clear()
            for attempt in range(MARK_TRIES):
                try:
                    await self._record()
                    break
                except DatabaseUnavailable as error:
                    if attempt == MARK_TRIES - 1:
                        log.warning("deliveries not recorded yet: %s", error)
                        self._marks_waiting.set()
                    await asyncio.sleep(0.2 * 2**attempt)
                except Exception:
                    log.exception("recording deliveries failed")
                    await asyncio.sleep(1.0)
                    self._marks_waiting.set()
                    break

    async def _record(self) -> None:
        marks, self._marks = self._marks, []
        try:
            await self.outbox.mark_all_sent(
                [(message.id, channel, attempts) for message, channel, attempts in marks],
                self.clock(),
            )
        except BaseException:
            self._marks[:0] = marks  # kept for the next try
            raise
        now = self.clock()
        for message, channel, attempts in marks:
            log.info(
                "message %s (%s) sent via %s after %d attempt(s), %.0f ms after acceptance",
                message.id,
                message.purpose,
                channel,
                message.attempts + attempts,
                (now - message.created_at).total_seconds() * 1000,
            )

    async def _fail(self, message: MessageRow, attempts: int, error: str) -> None:
        self.stats.failed_rounds += 1
        wait = backoff(message.rounds, self.settings.backoff_initial, self.settings.backoff_max)
        due = self.clock() + timedelta(seconds=wait)
        await self.outbox.mark_failed(message.id, self.owner, attempts, error, due)
        log.warning(
            "message %s: every channel failed (%s); next round in %.1f s%s",
            message.id,
            error,
            wait,
            " (after its expiry: it will expire)" if due >= message.expires_at else "",
        )

    async def _expire_due(self, message_id: str | None = None) -> None:
        # A sweep takes only messages nobody is delivering; a message of this service's own
        # (``message_id``) is one it holds and found expired.
        owner = self.owner if message_id is not None else None
        expired = await self.outbox.expire(self.clock(), owner=owner, message_id=message_id)
        for message in expired:
            self.stats.expired += 1
            audit.warning(
                "message %s (%s%s) expired undelivered after %d attempt(s): %s",
                message.id,
                message.purpose,
                f" for {message.username}" if message.username else "",
                message.attempts,
                message.last_error or "never tried",
            )

    def _db_down(self, error: DatabaseUnavailable) -> None:
        if str(error) != self._db_error:
            log.warning("outbox DB unavailable, delivery waits: %s", error)
        self._db_error = str(error)

    def _db_ok(self) -> None:
        if self._db_error is not None:
            log.info("outbox DB available again, delivery resumes")
            self._db_error = None


async def _close_after(senders: Sequence[Sender], in_flight: list[asyncio.Task[None]]) -> None:
    if in_flight:
        await asyncio.wait(in_flight)
    for sender in senders:
        with contextlib.suppress(Exception):
            await sender.aclose()

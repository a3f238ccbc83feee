"""Session events for the Access Points, and their exchange between Policy instances.

:class:`EventHub` fans events out to every ``GET /internal/v1/events`` stream of this process:
``hello`` first, ``revoke`` when a session ends, ``policy`` when the service runs a new
configuration version (every cached decision may be wrong now), ``ping`` every few seconds.
A stream whose reader falls far behind is closed rather than allowed to grow: the Access
Point reconnects and flushes its cache, which is always safe.

Several Policy instances share one PostgreSQL session DB; :class:`PostgresBridge` tells the
others about revocations with ``NOTIFY`` and hears theirs with ``LISTEN``
(https://www.postgresql.org/docs/current/sql-notify.html). When its listening connection is
lost, notifications may have been missed, so every stream is closed to make the Access
Points flush their caches. On SQLite there is a single instance and nothing to share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import orjson

from gatehouse.storage.engine import asyncpg_connect_args

log = logging.getLogger(__name__)

PING_INTERVAL = 5.0
QUEUE_LIMIT = 10_000
CHANNEL = "gatehouse_session_revoked"
#: NOTIFY payloads must stay under 8000 bytes; 100 hashes of 32 characters do.
HASHES_PER_NOTIFY = 100

Event = dict[str, object]
_CLOSE: Event = {"type": "_close"}


class EventHub:
    """In-process broadcaster of session events to the event streams."""

    def __init__(
        self, instance: str, ping_interval: float = PING_INTERVAL, *, live: bool = True
    ) -> None:
        self.instance = instance
        self.ping_interval = ping_interval
        self._queues: set[asyncio.Queue[Event]] = set()
        #: Called with the hashes of every revocation heard, local or from other instances.
        self.revoke_listeners: list[Callable[[Sequence[str]], None]] = []
        #: Called when revocations may have been missed (the hub stops being live).
        self.reset_listeners: list[Callable[[], None]] = []
        self._live = asyncio.Event()
        self._stopping = False
        if live:
            self._live.set()

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def set_live(self, live: bool) -> None:
        """Whether this hub hears every revocation. While it does not (the LISTEN connection
        to the other instances is down), streams are ended and new ones wait before their
        ``hello``, so no Access Point trusts its cache on an incomplete feed."""
        if live or self._stopping:
            self._live.set()
        else:
            self._live.clear()
            for reset in self.reset_listeners:
                reset()
            self.close_all()

    @property
    def listeners(self) -> int:
        return len(self._queues)

    def publish(self, event: Event) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(queue)

    def revoked(self, id_hashes: Iterable[str]) -> None:
        hashes = list(id_hashes)
        for listener in self.revoke_listeners:
            listener(hashes)
        for id_hash in hashes:
            self.publish({"type": "revoke", "session": id_hash})

    def policy_changed(self, version: int) -> None:
        """The rules may have changed: every Access Point drops its cached decisions."""
        self.publish({"type": "policy", "version": version})

    def shutdown(self) -> None:
        """End every stream for good: the process is stopping."""
        self._stopping = True
        self._live.set()  # wakes streams waiting for their hello; they end at once
        self.close_all()

    def close_all(self) -> None:
        """End every stream (on shutdown, or when events may have been missed)."""
        for queue in list(self._queues):
            self._drop(queue)

    def _drop(self, queue: asyncio.Queue[Event]) -> None:
        self._queues.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(_CLOSE)

    async def stream(self) -> AsyncIterator[bytes]:
        """Newline-delimited JSON events until the hub closes the stream."""
        await self._live.wait()
        if self._stopping:
            return
        queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_LIMIT)
        self._queues.add(queue)
        try:
            yield line({"type": "hello", "instance": self.instance})
            next_ping = time.monotonic() + self.ping_interval
            while True:
                if queue.empty():
                    wait = next_ping - time.monotonic()
                    if wait <= 0:
                        next_ping = time.monotonic() + self.ping_interval
                        yield line({"type": "ping"})
                        continue
                    try:
                        event = await asyncio.wait_for(queue.get(), wait)
                    except TimeoutError:
                        continue
                else:
                    event = queue.get_nowait()
                if event is _CLOSE:
                    return
                yield line(event)
        finally:
            self._queues.discard(queue)


def line(event: Event) -> bytes:
    return orjson.dumps(event) + b"\n"


def notify_payloads(instance: str, id_hashes: Sequence[str]) -> list[str]:
    return [
        orjson.dumps(
            {"from": instance, "sessions": list(id_hashes[i : i + HASHES_PER_NOTIFY])}
        ).decode()
        for i in range(0, len(id_hashes), HASHES_PER_NOTIFY)
    ]


def parse_payload(instance: str, payload: str) -> list[str]:
    """Session hashes another instance revoked; empty for our own or malformed payloads."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(data, dict) or data.get("from") == instance:
        return []
    sessions = data.get("sessions")
    if not isinstance(sessions, list):
        return []
    return [s for s in sessions if isinstance(s, str)]


async def notify_revoked(url: str, instance: str, id_hashes: Sequence[str]) -> bool:
    """Tell every Policy instance on the PostgreSQL session DB at ``url`` that these sessions
    ended (for a process that is not one of them: the ``gatehouse users`` CLI when no Policy
    service answers). Returns whether the notifications were sent."""
    import asyncpg

    try:
        conn = await asyncpg.connect(**{**asyncpg_connect_args(url), "timeout": 5})
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("could not NOTIFY revocations: %s", exc)
        return False
    try:
        for payload in notify_payloads(instance, id_hashes):
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        return True
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("could not NOTIFY revocations: %s", exc)
        return False
    finally:
        with contextlib.suppress(Exception):
            await conn.close()


class PostgresBridge:
    """Shares revocations between Policy instances through PostgreSQL LISTEN/NOTIFY."""

    def __init__(self, url: str, hub: EventHub, retry_delay: float = 1.0) -> None:
        # What the engine passes to asyncpg (several hosts: the writable one), with a
        # shorter connect timeout: a lost listener reconnects in a loop.
        self._connect_args = {**asyncpg_connect_args(url), "timeout": 5}
        self._hub = hub
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._notifier: Any = None

    async def start(self, timeout: float = 10.0) -> None:
        """Start listening; waits (up to ``timeout``) for the first LISTEN to be in place."""
        self._task = asyncio.create_task(self._listen_forever(), name="pg-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._notifier is not None:
            with contextlib.suppress(Exception):
                await self._notifier.close()

    async def notify(self, id_hashes: Sequence[str]) -> None:
        """Tell the other instances; failures are logged, not raised (the DB row is gone)."""
        import asyncpg

        for attempt in (1, 2):
            try:
                if self._notifier is None or self._notifier.is_closed():
                    self._notifier = await asyncpg.connect(**self._connect_args)
                for payload in notify_payloads(self._hub.instance, id_hashes):
                    await self._notifier.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self._notifier = None
                if attempt == 2:
                    log.warning("could not NOTIFY revocations to other instances: %s", exc)

    def _received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._hub.revoked(parse_payload(self._hub.instance, payload))

    async def _listen_forever(self) -> None:
        import asyncpg

        first = True
        while True:
            lost = asyncio.Event()
            conn: Any = None
            try:
                conn = await asyncpg.connect(**self._connect_args)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._received)
                if not first:
                    log.info("listening for revocations again")
                first = False
                self._hub.set_live(True)
                self._listening.set()
                while not lost.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5.0)
                    if not lost.is_set():
                        await conn.execute("SELECT 1", timeout=5)  # notices a dead server
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("revocation listener: %s; retrying", exc)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.terminate()
            first = False
            # Revocations may be missed until listening again: no stream may claim otherwise.
            self._hub.set_live(False)
            await asyncio.sleep(self._retry_delay)

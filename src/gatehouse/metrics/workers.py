"""One metrics endpoint for all of an Access Point's workers.

The supervisor makes a socket pair per worker slot before forking it. When Prometheus
scrapes the supervisor's metrics listener (on a thread of its own, with its own event loop,
signals blocked like the config agent's), it writes one byte to each worker's socket; the
worker's loop answers with its snapshot (:func:`.access_point.worker_snapshot`), a 4-byte
length then JSON. Nothing crosses between processes until a scrape asks. A worker that does
not answer within :data:`ASK_TIMEOUT` is left out of that scrape. When a worker is replaced
(it crashed), the last snapshot read from it is kept, so counters do not go backwards by
more than what it counted since the previous scrape.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from gatehouse.metrics.access_point import empty_snapshot, merge, retained

log = logging.getLogger("gatehouse.metrics")

ASK_TIMEOUT = 2.0
_LENGTH = struct.Struct("!I")
MAX_SNAPSHOT = 64 << 20

#: In a forked worker: its end of the socket pair (set by :meth:`WorkerLinks.in_child`).
LINK: socket.socket | None = None


class SnapshotProtocol(asyncio.Protocol):
    """The worker's side: every byte received asks for one snapshot."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        for _ in range(len(data)):
            try:
                body = orjson.dumps(self.snapshot())
            except Exception:
                log.exception("metrics snapshot failed")
                body = b"{}"
            self.transport.write(_LENGTH.pack(len(body)) + body)


async def serve_link(snapshot: Callable[[], dict[str, Any]]) -> asyncio.Transport | None:
    """In a worker: answer the supervisor's snapshot requests on :data:`LINK`, if any."""
    if LINK is None:
        return None
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(lambda: SnapshotProtocol(snapshot), LINK)
    return transport


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("worker closed its metrics link")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class WorkerLinks:
    """The supervisor's side: a socket per worker slot, and what replaced workers counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: dict[int, socket.socket] = {}
        self._last: dict[int, dict[str, Any]] = {}
        self._retired = empty_snapshot()

    def before_fork(self) -> tuple[socket.socket, socket.socket]:
        return socket.socketpair()

    def in_child(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """In the forked worker: keep its end, close the supervisor's sockets."""
        global LINK
        for sock in self._socks.values():
            sock.close()
        pair[0].close()
        LINK = pair[1]

    def in_parent(self, slot: int, pair: tuple[socket.socket, socket.socket]) -> None:
        pair[1].close()
        with self._lock:
            old = self._socks.pop(slot, None)
            if old is not None:
                old.close()
            last = self._last.pop(slot, None)
            if last is not None:
                self._retired = merge([self._retired, retained(last)])
            self._socks[slot] = pair[0]

    def close(self) -> None:
        with self._lock:
            for sock in self._socks.values():
                sock.close()
            self._socks.clear()

    def _ask(self, sock: socket.socket) -> dict[str, Any]:
        sock.setblocking(False)
        try:
            while sock.recv(1 << 16):  # a late answer to an earlier scrape
                pass
        except (BlockingIOError, InterruptedError):
            pass
        sock.settimeout(ASK_TIMEOUT)
        sock.sendall(b"s")
        (size,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))
        if size > MAX_SNAPSHOT:
            raise ConnectionError("snapshot too large")
        data = orjson.loads(_recv_exactly(sock, size))
        if not isinstance(data, dict):
            raise ValueError("snapshot is not an object")
        return data

    def collect(self) -> dict[str, Any]:
        """Every worker's snapshot and the retained ones, added up."""
        with self._lock:
            snapshots: list[dict[str, Any]] = [self._retired]
            for slot, sock in list(self._socks.items()):
                try:
                    snap = self._ask(sock)
                except (OSError, ValueError) as exc:
                    log.warning("worker %d sent no metrics: %s", slot, exc)
                    last = self._last.get(slot)
                    if last is not None:
                        snapshots.append(retained(last))
                    continue
                self._last[slot] = snap
                snapshots.append(snap)
        return merge(snapshots)


class MetricsThread:
    """The supervisor's metrics listener on a thread with its own event loop."""

    def __init__(
        self, host: str, port: int, render: Callable[[], bytes], blocked: Iterable[int]
    ) -> None:
        self.host = host
        self.port = port
        self.render = render
        self.blocked = set(blocked)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5.0)

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass

    def _main(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, self.blocked)
        try:
            asyncio.run(self._serve())
        except Exception:
            log.exception("the metrics thread failed")
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from gatehouse.metrics.listener import MetricsListener

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        async def render() -> bytes:
            return self.render()

        listener = MetricsListener(render)
        await listener.start(self.host, self.port)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            listener.close()


def supervisor_metrics(
    listen: str | None,
    agent: Any = None,
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> tuple[WorkerLinks | None, Callable[[], None] | None, Callable[[], None] | None]:
    """For a supervisor with ``metrics.listen``: the worker links and its ``on_start`` and
    ``on_stop`` (which start and stop the metrics thread, then call the given ones);
    ``agent``: the config agent whose times are reported (managed mode)."""
    if listen is None:
        return None, on_start, on_stop
    from gatehouse.access_point.supervisor import FORWARDED
    from gatehouse.config.access_point import parse_listen
    from gatehouse.metrics.access_point import render_snapshot

    links = WorkerLinks()

    def render() -> bytes:
        snap = links.collect()
        if agent is None:
            return render_snapshot(snap)
        return render_snapshot(snap, agent.applied_at, agent.acknowledged_at)

    thread = MetricsThread(*parse_listen(listen), render, {*FORWARDED, signal.SIGCHLD})

    def start() -> None:
        thread.start()
        if on_start is not None:
            on_start()

    def stop() -> None:
        thread.stop()
        if on_stop is not None:
            on_stop()

    return links, start, stop

"""A real HTTP/1.1 backend on a free loopback port that records exactly what reaches it.

It runs its own asyncio loop in a background thread and parses with httptools (llhttp), so a test
can check what a proxy forwarded: every complete request (method, target, version, headers in
order, body) and the raw bytes of every connection, including bytes that never formed a request.

    with RecordingBackend() as backend:
        ...  # point a proxy at backend.url
        assert [r.target for r in backend.requests] == [b"/ok"]
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast

import httptools

Header = tuple[bytes, bytes]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One complete request as the backend received it."""

    connection: int
    method: bytes
    target: bytes
    version: str
    headers: list[Header]
    body: bytes

    def header_values(self, name: bytes) -> list[bytes]:
        """Values of every field called ``name`` (any case), in order."""
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]

    def header(self, name: bytes) -> bytes | None:
        """The value of the only field called ``name``; fails if it appears several times."""
        values = self.header_values(name)
        assert len(values) <= 1, f"{name!r} appears {len(values)} times"
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Reply:
    """What the backend answers; always framed with Content-Length."""

    status: int = 200
    body: bytes = b"ok"
    headers: list[Header] = field(default_factory=list)
    reason: bytes = b"OK"

    def encode(self, close: bool) -> bytes:
        lines = [b"HTTP/1.1 %d %s" % (self.status, self.reason)]
        lines += [name + b": " + value for name, value in self.headers]
        lines.append(b"Content-Length: %d" % len(self.body))
        if close:
            lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


Responder = Callable[[RecordedRequest], Reply]


def default_responder(request: RecordedRequest) -> Reply:
    return Reply(body=b"ok")


class _Connection(asyncio.Protocol):
    """One accepted connection: parse, record, answer."""

    def __init__(self, backend: RecordingBackend, number: int) -> None:
        self.backend = backend
        self.number = number
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.in_message = False
        self.url = b""
        self.headers: list[Header] = []
        self.body = bytearray()

    # asyncio callbacks ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.backend._opened(self)

    def data_received(self, data: bytes) -> None:
        self.backend._received(self.number, data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request is complete; the backend does not switch protocols, so stop here.
            self._close()
        except httptools.HttpParserError as exc:
            self.backend._error(self.number, f"{type(exc).__name__}: {exc}")
            self._write(Reply(400, b"bad request", reason=b"Bad Request").encode(close=True))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.backend._closed(self)

    # llhttp callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_message = True
        self.url = b""
        self.headers = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_message:
            self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.in_message = False
        request = RecordedRequest(
            connection=self.number,
            method=self.parser.get_method(),
            target=self.url,
            version=self.parser.get_http_version(),
            headers=list(self.headers),
            body=bytes(self.body),
        )
        self.backend._record(request)
        try:
            reply = self.backend.responder(request)
        except Exception as exc:  # a broken responder must show up in the test, not hang it
            self.backend._error(self.number, f"responder failed: {exc!r}")
            reply = Reply(500, b"responder failed", reason=b"Internal Server Error")
        close = not self.parser.should_keep_alive()
        self._write(reply.encode(close))
        if close:
            self._close()

    # helpers ----------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RecordingBackend:
    """A recording HTTP backend served from a background thread."""

    def __init__(self, responder: Responder | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.responder: Responder = responder or default_responder
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._raw: dict[int, bytearray] = {}
        self._errors: list[tuple[int, str]] = []
        self._accepted = 0
        self._numbers = itertools.count(1)
        self._live: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None

    # lifecycle --------------------------------------------------------------------------
    def start(self) -> RecordingBackend:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="recording-backend", daemon=True
        )
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(10)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> RecordingBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    async def _listen(self) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Connection(self, next(self._numbers)), self.host, self.port
        )
        self.port = int(server.sockets[0].getsockname()[1])
        return server

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._live):
            if conn.transport is not None:
                conn.transport.abort()
        # Let the transports run connection_lost and release their sockets.
        for _ in range(3):
            await asyncio.sleep(0)
        if self._server is not None:
            await self._server.wait_closed()

    # what was received --------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Complete requests received since the last :meth:`reset`, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def raw(self) -> dict[int, bytes]:
        """Bytes received on each connection since the last :meth:`reset`, by connection."""
        with self._lock:
            return {number: bytes(data) for number, data in self._raw.items()}

    @property
    def raw_bytes(self) -> bytes:
        """Every byte received since the last :meth:`reset`, all connections concatenated."""
        with self._lock:
            return b"".join(bytes(data) for data in self._raw.values())

    @property
    def errors(self) -> list[tuple[int, str]]:
        """Parse errors (connection number, message) since the last :meth:`reset`."""
        with self._lock:
            return list(self._errors)

    @property
    def accepted(self) -> int:
        """Connections accepted since the last :meth:`reset`."""
        with self._lock:
            return self._accepted

    @property
    def partial(self) -> list[int]:
        """Open connections on which a request has begun but not completed."""
        with self._lock:
            return sorted(c.number for c in self._live if c.in_message)

    def reset(self) -> None:
        """Forget everything recorded; open connections stay open."""
        with self._lock:
            self._requests.clear()
            self._raw.clear()
            self._errors.clear()
            self._accepted = 0

    def wait_for(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests have arrived; return them all."""
        deadline = time.monotonic() + timeout
        while True:
            requests = self.requests
            if len(requests) >= count or time.monotonic() >= deadline:
                return requests
            time.sleep(0.01)

    # called from the loop thread --------------------------------------------------------
    def _opened(self, conn: _Connection) -> None:
        with self._lock:
            self._live.add(conn)
            self._accepted += 1

    def _closed(self, conn: _Connection) -> None:
        with self._lock:
            self._live.discard(conn)

    def _received(self, number: int, data: bytes) -> None:
        with self._lock:
            self._raw.setdefault(number, bytearray()).extend(data)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _error(self, number: int, message: str) -> None:
        with self._lock:
            self._errors.append((number, message))

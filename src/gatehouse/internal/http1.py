"""The client side of HTTP/1.1 (RFC 9112) for internal calls: a persistent connection as an
asyncio protocol parsed by llhttp (httptools), and the pool of idle connections to one
endpoint.

Nothing here knows about failover. A failure is raised as :class:`WireError`, which says
whether the request was sent and whether any byte of an answer came back; the failover
client (``client.py``) decides what that allows. No per-request task is created: a call
waits on one future, woken by the protocol callbacks or by one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import httptools
import orjson

from gatehouse.internal.detached import DETACHED_RESPONSE_PARSER
from gatehouse.internal.liveness import peer_has_closed
from gatehouse.trust.identity import Peer
from gatehouse.trust.tls import ClientTLS, PeerRefused

#: A line longer than this in a stream is an error (the peer is not speaking NDJSON).
MAX_LINE = 1 << 20
#: Buffered, unread stream lines above which reading from the socket pauses.
MAX_PENDING_LINES = 1024
#: New connections a pool opens at once to one endpoint; more callers wait for one of them,
#: or for a busy connection to come free, whichever is first.
MAX_CONNECTING = 2

_WANT_COMPLETE, _WANT_HEAD, _WANT_DATA = 0, 1, 2


class FailureKind(StrEnum):
    """Why one attempt on one endpoint failed."""

    REFUSED = "connection refused"
    CONNECT_TIMEOUT = "connect timeout"
    CONNECT_ERROR = "connect error"
    READ_TIMEOUT = "read timeout"
    RESET = "connection reset"
    CLOSED = "connection closed"
    INVALID = "invalid response"
    SERVER_ERROR = "server error"


class WireError(Exception):
    """One attempt failed.

    ``sent``: some of the request may have reached the server (false only for connect
    failures). ``answered``: at least one byte of a response came back. ``reused``: the
    connection came from the idle pool.
    """

    def __init__(
        self,
        kind: FailureKind,
        detail: str,
        *,
        sent: bool,
        answered: bool = False,
        reused: bool = False,
    ) -> None:
        super().__init__(f"{kind}: {detail}" if detail else str(kind))
        self.kind = kind
        self.detail = detail
        self.sent = sent
        self.answered = answered
        self.reused = reused


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, headers (lowercase names; repeated fields joined by ``", "``) and
    the whole body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (``orjson.JSONDecodeError``, a ``ValueError``, if not)."""
        return orjson.loads(self.body)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = out.get(key)
        out[key] = text if old is None else f"{old}, {text}"
    return out


class _Lines:
    """Splits a body into lines as it arrives; keeps the unfinished tail."""

    __slots__ = ("pending", "tail")

    def __init__(self) -> None:
        self.pending: list[bytes] = []
        self.tail = b""

    def feed(self, data: bytes) -> None:
        if b"\n" not in data:
            self.tail += data
        else:
            parts = (self.tail + data).split(b"\n")
            self.tail = parts.pop()
            for line in parts:
                line = line.removesuffix(b"\r")
                if line:
                    self.pending.append(line)
        if len(self.tail) > MAX_LINE:
            raise ValueError(f"line longer than {MAX_LINE} bytes")


class Connection(asyncio.Protocol):
    """One TCP connection to an endpoint, used for one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.lost: asyncio.Future[None] = self.loop.create_future()
        # the exchange in progress
        self.active = False
        self.want = _WANT_COMPLETE
        self.waiter: asyncio.Future[None] | None = None
        self.error: WireError | None = None
        self.answered = False
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.head_request = False
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.lines: _Lines | None = None
        self.reading_paused = False
        #: The server's authenticated identity (TLS pools only).
        self.peer: Peer | None = None

    # asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            # An idle connection must stay silent; anything else makes it unusable.
            self.close()
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(FailureKind.INVALID, "unexpected protocol upgrade")
        except httptools.HttpParserError as exc:
            self._fail(FailureKind.INVALID, str(exc) or type(exc).__name__)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.active and not self.complete and self.error is None:
            if exc is None and self.head_done and not self._framed():
                # The end of a close-delimited body.
                self.complete = True
            elif isinstance(exc, OSError):
                kind = FailureKind.RESET if isinstance(exc, ConnectionError) else FailureKind.CLOSED
                self.error = self._error(kind, str(exc) or type(exc).__name__)
            else:
                what = "before the answer was complete" if self.answered else "before answering"
                self.error = self._error(FailureKind.CLOSED, f"server closed the connection {what}")
        self._wake()
        if not self.lost.done():
            self.lost.set_result(None)
        # Freed by reference counting, not left to the cyclic collector (internal.detached).
        self.parser = DETACHED_RESPONSE_PARSER

    # llhttp callbacks -------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # an interim answer; the real one follows
        self.head_done = True
        if self.head_request:
            # llhttp would wait for the announced body, which a HEAD answer never has.
            self.complete = True
            self._wake()
        elif self.want == _WANT_HEAD:
            self._wake()

    def on_body(self, body: bytes) -> None:
        lines = self.lines
        if lines is None:
            self.body.append(body)
            return
        lines.feed(body)
        if lines.pending:
            if self.want == _WANT_DATA:
                self._wake()
            if len(lines.pending) > MAX_PENDING_LINES and not self.reading_paused:
                self.reading_paused = True
                if self.transport is not None:
                    self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.status < 200:
            self.raw_headers = []
            return
        # Ask now: llhttp resets its flags for the next message once this callback returns.
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True
        self._wake()

    # exchanges --------------------------------------------------------------------------------
    async def exchange(self, data: bytes, timeout: float, head_request: bool = False) -> Response:
        """Send one request and read the whole answer; the connection goes back to the pool
        if it can carry another request."""
        self._start(head_request)
        self._write(data)
        await self._wait(_WANT_COMPLETE, timeout)
        if not self.complete:
            self._raise()
        response = self.response()
        if self.closed or head_request or not self.keep_alive:
            self.close()
        else:
            self.pool.release(self)
        return response

    async def start_stream(self, data: bytes, timeout: float) -> int:
        """Send a request and wait for the status line and headers; returns the status."""
        self._start(False)
        self._write(data)
        await self._wait(_WANT_HEAD, timeout)
        if not self.head_done:
            self._raise()
        return self.status

    async def finish(self, timeout: float) -> Response:
        """Read the rest of an answer started with :meth:`start_stream`; then close."""
        try:
            if not self.complete:
                await self._wait(_WANT_COMPLETE, timeout)
            if not self.complete:
                self._raise()
            return self.response()
        finally:
            self.close()

    def follow_lines(self) -> None:
        """From now on, split the body into lines for :meth:`next_lines`."""
        lines = self.lines = _Lines()
        try:
            for chunk in self.body:
                lines.feed(chunk)
        except ValueError as exc:
            self._fail(FailureKind.INVALID, str(exc))
        self.body = []

    async def next_lines(self, idle_timeout: float | None) -> list[bytes] | None:
        """The lines received since the last call, waiting for at least one; ``None`` at the
        clean end of the body. Raises :class:`WireError` when the stream breaks."""
        lines = self.lines
        assert lines is not None
        while True:
            if lines.pending:
                out, lines.pending = lines.pending, []
                if self.reading_paused and self.transport is not None and not self.closed:
                    self.reading_paused = False
                    self.transport.resume_reading()
                return out
            if self.error is not None:
                raise self.error
            if self.complete:
                tail, lines.tail = lines.tail.removesuffix(b"\r"), b""
                return [tail] if tail else None
            await self._wait(_WANT_DATA, idle_timeout)
            if not (lines.pending or self.complete or self.error is not None):
                self._fail(FailureKind.READ_TIMEOUT, f"no data for {idle_timeout:g} s")

    def response(self) -> Response:
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        return Response(self.status, _headers(self.raw_headers), data)

    # helpers ----------------------------------------------------------------------------------
    def _start(self, head_request: bool) -> None:
        self.active = True
        self.error = None
        self.answered = False
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.head_request = head_request
        self.status = 0
        self.raw_headers = []
        self.body = []

    def _write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            self.error = WireError(
                FailureKind.CLOSED,
                "connection closed before sending",
                sent=False,
                reused=self.reused,
            )
        else:
            self.transport.write(data)

    async def _wait(self, want: int, timeout: float | None) -> None:
        """Wait until a callback wakes us (for ``want``, completion or failure) or time runs
        out; on timeout the exchange fails with a read timeout."""
        if self.error is not None or self.complete:
            return
        waiter = self.loop.create_future()
        self.waiter = waiter
        self.want = want
        timer = None if timeout is None else self.loop.call_later(timeout, self._timed_out, timeout)
        try:
            await waiter
        except BaseException:
            # Cancelled mid-exchange: the connection's state is unknown, so it cannot be reused.
            self.abort()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self.waiter = None

    def _timed_out(self, timeout: float) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # woken in the same loop iteration: what woke it wins
        if self.want == _WANT_DATA:
            self._wake()  # next_lines decides: it may have been woken by data already
        else:
            self._fail(FailureKind.READ_TIMEOUT, f"no complete answer within {timeout:g} s")

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _error(self, kind: FailureKind, detail: str) -> WireError:
        return WireError(kind, detail, sent=True, answered=self.answered, reused=self.reused)

    def _fail(self, kind: FailureKind, detail: str) -> None:
        if self.error is None:
            self.error = self._error(kind, detail)
        self._wake()
        self.abort()

    def _raise(self) -> None:
        error = self.error or self._error(FailureKind.CLOSED, "exchange ended without an answer")
        self.abort()
        raise error

    def _framed(self) -> bool:
        for name, _ in self.raw_headers:
            lname = name.lower()
            if lname == b"content-length" or lname == b"transfer-encoding":
                return True
        return False

    def close(self) -> None:
        self.active = False
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.active = False
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()


class Pool:
    """Connections to one endpoint: a LIFO stack of idle ones (the most recently used is the
    most likely to still be open), with an idle timeout and a size cap.

    :meth:`checkout` opens at most ``max_connecting`` connections at once: a burst (the
    first requests after a failover, all at the same instant) would otherwise pay one TLS
    handshake per request on both sides, on the same busy CPUs, each slowing all the
    others; a request that waits instead gets the first connection that comes free, from a
    finished exchange (handed over directly) or a finished handshake.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        clock: Callable[[], float],
        max_idle: int,
        idle_timeout: float,
        tls: ClientTLS | None = None,
        index: int = 0,
        max_connecting: int = MAX_CONNECTING,
    ) -> None:
        self.host = host
        #: TLS to this endpoint (None: plaintext), and its place in the configured order
        #: (which service id the server must be).
        self.tls = tls
        self.index = index
        self.port = port
        self.clock = clock
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: list[Connection] = []
        #: Every open connection, idle or busy, so that ``aclose`` can close them all.
        self.open: set[Connection] = set()
        #: Connections ever opened (for tests and metrics).
        self.opened = 0
        #: The serial of the certificate the server showed at the latest handshake (None:
        #: plaintext, or none yet); a revocation of it takes the endpoint down.
        self.peer_serial: int | None = None
        self.max_connecting = max_connecting
        #: Connections being opened by :meth:`checkout` now.
        self.connecting = 0
        #: Callers of :meth:`checkout` waiting: each gets a free connection, or ``None``
        #: (a handshake ended: try again).
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()

    def take(self, check: bool = False) -> Connection | None:
        """The most recently used idle connection; ``check``: only one whose server has not
        closed it already (:func:`peer_has_closed`: for a request that could not be resent)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if check and peer_has_closed(conn.transport):
                conn.close()
                continue
            if self.clock() - conn.idle_since > self.idle_timeout:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    async def checkout(self, timeout: float, check: bool = False) -> Connection:
        """An idle connection, else a new one unless ``max_connecting`` are being opened,
        else the first that comes free; raises :class:`WireError` (nothing sent) when no
        connection is had within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            conn = self.take(check)
            if conn is not None:
                return conn
            if self.connecting < self.max_connecting:
                self.connecting += 1
                try:
                    return await self.connect(max(0.0, deadline - loop.time()))
                finally:
                    self.connecting -= 1
                    self._hand_over(None)
            waiter: asyncio.Future[Connection | None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    conn = await waiter
            except BaseException as exc:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if not waiter.done():
                    waiter.cancel()
                elif not waiter.cancelled() and (handed := waiter.result()) is not None:
                    self.release(handed)  # handed over just as this caller gave up
                if isinstance(exc, TimeoutError):
                    raise WireError(
                        FailureKind.CONNECT_TIMEOUT,
                        f"no connection within {timeout:g} s",
                        sent=False,
                    ) from None
                raise
            if conn is not None:
                return conn

    def _hand_over(self, conn: Connection | None) -> bool:
        """Give ``conn`` (or the news that a handshake ended) to the first waiting caller."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                if conn is not None:
                    conn.reused = True
                waiter.set_result(conn)
                return True
        return False

    def release(self, conn: Connection) -> None:
        conn.active = False
        if not conn.closed and self._waiters and self._hand_over(conn):
            return
        idle = self.idle
        if conn.closed or len(idle) >= self.max_idle:
            conn.close()
            return
        now = self.clock()
        conn.idle_since = now
        idle.append(conn)
        # Expire from the bottom of the stack, one per release: cheap and enough.
        oldest = idle[0]
        if now - oldest.idle_since > self.idle_timeout:
            oldest.close()

    def forget(self, conn: Connection) -> None:
        self.open.discard(conn)
        if self.tls is not None and self.tls.revocations is not None:
            self.tls.revocations.forget(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    async def connect(self, timeout: float) -> Connection:
        """A new connection; raises :class:`WireError` (nothing sent) when that fails."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                if self.tls is None:
                    _, conn = await loop.create_connection(
                        lambda: Connection(self), self.host, self.port
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: Connection(self),
                        self.host,
                        self.port,
                        ssl=self.tls.context,
                        server_hostname=self.host,
                    )
        except TimeoutError:
            raise WireError(
                FailureKind.CONNECT_TIMEOUT, f"no connection within {timeout:g} s", sent=False
            ) from None
        except ConnectionRefusedError:
            raise WireError(FailureKind.REFUSED, "", sent=False) from None
        except ssl.SSLError as exc:
            raise WireError(
                FailureKind.CONNECT_ERROR, f"TLS handshake failed: {exc.reason or exc}", sent=False
            ) from None
        except OSError as exc:
            raise WireError(
                FailureKind.CONNECT_ERROR, str(exc) or type(exc).__name__, sent=False
            ) from exc
        self.opened += 1
        if conn.closed:  # lost between connect and now
            raise WireError(FailureKind.CLOSED, "closed right after connecting", sent=False)
        if self.tls is not None:
            assert conn.transport is not None
            try:
                conn.peer = self.tls.check(conn.transport.get_extra_info("ssl_object"), self.index)
            except PeerRefused as exc:
                conn.abort()
                raise WireError(FailureKind.CONNECT_ERROR, str(exc), sent=False) from None
            self.peer_serial = conn.peer.serial
            if self.tls.revocations is not None:
                self.tls.revocations.track(conn)
        self.open.add(conn)
        return conn

    async def aclose(self) -> None:
        """Close every connection and wait until the transports are gone."""
        while self._hand_over(None):
            pass
        conns = list(self.open)
        for conn in conns:
            if conn.active:
                conn.abort()
            else:
                conn.close()
        self.idle.clear()
        pending = [conn.lost for conn in conns if not conn.lost.done()]
        if pending:
            await asyncio.gather(*pending)

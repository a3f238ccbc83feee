"""Backends: connection pools, round-robin with passive failure detection, and the
upstream-side protocol that parses responses with llhttp.

An :class:`UpstreamConnection` hands every response event to the exchange currently attached to
it (see ``connection.py``); between requests it waits in its origin's idle pool.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import ssl
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from gatehouse.access_point.headers import ResponseFields
from gatehouse.internal.detached import DETACHED_RESPONSE_PARSER
from gatehouse.internal.liveness import peer_has_closed
from gatehouse.metrics.timing import EventClock, Histogram
from gatehouse.trust.tls import PeerRefused

if TYPE_CHECKING:
    from gatehouse.config.access_point import Backend


class ResponseSink(Protocol):
    """What an upstream connection reports to (implemented by the exchange)."""

    def upstream_headers_complete(self) -> None: ...
    def upstream_body(self, data: bytes) -> None: ...
    def upstream_message_complete(self) -> None: ...
    def upstream_upgraded(self, rest: bytes) -> None: ...
    def upstream_tunnel_data(self, data: bytes) -> None: ...
    def upstream_failed(self, reason: str, exc: BaseException | None) -> None: ...
    def upstream_paused(self, paused: bool) -> None: ...

    #: Sends what the client connection has gathered (called after each read).
    upstream_flush: Callable[[], None]


class UpstreamConnection(asyncio.Protocol):
    """One connection to a backend; reused for requests one after the other."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.sink: ResponseSink | None = None
        #: The response's fields, sorted as they come: llhttp calls ``fields.field`` itself
        #: (bound before the parser is made), one call per field.
        self.fields = ResponseFields()
        self.on_header = self.fields.field
        self.parser = httptools.HttpResponseParser(self)
        self.tunnel = False
        self.closed = False
        self.reused = False
        self.got_bytes = False
        self.reading_paused = False
        self.idle_since = 0.0

    # asyncio callbacks --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        clock = self.origin.clock
        if clock is None:
            self._received(data)
            return
        # Metrics on: what this read moves on is timed by one clock reading (metrics.timing).
        clock.stamp = perf_counter()
        try:
            self._received(data)
        finally:
            clock.stamp = 0.0

    def _received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            # An idle pooled connection must stay silent; anything else means it is unusable.
            self.close()
            return
        self.got_bytes = True
        if self.tunnel:
            sink.upstream_tunnel_data(data)
            sink.upstream_flush()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            if self.sink is not None:
                self.sink.upstream_upgraded(data[offset:])
        except httptools.HttpParserError as exc:
            if self.sink is not None:
                self.sink.upstream_failed("invalid response from backend", exc)
        # Everything the parser produced for this read goes out to the client in one write
        # (the sink may have let go of this connection meanwhile: same client connection).
        sink.upstream_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.origin.forget(self)
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_failed("backend closed the connection", exc)
            sink.upstream_flush()
        # Freed by reference counting, not left to the cyclic collector (internal.detached).
        self.parser = DETACHED_RESPONSE_PARSER
        self.transport = None

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_paused(False)

    # llhttp callbacks (and on_header: fields.field) ---------------------------------------
    def on_headers_complete(self) -> None:
        if self.sink is not None:
            self.sink.upstream_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.upstream_body(body)

    def on_message_complete(self) -> None:
        if self.sink is not None:
            self.sink.upstream_message_complete()

    # used by the exchange -----------------------------------------------------------------
    def attach(self, sink: ResponseSink) -> None:
        """Send the next response to ``sink``."""
        self.sink = sink
        self.fields.reset()

    def reset_parser(self) -> None:
        """Start a fresh parser (after a HEAD response, whose body llhttp would wait for)."""
        self.parser = httptools.HttpResponseParser(self)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        self.sink = None
        if not self.closed:
            self.closed = True
            self.origin.forget(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.sink = None
        if not self.closed:
            self.closed = True
            self.origin.forget(self)
            if self.transport is not None:
                self.transport.abort()


class ConnectFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


#: Idle connections above an origin's ``max_idle`` are closed once idle this long (seconds).
SURPLUS_IDLE = 1.0
#: An origin never keeps more than this many times ``max_idle`` idle connections.
SURPLUS_FACTOR = 8


class Origin:
    """One backend (scheme, host, port) and its idle keep-alive connections."""

    def __init__(
        self,
        backend: Backend,
        ssl_context: ssl.SSLContext | None,
        max_idle: int,
        idle_timeout: float,
        check: Callable[[Any], object] | None = None,
    ) -> None:
        self.backend = backend
        #: Checks the server's certificate right after the handshake (internal origins:
        #: the Policy services' role and id); raises to refuse it.
        self.check = check
        self.host = backend.host
        self.port = backend.port
        self.ssl = ssl_context
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.idle: list[UpstreamConnection] = []
        self.failed_until = 0.0
        self.host_header = backend.host_header.encode("ascii")
        #: With metrics on: the histogram of this backend's response times
        #: (WorkerCounters.backend) and the worker's read-event clock its connections set.
        self.timings: Histogram | None = None
        self.clock: EventClock | None = None

    def take_idle(self, now: float, check: bool = False) -> UpstreamConnection | None:
        """The most recently used idle connection; ``check``: only one whose backend has not
        closed it already (:func:`peer_has_closed`: for a request that could not be resent)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if (
                conn.closed
                or now - conn.idle_since > self.idle_timeout
                or (check and peer_has_closed(conn.transport))
            ):
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Put a connection whose exchange ended back in the idle pool (or close it).

        ``max_idle`` connections stay as long as the backend keeps them. Above that, the pool
        keeps what a burst of concurrent requests needed while it keeps needing it (HAProxy's
        ``pool-purge-delay``): each release beyond the limit first closes the least recently
        used idle connection if it has been idle for ``SURPLUS_IDLE`` seconds, and never more
        than ``SURPLUS_FACTOR`` times the limit are kept. Closing every connection above the
        limit at once made 256 concurrent clients open (and close) a backend connection on
        one request in five.
        """
        conn.sink = None
        idle = self.idle
        if conn.closed or self.max_idle == 0:
            conn.close()
            return
        if len(idle) >= self.max_idle:
            oldest = idle[0]
            if now - oldest.idle_since > SURPLUS_IDLE:
                del idle[0]
                oldest.close()
            elif len(idle) >= self.max_idle * SURPLUS_FACTOR:
                conn.close()
                return
        conn.resume_reading()
        conn.idle_since = now
        conn.got_bytes = False
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    async def connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                ),
                timeout,
            )
            if self.check is not None:
                assert conn.transport is not None
                self.check(conn.transport.get_extra_info("ssl_object"))
        except TimeoutError:
            raise ConnectFailed(504, "timed out connecting to the backend") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(502, f"TLS error with the backend: {exc.reason}") from None
        except PeerRefused as exc:
            conn.abort()
            raise ConnectFailed(502, f"refused the backend: {exc}") from None
        except OSError as exc:
            if exc.errno == errno.ETIMEDOUT:
                raise ConnectFailed(504, "timed out connecting to the backend") from None
            raise ConnectFailed(502, "the backend refused the connection") from None
        return conn

    def close_idle(self) -> None:
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()


class BackendGroup:
    """The backends of one resource, used round-robin; a failed one is skipped for a while."""

    def __init__(
        self, origins: Sequence[Origin], fail_timeout: float, ordered: bool = False
    ) -> None:
        self.origins = list(origins)
        self.fail_timeout = fail_timeout
        #: Ordered groups (Policy services) always prefer the first healthy origin.
        self.ordered = ordered
        self._next = 0

    def order(self, now: float) -> list[Origin]:
        """Origins in the order to try for the next request: healthy ones first, then
        round-robin (or the configured order for an ordered group)."""
        n = len(self.origins)
        if n == 1:
            return self.origins
        if self.ordered:
            rotated = self.origins
        else:
            start = self._next % n
            self._next = start + 1
            rotated = self.origins[start:] + self.origins[:start]
        healthy = [o for o in rotated if o.failed_until <= now]
        return healthy + [o for o in rotated if o.failed_until > now]

    def mark_failed(self, origin: Origin, now: float) -> None:
        origin.failed_until = now + self.fail_timeout


def make_ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """The client context for HTTPS backends; shared by every origin and every configuration
    version with the same settings while the CA file stays the same (loading the system's CA
    store takes tens of milliseconds: a publish or reload must not pay it per origin)."""
    stamp: tuple[int, int] | None = None
    if ca_file is not None:
        try:
            stat = os.stat(ca_file)
        except OSError:
            stamp = None  # loading it raises the error the caller reports
        else:
            stamp = (stat.st_mtime_ns, stat.st_ino)
    return _ssl_context(verify, ca_file, stamp)


@functools.lru_cache(maxsize=64)
def _ssl_context(
    verify: bool, ca_file: str | None, stamp: tuple[int, int] | None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context

"""The client side of the Access Point: one :class:`ClientConnection` per accepted socket.

Requests are parsed by llhttp (httptools) straight from ``data_received``; each complete head
becomes an exchange in a FIFO queue, so pipelined requests are answered in order. Only the head
of the queue talks to a backend. Everything a callback writes for the client is gathered in
``out`` and sent with one ``transport.write`` when the read that produced it is done.

Reading from the client pauses when a backend cannot take the request body fast enough, when
too much body is buffered, or when too many requests are queued; reading from a backend pauses
when the client does not take the response fast enough. Memory per connection stays bounded
whatever the size of the bodies.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from time import perf_counter
from typing import Final, cast

import httptools

from gatehouse.access_point import pages
from gatehouse.access_point.decisions import DecisionMemo, session_hash
from gatehouse.access_point.exchange import LocalReply, ProxyExchange
from gatehouse.access_point.headers import HeaderPolicy, field_line, forwarded_fields
from gatehouse.access_point.pausing import (
    PAUSE_BUFFER,
    PAUSE_INPUT_DONE,
    PAUSE_PIPELINE,
    PAUSE_UPSTREAM,
)
from gatehouse.access_point.request import BadRequest, RequestHead, parse_head
from gatehouse.access_point.runtime import Runtime
from gatehouse.internal.detached import DETACHED_REQUEST_PARSER
from gatehouse.metrics.timing import EventClock

log = logging.getLogger("gatehouse.access_point")

#: How often timeouts are checked, in seconds.
TICK = 0.25
_HEAD, _IDLE = 1, 2
#: Why a client connection stops reading for one exchange only: cleared when it ends.
_EXCHANGE_PAUSES: Final = PAUSE_UPSTREAM | PAUSE_BUFFER
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0", "0.9": b"0.9", "2.0": b"2.0"}

Exchange = ProxyExchange | LocalReply


@dataclass(eq=False)
class WorkerState:
    """What every connection of one worker process shares."""

    runtime: Runtime
    loop: asyncio.AbstractEventLoop
    connections: set[ClientConnection] = field(default_factory=set)
    draining: bool = False
    requests: int = 0
    #: A coarse clock, refreshed by the sweep: timeouts cost one attribute write per event
    #: instead of a timer per request (nginx caches its time the same way).
    now: float = 0.0
    #: With metrics on, the clock each read event sets once to time the requests it moves
    #: on (metrics.timing); None: metrics off, no clock read.
    clock: EventClock | None = None

    def sweep(self) -> None:
        """Refresh the coarse clock and enforce every connection's timeouts; runs every
        ``TICK``."""
        self.now = now = self.loop.time()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self.loop.call_later(TICK, self.sweep)


class ClientConnection(asyncio.Protocol):
    """One client connection: parsing, the pipeline queue, flow control, timeouts."""

    def __init__(self, state: WorkerState, scheme: bytes = b"http") -> None:
        self.state = state
        self.loop = state.loop
        self.clock = state.clock
        settings = state.runtime.settings
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer_ip = ""
        self.scheme = scheme
        # A list, not a deque: it rarely holds more than one exchange, and an empty deque
        # is 760 bytes (one per connection, touched on every request) against 56.
        self.queue: list[Exchange] = []
        self.cur: ProxyExchange | None = None
        self.out: list[bytes] = []
        self.closed = False
        self.draining = False
        self.paused = 0
        self.write_paused = False
        self.tunnel: ProxyExchange | None = None
        self.upgrade_pending: ProxyExchange | None = None
        self.input_done = False
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.in_head = False
        self.error: BadRequest | None = None
        self.max_request_line = settings.max_request_line
        self.max_header_bytes = settings.max_header_bytes
        self.header_timeout = settings.header_timeout
        self.keepalive_timeout = settings.keepalive_timeout
        self.deadline = 0.0
        self.deadline_kind = 0
        self.paused_since = 0.0
        self._trust: tuple[HeaderPolicy, bool] | None = None
        self._session: tuple[str, str] = ("", "")
        #: The last decision served from the cache on this connection (see DecisionMemo).
        self.decision_memo: DecisionMemo | None = None
        self._fwd_key: tuple[bytes, HeaderPolicy] | None = None
        self._fwd = b""

    # asyncio callbacks --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        state = self.state
        state.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        limit = state.runtime.settings.max_connections
        if state.draining or len(state.connections) > limit:
            self.input_done = True
            self.transport.write(pages.error_page(503, "The access point is at capacity.", True))
            self.close()
            return
        self._set_deadline(_HEAD)

    def data_received(self, data: bytes) -> None:
        clock = self.clock
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
        if self.tunnel is not None:
            self.tunnel.client_tunnel_data(data)
            return
        if self.upgrade_pending is not None:
            self.upgrade_pending.early_data.append(data)
            return
        if self.input_done:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data, upgrade.args[0] if upgrade.args else len(data))
        except httptools.HttpParserCallbackError as exc:
            error = self.error or BadRequest(500, "internal error")
            if self.error is None:
                log.error("request handling failed", exc_info=exc.__context__ or exc)
            self._refuse(error)
        except httptools.HttpParserError as exc:
            reason = str(exc) or "malformed request"
            status = 505 if reason == "Invalid HTTP version" else 400
            self._refuse(BadRequest(status, reason))
        except Exception:  # never let a traceback reach the client
            log.exception("unexpected error while reading a request")
            self._refuse(BadRequest(500, "internal error"))
        if self.queue and not self.queue[0].started:
            self.queue[0].start()
        self.flush()

    def eof_received(self) -> bool | None:
        # Half-close (keep writing after the client's EOF) exists only over plain TCP: a TLS
        # transport closes after EOF whatever we answer (and logs a warning if we say True).
        half_close = self.scheme != b"https"
        if self.tunnel is not None:
            self.tunnel.client_tunnel_eof()
            return half_close
        # The client will send no more requests; answer those queued, then close.
        self.input_done = True
        if self.cur is not None:
            self.cur.client_gone()
            self.cur = None
        if not self.queue:
            self.close()
        else:
            self.draining = True
        return half_close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        self.deadline = 0.0
        for exchange in self.queue:
            exchange.client_gone()
        self.queue.clear()
        if self.cur is not None:
            self.cur.client_gone()
            self.cur = None
        if self.tunnel is not None:
            self.tunnel.client_gone()
        if self.upgrade_pending is not None:
            self.upgrade_pending.client_gone()
        # The parser holds bound methods of this connection: a reference cycle that only the
        # cyclic collector would free, with every object the connection reaches (its TLS
        # objects too). Without it, reference counting frees the connection now.
        self.parser = DETACHED_REQUEST_PARSER
        self.transport = None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.paused_since = self.state.now
        active = self.active()
        if active is not None:
            active.client_paused(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        active = self.active()
        if active is not None:
            active.client_paused(False)

    # llhttp callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_head = True
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        if self.deadline_kind != _HEAD:
            self._set_deadline(_HEAD)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.max_request_line:
            self._raise(BadRequest(414, "request target too long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.max_header_bytes:
            self._raise(BadRequest(431, "header fields too large"))
        if self.in_head:
            self.headers.append((name, value))
        # Trailer fields (after a chunked body) are dropped: never forwarded, never trusted.

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.deadline = 0.0
        self.deadline_kind = 0
        runtime = self.state.runtime
        parser = self.parser
        try:
            head = parse_head(
                parser.get_method(),
                self.url,
                _VERSIONS.get(parser.get_http_version()) or b"?",
                self.headers,
            )
        except BadRequest as exc:
            self._raise(exc)
        self.state.requests += 1
        exchange = ProxyExchange(self, head, runtime)
        self.cur = exchange
        self.queue.append(exchange)
        if len(self.queue) > runtime.settings.max_pipelined:
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        if self.cur is not None:
            self.cur.request_body(body)

    def on_message_complete(self) -> None:
        cur, self.cur = self.cur, None
        if cur is not None:
            cur.request_complete()
        if not cur or not cur.head.keep_alive:
            # Nothing after a "Connection: close" request is read.
            self.input_done = True
            self.pause(PAUSE_INPUT_DONE)

    # the pipeline ---------------------------------------------------------------------------
    def active(self) -> ProxyExchange | None:
        if self.tunnel is not None:
            return self.tunnel
        if self.queue:
            head = self.queue[0]
            if isinstance(head, ProxyExchange):
                return head
        return None

    def exchange_finished(self, exchange: Exchange, close: bool) -> None:
        series = exchange.series
        if series is not None:  # metrics.listen is set
            seconds = series.clock.now() - exchange.t0
            if type(exchange) is ProxyExchange:
                # Series.add, inlined (the hot path): most requests have the previous
                # request's method and status, and count in the same histogram. (The
                # backend's response time was counted when its head came.)
                method, status = exchange.head.method, exchange.status
                if status == series.status and method == series.method:
                    series.last.observe(seconds)
                else:
                    series.histogram(method, status).observe(seconds)
            else:
                series.add(b"", exchange.status, seconds)
        if self.queue and self.queue[0] is exchange:
            del self.queue[0]
        if close or self.closed:
            self.close()
            return
        if self.paused & _EXCHANGE_PAUSES:
            # Pauses for the exchange that ended: a backend whose socket buffer was full (it
            # answered before reading the whole body), or a body buffered for a backend
            # connection that was never made. The next request must be read.
            self.resume(_EXCHANGE_PAUSES)
        if (
            self.paused & PAUSE_PIPELINE
            and len(self.queue) <= self.state.runtime.settings.max_pipelined
        ):
            self.resume(PAUSE_PIPELINE)
        if self.queue:
            nxt = self.queue[0]
            if not nxt.started:
                nxt.start()
        elif self.draining or self.input_done:
            self.close()
        elif self.cur is None and not self.in_head:
            self._set_deadline(_IDLE)

    def _raise(self, error: BadRequest) -> None:
        self.error = error
        raise error

    def _refuse(self, error: BadRequest) -> None:
        """The client sent something we cannot parse: answer in order, then close."""
        self.error = None
        self.input_done = True
        self.pause(PAUSE_INPUT_DONE)
        self.deadline = 0.0
        cur, self.cur = self.cur, None
        if cur is not None:
            if cur.started:
                cur.client_error(error)
                return
            self.queue.remove(cur)
        if error.status >= 500:
            message = pages.DEFAULT_MESSAGES[500]
        else:
            message = f"{pages.DEFAULT_MESSAGES.get(error.status, '')} ({error.reason})"
        self.queue.append(LocalReply(self, pages.error_page(error.status, message, True), True))

    def _upgrade(self, data: bytes, offset: int) -> None:
        exchange = self.queue[-1] if self.queue else None
        if not isinstance(exchange, ProxyExchange) or exchange.head.upgrade is None:
            self._refuse(BadRequest(400, "unexpected protocol upgrade"))
            return
        self.upgrade_pending = exchange
        if offset < len(data):
            exchange.early_data.append(data[offset:])

    def enter_tunnel(self, exchange: ProxyExchange) -> None:
        self.upgrade_pending = None
        self.tunnel = exchange
        if self.queue and self.queue[0] is exchange:
            del self.queue[0]

    def trusted(self, policy: HeaderPolicy) -> bool:
        """Whether the peer is a trusted proxy; the peer is fixed, so asked once per policy."""
        memo = self._trust
        if memo is None or memo[0] is not policy:
            memo = self._trust = (policy, policy.is_trusted(self.peer_ip))
        return memo[1]

    def session_hash(self, session: str) -> str:
        """The hash of a session cookie value; a connection keeps sending the same one."""
        if self._session[0] != session:
            self._session = (session, session_hash(session))
        return self._session[1]

    def forwarding_lines(self, head: RequestHead, policy: HeaderPolicy) -> bytes:
        """X-Forwarded-* and Forwarded for a request, as head lines; cached per connection,
        because from an untrusted peer they depend only on the peer, scheme and authority."""
        key = self._fwd_key
        if key is not None and key[1] is policy and key[0] == head.authority:
            return self._fwd
        trusted = self.trusted(policy)
        fields = forwarded_fields(head.headers, self.peer_ip, self.scheme, head.authority, trusted)
        lines = b"\r\n".join(map(field_line, fields))
        if not trusted:
            self._fwd_key, self._fwd = (head.authority, policy), lines
        return lines

    # flow control and output ------------------------------------------------------------------
    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def flush(self) -> None:
        out = self.out
        if out and self.transport is not None and not self.closed:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def close(self) -> None:
        """Close after sending what is buffered."""
        self.flush()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is buffered (a truncated response shows the failure)."""
        self.out.clear()
        if self.transport is not None:
            self.closed = True
            self.transport.abort()

    def start_draining(self) -> None:
        """Finish the requests in flight, then close; used on SIGTERM."""
        self.draining = True
        if not self.queue and self.cur is None and self.tunnel is None and not self.in_head:
            self.close()

    # timeouts -------------------------------------------------------------------------------
    def _set_deadline(self, kind: int) -> None:
        timeout = self.header_timeout if kind == _HEAD else self.keepalive_timeout
        self.deadline = (self.state.now or self.loop.time()) + timeout
        self.deadline_kind = kind

    def check_timeouts(self, now: float) -> None:
        if self.closed:
            return
        if self.deadline and now >= self.deadline:
            self.deadline = 0.0
            if self.deadline_kind == _HEAD:
                self._head_timeout()
            else:
                self.close()
            return
        if (
            self.write_paused
            and now - self.paused_since >= self.state.runtime.settings.send_timeout
        ):
            self.abort()
            return
        active = self.active()
        if active is not None:
            active.check_timeouts(now)

    def _head_timeout(self) -> None:
        if self.in_head and not self.queue:
            self.input_done = True
            self.out.append(pages.standard_error(408, True))
        self.close()

"""One request and its response as they pass through the Access Point.

A :class:`ProxyExchange` routes the request, picks a backend connection (idle from the pool or
new), streams the request body up and the response down with flow control in both directions,
re-frames bodies (``chunked`` when the client speaks HTTP/1.1 and the length is unknown), and
turns every failure into a clear page or a closed connection — never a traceback.
A :class:`LocalReply` is a response the AP gives itself (errors, health).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gatehouse.access_point import pages
from gatehouse.access_point.authorize import Authorization
from gatehouse.access_point.headers import HOP_BY_HOP, request_lines
from gatehouse.access_point.pausing import PAUSE_BUFFER, PAUSE_UPSTREAM
from gatehouse.access_point.routing import strip_prefix
from gatehouse.access_point.upstream import ConnectFailed, Origin, UpstreamConnection
from gatehouse.metrics.access_point import COUNTERS

if TYPE_CHECKING:
    from gatehouse.access_point.connection import ClientConnection
    from gatehouse.access_point.request import BadRequest, RequestHead
    from gatehouse.access_point.runtime import Route, Runtime

log = logging.getLogger("gatehouse.access_point")

#: Request body bytes held while no backend connection is ready, before reading pauses.
BODY_BUFFER_LIMIT = 256 << 10
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
#: A request body of at most this many bytes (Content-Length) is kept until the answer starts,
#: so the request can go again when a pooled backend connection turns out closed.
REPLAY_LIMIT = 16 << 10
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_POLICY = (
    "This resource is protected, and no policy service is configured for this access point, "
    "so nobody can be let in yet."
)


class LocalReply:
    """A response the Access Point gives itself."""

    def __init__(self, conn: ClientConnection, data: bytes, close: bool) -> None:
        self.conn = conn
        self.data = data
        self.close = close
        self.started = False
        #: For metrics (None: off): the series of requests no resource matched, and when the
        #: reply was made (the status is in ``data``).
        series = self.series = conn.state.runtime.unrouted
        self.t0 = series.clock.now() if series is not None else 0.0

    @property
    def status(self) -> int:
        try:
            return int(self.data[9:12])
        except ValueError:
            return 0

    def start(self) -> None:
        self.started = True
        self.conn.out.append(self.data)
        self.conn.exchange_finished(self, self.close)

    def client_gone(self) -> None:
        self.started = True


class ProxyExchange(Authorization):
    """A request on its way to a backend and the response on its way back."""

    def __init__(self, conn: ClientConnection, head: RequestHead, runtime: Runtime) -> None:
        self.conn = conn
        #: What UpstreamConnection calls after each read (ResponseSink): the client's flush.
        self.upstream_flush = conn.flush
        self.head = head
        self.rt = runtime
        self.started = False
        self.done = False
        self.close_after = not head.keep_alive
        self.request_done = False
        self.body_buf: list[bytes] = []
        self.body_buffered = 0
        self.body_received = 0
        self.early_data: list[bytes] = []
        self.route: Route | None = None
        self.prefix = "/"
        self.upstream: UpstreamConnection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.retried = False
        #: The request's body as sent so far, kept to send it again (see :meth:`_attach`).
        self.replay: list[bytes] | None = None
        self.resp_started = False
        self.resp_upgrade = False
        self.chunked_out = False
        self.until_close = False
        # Timeouts are checked by the worker's sweep (see WorkerState.sweep): each is the
        # coarse time of the last activity, 0 when not running.
        self.read_since = 0.0
        self.body_since = 0.0
        self.identity = b""
        self.status = 0
        # For metrics (series None: off, and no clock is read): the series the request is
        # counted in (its resource's once routed), when its head was complete and when it
        # went to the backend.
        series = self.series = runtime.unrouted
        self.t0 = series.clock.now() if series is not None else 0.0
        self.sent_at = 0.0

    # the request ----------------------------------------------------------------------------
    def start(self) -> None:
        """Become the active exchange of the connection: route and contact a backend."""
        self.started = True
        head = self.head
        rt = self.rt
        if head.path.startswith(rt.reserved):
            self._reserved()
            return
        if head.path in rt.well_known and rt.portal is not None:
            # The OAuth discovery documents: the portal's, at the issuer's root.
            self.prefix = "/"
            if self.series is not None:
                self.series = rt.portal.series
            self._proceed(rt.portal)
            return
        match = rt.router.match(head.host, head.path)
        if match is None:
            self._local(404, pages.DEFAULT_MESSAGES[404])
            return
        route, self.prefix = match
        self.series = route.series  # None when metrics are off, as runtime.unrouted
        if not route.public:
            decider = rt.decider
            if decider is None:
                self._local(503, NO_POLICY)
            else:
                self._authorize(route, decider)
            return
        self._proceed(route)

    def _proceed(self, route: Route) -> None:
        """The request may go to the route's backends: check its size and send it."""
        head = self.head
        limit = route.max_body
        if (limit and (head.content_length or 0) > limit) or (limit and self.body_received > limit):
            self.close_after = True
            self._local(413, pages.DEFAULT_MESSAGES[413])
            return
        self.route = route
        if not self.request_done:
            if head.expect_continue:
                self.conn.out.append(CONTINUE)
            self.body_since = self.conn.state.now
        now = self.conn.loop.time()
        order = route.group.order(now)
        upstream = order[0].take_idle(now, check=not self._resendable())
        if upstream is not None:
            self._attach(upstream)
        else:
            self.connect_task = self.conn.loop.create_task(self._connect(order))

    def _resendable(self) -> bool:
        """The request can go again on a new connection if a pooled one fails: idempotent
        and without a body, or with its (small) body kept (:attr:`replay`)."""
        head = self.head
        if self.replay is not None:
            return True
        return head.method in IDEMPOTENT and not head.chunked and not head.content_length

    def _reserved(self) -> None:
        rest = self.head.path[len(self.rt.reserved) :]
        if rest == "health" and self.head.method in (b"GET", b"HEAD"):
            # Up or down only: the details are on the status listener (status.py).
            draining = self.conn.state.draining
            self.status = 503 if draining else 200
            body = pages.HEALTH_DRAINING if draining else pages.HEALTH_OK
            self.conn.out.append(
                pages.response(
                    503 if draining else 200,
                    body,
                    b"application/json",
                    self.close_after or not self.request_done,
                    self.head.method == b"HEAD",
                )
            )
            self._finish_local()
            return
        if self.rt.portal is not None:
            self.prefix = "/"
            if self.series is not None:
                self.series = self.rt.portal.series
            self._proceed(self.rt.portal)
            return
        self._local(404, "There is nothing at this address.")

    def _local(self, status: int, message: str) -> None:
        self.status = status
        close = self.close_after or not self.request_done
        page = pages.error_page(status, message, close, self.head.method == b"HEAD")
        self.conn.out.append(page)
        self.close_after = close
        self._finish_local()

    def _finish_local(self) -> None:
        self.done = True
        self._cancel_timers()
        self.conn.exchange_finished(self, self.close_after or not self.request_done)

    async def _connect(self, order: list[Origin]) -> None:
        route = self.route
        assert route is not None
        failure = ConnectFailed(502, "no backend")
        try:
            for origin in order:
                try:
                    upstream = await origin.connect(route.connect_timeout)
                except ConnectFailed as exc:
                    route.group.mark_failed(origin, self.conn.loop.time())
                    COUNTERS.upstream_error(origin.backend.url, "connect")
                    log.warning("backend %s: %s", origin.backend.url, exc)
                    failure = exc
                    continue
                if self.done:
                    upstream.close()
                    return
                self._attach(upstream)
                self.conn.flush()
                return
            self._fail(failure.status, str(failure))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connecting to a backend failed")
            self._fail(502, pages.DEFAULT_MESSAGES[502])
        finally:
            self.connect_task = None
        self.conn.flush()

    def _upstream_head(self, origin: Origin) -> bytes:
        head = self.head
        route = self.route
        assert route is not None
        rt = self.rt
        policy = rt.policy
        base = route.base_paths[origin]
        target = head.target
        if target is None or base or route.strip_prefix:
            path = strip_prefix(self.prefix, head.path) if route.strip_prefix else head.path
            target = (base + path).encode("ascii")
            if head.query is not None:
                target += b"?" + head.query
        host = head.authority if route.preserve_host else origin.host_header
        lines = [head.method + b" " + target + b" HTTP/1.1", b"Host: " + host]
        lines += request_lines(
            head.headers,
            policy.drop,
            head.connection_tokens,
            policy.allow_underscores,
            # Backends never see Gatehouse's session cookie; the portal needs it.
            None if route is rt.portal else rt.session_cookie,
        )
        if self.identity:
            lines.append(self.identity)
        lines.append(self.conn.forwarding_lines(head, policy))
        lines.append(policy.via_line_11 if head.version == b"1.1" else policy.via_line_10)
        if head.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        elif head.content_length is not None:
            lines.append(b"Content-Length: %d" % head.content_length)
        if head.upgrade is not None:
            lines.append(b"Upgrade: " + head.upgrade)
            lines.append(b"Connection: upgrade")
        lines += (b"", b"")
        return b"\r\n".join(lines)

    def _attach(self, upstream: UpstreamConnection) -> None:
        """Send the request on ``upstream``. On a pooled connection, a request that could not
        be resent otherwise (a POST, a body) keeps a body of at most :data:`REPLAY_LIMIT`
        bytes until the answer starts: when the backend closed the connection as the request
        reached it (an idle connection closed by a draining or restarting backend, which had
        not read it), it goes once more on a new connection, as ``retry-on empty-response``
        does in HAProxy and a browser does on a reused connection."""
        head = self.head
        if (
            upstream.reused
            and self.replay is None
            and not self.retried
            and (head.method not in IDEMPOTENT or head.content_length)
            and (head.content_length or 0) <= REPLAY_LIMIT
            and not head.chunked
            and head.upgrade is None
        ):
            self.replay = []
        self.upstream = upstream
        upstream.attach(self)
        if self.conn.write_paused:
            upstream.pause_reading()
        data = self._upstream_head(upstream.origin)
        replay = self.replay
        if replay is not None and self.retried:
            # Sent again after a pooled connection failed unanswered: the body so far, with
            # what came in while the new connection was made.
            if self.body_buf:
                replay += self._take_buffered()
            data = b"".join([data, *replay])
        elif self.body_buf or self.head.chunked:
            parts = [data]
            if self.body_buf:
                buffered = self._take_buffered()
                parts += buffered
                if replay is not None:
                    replay += buffered
            if self.request_done and self.head.chunked:
                parts.append(b"0\r\n\r\n")
            data = b"".join(parts)
        series = self.series
        if series is not None:
            self.sent_at = series.clock.now()
        upstream.write(data)
        if self.request_done:
            self._start_read_timer()

    def _take_buffered(self) -> list[bytes]:
        """The body parts that waited for the backend connection; the client is read again."""
        buffered = self.body_buf
        self.body_buf = []
        self.body_buffered = 0
        self.conn.resume(PAUSE_BUFFER)
        return buffered

    def _start_read_timer(self) -> None:
        if not self.conn.write_paused:
            self.read_since = self.conn.state.now

    def check_timeouts(self, now: float) -> None:
        """Called by the worker's sweep for the active exchange of each connection."""
        if self.body_since and now - self.body_since >= self.rt.settings.body_timeout:
            self._body_timeout()
        elif self.read_since and self.route and now - self.read_since >= self.route.read_timeout:
            self._read_timeout()

    def _frame(self, data: bytes) -> bytes:
        if self.head.chunked:
            return b"%x\r\n" % len(data) + data + b"\r\n"
        return data

    def request_body(self, data: bytes) -> None:
        self.body_received += len(data)
        route = self.route
        if route is not None and route.max_body and self.body_received > route.max_body:
            self.client_error_status(413, pages.DEFAULT_MESSAGES[413])
            return
        if self.body_since:
            self.body_since = self.conn.state.now
        if self.done:
            return
        upstream = self.upstream
        if upstream is not None:
            if self.replay is not None:
                self.replay.append(data)
            upstream.write(self._frame(data))
            return
        self.body_buf.append(self._frame(data))
        self.body_buffered += len(data)
        if self.body_buffered > BODY_BUFFER_LIMIT:
            self.conn.pause(PAUSE_BUFFER)

    def request_complete(self) -> None:
        self.request_done = True
        self.body_since = 0.0
        if self.done:
            return
        upstream = self.upstream
        if upstream is not None:
            if self.head.chunked:
                upstream.write(b"0\r\n\r\n")
            self._start_read_timer()

    # the response (called by UpstreamConnection) --------------------------------------------
    def upstream_headers_complete(self) -> None:
        upstream = self.upstream
        if upstream is None or self.done:
            return
        if self.read_since:
            self.read_since = self.conn.state.now
        code: int = upstream.parser.get_status_code()
        if code == 101:
            if self.head.upgrade is None:
                self._upstream_broken("backend switched protocols unasked")
            else:
                self.resp_upgrade = True
            return
        fields = upstream.fields
        if code < 200:
            # Interim responses (100 Continue, 103 Early Hints) are not relayed: the AP
            # answered the client's Expect itself.
            fields.reset()
            return
        self.status = code
        timings = upstream.origin.timings
        series = self.series
        if timings is not None and series is not None:  # metrics on: the backend's time
            timings.observe(series.clock.now() - self.sent_at)
        head = self.head
        # Over https the AP's own HSTS policy (if on) replaces a backend's: one such field.
        kept = fields.close(self.rt.hsts if self.conn.scheme == b"https" else b"")
        lines = [pages.status_line(code), *kept]
        if fields.content_length is not None and code != 204:
            lines.append(b"Content-Length: " + fields.content_length)
        elif head.method != b"HEAD" and code != 204 and code != 304:
            self.until_close = not fields.chunked
            if head.version == b"1.1":
                self.chunked_out = True
                lines.append(b"Transfer-Encoding: chunked")
            else:
                self.close_after = True
        lines.append(self.rt.policy.via_line_11)
        if head.upgrade is not None:
            self.close_after = True  # the client may already have sent the new protocol
        if self.conn.draining:
            self.close_after = True
        if self.close_after or not self.request_done:
            lines.append(b"Connection: close")
        elif head.version == b"1.0":
            lines.append(b"Connection: keep-alive")
        lines += (b"", b"")
        self.conn.out.append(b"\r\n".join(lines))
        self.resp_started = True
        self.replay = None
        if head.method == b"HEAD" and code not in (204, 304):
            # llhttp would wait for the body the headers announce; a HEAD response has none.
            upstream.reset_parser()
            self._response_complete()

    def upstream_body(self, data: bytes) -> None:
        if not self.resp_started or self.done:
            return
        if self.read_since:
            self.read_since = self.conn.state.now
        if self.chunked_out:
            self.conn.out.append(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            self.conn.out.append(data)

    def upstream_message_complete(self) -> None:
        if not self.resp_started or self.done:
            return
        if self.chunked_out:
            self.conn.out.append(b"0\r\n\r\n")
        self._response_complete()

    def _response_complete(self) -> None:
        self.done = True
        self._cancel_timers()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            # Not while its socket buffer is full: the backend answered before it read the
            # whole body, and the next request would queue behind the rest of it.
            reusable = (
                self.request_done
                and not self.until_close
                and not self.resp_upgrade
                and not self.conn.paused & PAUSE_UPSTREAM
                and upstream.parser.should_keep_alive()
            )
            if reusable:
                upstream.origin.release(upstream, self.conn.loop.time())
            else:
                upstream.close()
        self.conn.exchange_finished(self, self.close_after or not self.request_done)

    def upstream_upgraded(self, rest: bytes) -> None:
        upstream = self.upstream
        if upstream is None or self.done:
            return
        if not self.resp_upgrade:
            self._upstream_broken("unexpected protocol switch from backend")
            return
        fields = upstream.fields
        lines = [pages.status_line(101), *fields.close(), self.rt.policy.via_line_11]
        lines.append(b"Upgrade: " + (fields.upgrade or self.head.upgrade or b""))
        lines += (b"Connection: upgrade", b"", b"")
        conn = self.conn
        conn.out.append(b"\r\n".join(lines))
        if rest:
            conn.out.append(rest)
        self.resp_started = True
        self._cancel_timers()
        upstream.tunnel = True
        series = self.series
        if series is not None:
            series.add(self.head.method, 101, series.clock.now() - self.t0)
        conn.enter_tunnel(self)
        if self.early_data:
            upstream.write(b"".join(self.early_data))
            self.early_data = []

    def upstream_tunnel_data(self, data: bytes) -> None:
        self.conn.out.append(data)

    def client_tunnel_data(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)

    def client_tunnel_eof(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            if upstream.transport.can_write_eof():
                upstream.transport.write_eof()
            else:
                upstream.close()

    def upstream_failed(self, reason: str, exc: BaseException | None) -> None:
        upstream, self.upstream = self.upstream, None
        if self.done:
            return
        if self.resp_upgrade and self.resp_started:
            # A tunnel ends when either side closes.
            self.done = True
            self.conn.close()
            return
        if self.resp_started:
            if self.until_close and exc is None and upstream is not None and upstream.closed:
                # The backend ended a body delimited by closing the connection.
                if self.chunked_out:
                    self.conn.out.append(b"0\r\n\r\n")
                self._response_complete()
                return
            log.warning("backend failed mid-response: %s", reason)
            if upstream is not None:
                COUNTERS.upstream_error(upstream.origin.backend.url, "failed")
            self.done = True
            self._cancel_timers()
            if upstream is not None:
                upstream.abort()
            self.conn.abort()
            return
        if upstream is not None:
            upstream.abort()
            if (
                upstream.reused
                and not upstream.got_bytes
                and not self.retried
                and self._resendable()
                and self.route is not None
            ):
                # A pooled connection the backend had closed: safe to retry on a new one.
                self.retried = True
                self.connect_task = self.conn.loop.create_task(
                    self._connect([upstream.origin, *self.route.group.order(self.conn.loop.time())])
                )
                return
        log.warning("backend failed: %s", reason)
        if upstream is not None:
            COUNTERS.upstream_error(upstream.origin.backend.url, "failed")
        self._fail(502, pages.DEFAULT_MESSAGES[502])

    def _upstream_broken(self, reason: str) -> None:
        """The backend sent something we will not relay."""
        self.upstream_failed(reason, RuntimeError(reason))

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.conn.pause(PAUSE_UPSTREAM)
        else:
            self.conn.resume(PAUSE_UPSTREAM)

    # failures and flow control ----------------------------------------------------------------
    def _fail(self, status: int, message: str) -> None:
        """Answer with an error page before any of the response was sent."""
        if self.done:
            return
        self.status = status
        self.done = True
        self._cancel_timers()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()
        close = self.close_after or not self.request_done
        page = pages.error_page(status, message, close, self.head.method == b"HEAD")
        self.conn.out.append(page)
        self.conn.exchange_finished(self, close)

    def client_error(self, error: BadRequest) -> None:
        """The rest of the request turned out malformed (e.g. a bad chunk)."""
        self.client_error_status(error.status, f"{pages.DEFAULT_MESSAGES.get(error.status, '')}")

    def client_error_status(self, status: int, message: str) -> None:
        self.close_after = True
        self.request_done = False
        if self.resp_started:
            self.client_gone()
            self.conn.abort()
            return
        if not self.started:
            return
        self._fail(status, message)

    def client_gone(self) -> None:
        self.done = True
        self._cancel_timers()
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()

    def client_paused(self, paused: bool) -> None:
        upstream = self.upstream
        if upstream is None:
            return
        if paused:
            upstream.pause_reading()
            self.read_since = 0.0
        else:
            upstream.resume_reading()
            if self.request_done and not self.done:
                self.read_since = self.conn.state.now

    def _cancel_timers(self) -> None:
        self.read_since = self.body_since = 0.0

    def _read_timeout(self) -> None:
        self.read_since = 0.0
        if self.done:
            return
        if self.upstream is not None:
            COUNTERS.upstream_error(self.upstream.origin.backend.url, "timeout")
        if self.resp_started:
            log.warning("backend stopped sending mid-response")
            self.client_gone()
            self.conn.abort()
            return
        self._fail(504, pages.DEFAULT_MESSAGES[504])
        self.conn.flush()

    def _body_timeout(self) -> None:
        self.body_since = 0.0
        if self.done or self.request_done:
            return
        self.client_error_status(408, "The request body stopped arriving.")
        self.conn.flush()


__all__ = ["HOP_BY_HOP", "LocalReply", "ProxyExchange"]

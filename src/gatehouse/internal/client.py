"""The failover client: every internal call between Gatehouse services goes through it.

A call tries the endpoints of one service in the order :class:`Endpoints` gives (up ones in
configured order, down ones last) and moves to the next endpoint within the same call when
an attempt fails: connect refused or timed out, read timeout, connection reset or closed, an
invalid answer, or a 5xx. A request that is not retry-safe moves on only when it was never
sent (the connection could not be made); once sent, the server may have acted on it. 4xx
answers are answers: they are returned, not retried. The wire is HTTP/1.1 with JSON bodies
over persistent connections (``http1.py``).

Fail-back: with background probes running (:meth:`FailoverClient.start_probing`), each down
endpoint is asked its health path every ``probe_interval`` and comes back after ``rise``
passes in a row; calls make no trials on it meanwhile, so they never wait on a dead
primary. Without probes, one call tries it again after ``retry_after`` (``endpoints.py``).
:meth:`FailoverClient.metrics` is a plain snapshot of states and counters.

Exceptions::

    GatehouseError
     └── InternalCallError         no usable answer (HTTP 503, code "unavailable" at the edge)
          ├── AllEndpointsFailed   every endpoint was tried; carries each one's failure
          ├── RequestNotRetried    a request that is not retry-safe failed after being sent
          ├── StreamRefused        a stream was answered with a 4xx (misconfiguration)
          ├── StreamBroken         an established stream failed; reconnect to go on
          └── ClientClosed         the client was closed (before or during the call)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

from gatehouse.config import failover as defaults
from gatehouse.config.failover import FailoverSettings
from gatehouse.errors import GatehouseError
from gatehouse.internal.endpoints import Clock, Endpoint, Endpoints
from gatehouse.internal.http1 import FailureKind, Pool, Response, WireError
from gatehouse.trust.tls import ClientTLS

__all__ = [
    "DEFAULT_HEALTH_PATH",
    "AllEndpointsFailed",
    "ClientClosed",
    "Endpoint",
    "Endpoints",
    "FailoverClient",
    "FailoverSettings",
    "Failure",
    "FailureKind",
    "InternalCallError",
    "RequestNotRetried",
    "Response",
    "StreamBroken",
    "StreamRefused",
]

log = logging.getLogger("gatehouse.internal")

#: Where Policy and Authentication answer health probes; Administration uses
#: ``/api/v1/health``.
DEFAULT_HEALTH_PATH = "/internal/v1/health"
#: Warm connections kept to each backup endpoint (``standby``) by clients built from settings.
STANDBY_CONNECTIONS = 2
#: How many backup endpoints get them: the next ones in line after the endpoint in use. A
#: failover sends the burst to the first backup that is up; one more in line would be warmed
#: against a double failure at the price of the installation's size squared (every client
#: times every endpoint it lists: 40 Access Points listing 30 Policy services kept 2,320
#: connections warm with a thousand health requests a second, the two cores' whole time).
STANDBY_ENDPOINTS = 1
#: Standby connections are refreshed every this fraction of the idle timeout.
STANDBY_REFRESH = 0.6

_METHOD = re.compile(r"[A-Z]{1,20}\Z")
# Bytes that must never reach a request line: controls, space, non-ASCII, and '#'.
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f-\xff#]")
_BAD_TOKEN = re.compile(r"[^\x21-\x7e]")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_JSON_HEAD = b"Content-Type: application/json\r\nContent-Length: "
# A stale idle connection shows up as one of these, with no byte of an answer.
_STALE = (FailureKind.CLOSED, FailureKind.RESET)
# A check that failed only by waiting too long: the endpoint may be alive but busy.
_SLOW = (FailureKind.CONNECT_TIMEOUT, FailureKind.READ_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Failure:
    """How one attempt on one endpoint failed."""

    endpoint: str
    kind: FailureKind
    detail: str = ""
    #: The 5xx answer, for ``kind == SERVER_ERROR``.
    response: Response | None = None

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


class InternalCallError(GatehouseError):
    """An internal call got no usable answer. Services answer their own caller 503."""

    status = 503
    code = "unavailable"

    def __init__(self, method: str, path: str, failures: Sequence[Failure], what: str) -> None:
        self.method = method
        self.path = path
        self.failures = tuple(failures)
        details = "; ".join(str(f) for f in self.failures)
        super().__init__(f"{method} {path} {what}" + (f": {details}" if details else ""))


class AllEndpointsFailed(InternalCallError):
    """Every endpoint was tried and failed; ``failures`` has one entry per attempt."""

    def __init__(self, method: str, path: str, failures: Sequence[Failure]) -> None:
        super().__init__(method, path, failures, "failed on every endpoint")


class RequestNotRetried(InternalCallError):
    """A request that is not retry-safe failed after it was sent. It was not sent to another
    endpoint because the first may have acted on it."""

    def __init__(self, method: str, path: str, failures: Sequence[Failure]) -> None:
        super().__init__(method, path, failures, "failed after it was sent (not retried)")


class StreamRefused(InternalCallError):
    """A stream request was answered with a 4xx: retrying elsewhere would not help."""

    def __init__(self, path: str, endpoint: str, response: Response) -> None:
        self.response = response
        failure = Failure(endpoint, FailureKind.INVALID, f"HTTP {response.status}", response)
        super().__init__("GET", path, [failure], "was refused")


class StreamBroken(InternalCallError):
    """An established stream failed (reset, closed mid-body, idle timeout)."""

    def __init__(self, path: str, failure: Failure) -> None:
        super().__init__("GET", path, [failure], "stream broke")


class ClientClosed(InternalCallError):
    """The client was closed before or during the call."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(method, path, (), "abandoned: the client is closed")


_STARTS: dict[tuple[str, str], bytes] = {}


def _request_start(method: str, path: str) -> bytes:
    """``METHOD target``, refusing anything that could break the request line."""
    key = (method, path)
    start = _STARTS.get(key)
    if start is None:
        start = _STARTS[key] = _check_request_start(method, path)
        if len(_STARTS) > 512:  # paths with ids in them: keep the cache bounded
            _STARTS.clear()
    return start


def _check_request_start(method: str, path: str) -> bytes:
    if not _METHOD.match(method):
        raise ValueError(f"invalid method {method!r}")
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    target = path.encode("utf-8")
    if _BAD_TARGET.search(target):
        raise ValueError(f"path must be percent-encoded ASCII without spaces: {path!r}")
    return b"%s %s" % (method.encode("ascii"), target)


class FailoverClient:
    """Calls one service over its ordered endpoints, with failover and pooled connections.

    Services build it with :meth:`from_settings` and call :meth:`start_probing` once inside
    their event loop; :meth:`aclose` stops the probes and closes every connection.

    Args:
        endpoints: an :class:`Endpoints` (shared state, readable by metrics) or base URLs.
        connect_timeout: seconds to establish a TCP connection (probes too).
        timeout: seconds for a whole answer, per attempt (``call`` may override it).
        bearer_token: sent as ``Authorization: Bearer`` on every request.
        max_idle: idle connections kept per endpoint.
        idle_timeout: seconds an idle connection is kept. Below uvicorn's 5 s keep-alive, so
            the server rarely closes a connection just as a request goes out.
        health_path: what probes GET; a 2xx answer passes.
        probe_interval: seconds between probes of a down endpoint once
            :meth:`start_probing` is called; ``None``: no background probes.
        probe_timeout: seconds for a probe's whole answer.
        tls: mutual TLS to every endpoint (whatever the URL's scheme says), checking each
            server's identity right after the handshake; None: plaintext.
        standby: connections kept open and warm to each of the ``standby_endpoints`` up
            endpoints that follow the one in use, once :meth:`start_probing` runs, so that a
            failover's first requests find a connection already through its TLS handshake
            (0: none).
        standby_endpoints: how many backups, in order, get ``standby`` connections.
    """

    def __init__(
        self,
        endpoints: Endpoints | Sequence[str],
        *,
        connect_timeout: float = defaults.CONNECT_TIMEOUT,
        timeout: float = defaults.TIMEOUT,
        bearer_token: str | None = None,
        max_idle: int = 8,
        idle_timeout: float = 4.0,
        health_path: str = DEFAULT_HEALTH_PATH,
        probe_interval: float | None = None,
        probe_timeout: float = defaults.PROBE_TIMEOUT,
        tls: ClientTLS | None = None,
        standby: int = 0,
        standby_endpoints: int = STANDBY_ENDPOINTS,
    ) -> None:
        if not isinstance(endpoints, Endpoints):
            endpoints = Endpoints(endpoints)
        if bearer_token is not None and (not bearer_token or _BAD_TOKEN.search(bearer_token)):
            raise ValueError("bearer token must be non-empty visible ASCII")
        for what, value in (
            ("connect_timeout", connect_timeout),
            ("timeout", timeout),
            ("probe_timeout", probe_timeout),
            ("probe_interval", 1.0 if probe_interval is None else probe_interval),
        ):
            if not 0 < value < float("inf"):
                raise ValueError(f"{what} must be a positive number of seconds")
        if standby < 0 or standby > max_idle:
            raise ValueError("standby must be between 0 and max_idle connections")
        if standby_endpoints < 0:
            raise ValueError("standby_endpoints must not be negative")
        self._health_start = _check_request_start("GET", health_path)
        self.endpoints = endpoints
        self.standby = standby
        self.standby_endpoints = standby_endpoints
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.health_path = health_path
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.idle_timeout = idle_timeout
        auth = (
            b"" if bearer_token is None else b"Authorization: Bearer %s\r\n" % bearer_token.encode()
        )
        self._heads = [
            b" HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive\r\n%s"
            % (ep.host_header.encode("ascii"), auth)
            for ep in endpoints.all
        ]
        self._pools = [
            Pool(
                ep.host,
                ep.port,
                clock=endpoints.clock,
                max_idle=max_idle,
                idle_timeout=idle_timeout,
                tls=tls,
                index=ep.index,
            )
            for ep in endpoints.all
        ]
        if tls is not None and tls.revocations is not None:
            tls.revocations.watch(self)
        #: The endpoint the latest stream was established on.
        self.current_endpoint: Endpoint | None = None
        self._closed = False
        # Background probes: the loop, the probe in flight per endpoint index, and what
        # wakes the loop when an endpoint goes down.
        self._prober: asyncio.Task[None] | None = None
        self._probes: dict[int, asyncio.Task[bool]] = {}
        self._wake: asyncio.Event | None = None
        self._keeper: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        urls: Sequence[str],
        settings: FailoverSettings,
        *,
        name: str = "",
        health_path: str = DEFAULT_HEALTH_PATH,
        bearer_token: str | None = None,
        clock: Clock = time.monotonic,
        tls: ClientTLS | None = None,
        standby: int = STANDBY_CONNECTIONS,
        max_idle: int = 8,
    ) -> FailoverClient:
        """A client for the service at ``urls`` (most preferred first), tuned by ``settings``.

        ``name`` names the service in log lines and metrics (``"policy"``); ``health_path``
        is what probes GET on it. Probing starts with :meth:`start_probing`. Raises
        ``ConfigError`` for bad URLs (paths ``endpoints[i]``).
        """
        endpoints = Endpoints(
            urls,
            retry_after=settings.retry_after,
            rise=settings.rise,
            fall=settings.fall,
            clock=clock,
            name=name,
        )
        return cls(
            endpoints,
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            bearer_token=bearer_token,
            health_path=health_path,
            probe_interval=settings.probe_interval,
            probe_timeout=settings.probe_timeout,
            tls=tls,
            standby=standby,
            max_idle=max_idle,
        )

    # calls ------------------------------------------------------------------------------------
    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        retry_safe: bool,
        timeout: float | None = None,
    ) -> Response:
        """Send one request and return the first usable answer (status < 500).

        ``json`` (if not ``None``) is sent as the JSON body. Raises
        :class:`AllEndpointsFailed` or :class:`RequestNotRetried`; ``ValueError`` for a
        method or path that cannot go on a request line.
        """
        body = None if json is None else orjson.dumps(json)
        return await self.call_raw(method, path, body, retry_safe=retry_safe, timeout=timeout)

    async def call_raw(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        retry_safe: bool,
        timeout: float | None = None,
    ) -> Response:
        """:meth:`call` with a body already encoded as JSON (``None``: no body)."""
        if self._closed:
            raise ClientClosed(method, path)
        start = _request_start(method, path)
        if body is None and method in _BODY_METHODS:
            body = b""
        read_timeout = self.timeout if timeout is None else timeout
        head_request = method == "HEAD"
        endpoints = self.endpoints
        clock = endpoints.clock
        ep = endpoints.pick()
        tried: list[Endpoint] = []
        failures: list[Failure] = []
        while ep is not None:
            data = self._encode(ep, start, body)
            started = clock()
            try:
                response = await self._attempt(ep, data, read_timeout, retry_safe, head_request)
            except WireError as exc:
                if self._closed:
                    raise ClientClosed(method, path) from None
                failures.append(Failure(ep.url, exc.kind, exc.detail))
                # A POST on a pooled connection the server had just closed says nothing
                # about the server: don't mark it down for that.
                if retry_safe or not (exc.reused and exc.kind in _STALE and not exc.answered):
                    endpoints.failed(ep, str(exc), started)
                if exc.sent and not retry_safe:
                    raise RequestNotRetried(method, path, failures) from None
            else:
                status = response.status
                if status < 500:
                    endpoints.succeeded(ep, started)
                    return response
                failures.append(
                    Failure(ep.url, FailureKind.SERVER_ERROR, f"HTTP {status}", response)
                )
                endpoints.failed(ep, f"answered {status}", started)
                if not retry_safe:
                    raise RequestNotRetried(method, path, failures)
            tried.append(ep)
            following = endpoints.pick(tried)
            if following is not None:
                endpoints.failover(ep, following)
            ep = following
        raise AllEndpointsFailed(method, path, failures)

    async def _attempt(
        self, ep: Endpoint, data: bytes, timeout: float, retry_safe: bool, head_request: bool
    ) -> Response:
        pool = self._pools[ep.index]
        conn = pool.take(check=not retry_safe)
        if conn is not None:
            try:
                return await conn.exchange(data, timeout, head_request)
            except WireError as exc:
                if not ((retry_safe or not exc.sent) and exc.kind in _STALE and not exc.answered):
                    raise
                # The server closed this idle connection as the request went out (keep-alive
                # timeout, restart): once more on a fresh connection to the same endpoint.
            conn = await pool.connect(self.connect_timeout)
        else:
            conn = await pool.checkout(self.connect_timeout, check=not retry_safe)
        return await conn.exchange(data, timeout, head_request)

    def _encode(self, ep: Endpoint, start: bytes, body: bytes | None) -> bytes:
        head = self._heads[ep.index]
        if body is None:
            return b"%s%s\r\n" % (start, head)
        if not body:
            return b"%s%sContent-Length: 0\r\n\r\n" % (start, head)
        return b"%s%s%s%d\r\n\r\n%s" % (start, head, _JSON_HEAD, len(body), body)

    # streams ----------------------------------------------------------------------------------
    async def stream_lines(
        self, path: str, *, idle_timeout: float | None = None
    ) -> AsyncGenerator[bytes, None]:
        """GET ``path`` and yield each non-empty line of the body as it arrives (without its
        line ending), until the body ends. Close it (``contextlib.aclosing``) when leaving
        early; a generator dropped unfinished is closed by the event loop's finaliser.

        Establishing the stream fails over like a retry-safe call (:class:`AllEndpointsFailed`,
        :class:`StreamRefused` for a 4xx). Once established, :attr:`current_endpoint` says
        where; a failure then raises :class:`StreamBroken` and marks that endpoint down, so
        calling again reconnects to the next one. ``idle_timeout``: seconds without a byte
        before the stream counts as broken.
        """
        if self._closed:
            raise ClientClosed("GET", path)
        start = _request_start("GET", path)
        endpoints = self.endpoints
        failures: list[Failure] = []
        tried: list[Endpoint] = []
        ep = endpoints.pick()
        conn = None
        while ep is not None:
            started = endpoints.clock()
            pool = self._pools[ep.index]
            try:
                conn = await pool.connect(self.connect_timeout)
                status = await conn.start_stream(self._encode(ep, start, None), self.timeout)
                if status == 200:
                    break
                response = await conn.finish(self.timeout)
            except WireError as exc:
                if self._closed:
                    raise ClientClosed("GET", path) from None
                failures.append(Failure(ep.url, exc.kind, exc.detail))
                endpoints.failed(ep, str(exc), started)
            else:
                if response.status < 500:
                    endpoints.succeeded(ep, started)
                    raise StreamRefused(path, ep.url, response)
                failures.append(
                    Failure(ep.url, FailureKind.SERVER_ERROR, f"HTTP {response.status}", response)
                )
                endpoints.failed(ep, f"answered {response.status}", started)
            conn = None
            tried.append(ep)
            following = endpoints.pick(tried)
            if following is not None:
                endpoints.failover(ep, following)
            ep = following
        if ep is None or conn is None:
            raise AllEndpointsFailed("GET", path, failures)

        endpoints.succeeded(ep, started)
        self.current_endpoint = ep
        try:
            conn.follow_lines()
            while True:
                try:
                    batch = await conn.next_lines(idle_timeout)
                except WireError as exc:
                    if self._closed:
                        raise ClientClosed("GET", path) from None
                    endpoints.failed(ep, f"stream broke: {exc}")
                    raise StreamBroken(path, Failure(ep.url, exc.kind, exc.detail)) from None
                if batch is None:
                    return
                for line in batch:
                    yield line
        finally:
            conn.close()

    def revocations_changed(self, serials: frozenset[int]) -> None:
        """A new revocation list (see :meth:`.Revocations.watch`). An endpoint whose latest
        handshake showed a certificate on it goes down now, not at the next call's refused
        handshake (until then, with no call failing on it, it would stay up and first); an
        up endpoint this client never shook hands with is probed now, so a revoked one goes
        down the same way (its handshake is refused). Probes keep failing on a revoked
        endpoint until a certificate that is not revoked answers."""
        if self._closed:
            return
        unknown: list[Endpoint] = []
        down = self.endpoints.down()
        for ep, pool in zip(self.endpoints.all, self._pools, strict=True):
            serial = pool.peer_serial
            if serial is None:
                if ep not in down:
                    unknown.append(ep)
            elif serial in serials:
                self.endpoints.failed(ep, f"its certificate (serial {serial:x}) is revoked")
        if unknown and serials:
            try:
                for ep in unknown:
                    self._probe_task(ep, self._health_start)
            except RuntimeError:  # no running event loop here: the next call will tell
                pass

    # background probes ------------------------------------------------------------------------
    @property
    def probing(self) -> bool:
        """The background probes are running."""
        return self._prober is not None and not self._prober.done()

    def start_probing(self) -> bool:
        """Start probing down endpoints in the background, every ``probe_interval`` seconds,
        in the running event loop; from now on only probes (``rise`` passes in a row) bring a
        down endpoint back, and calls make no ``retry_after`` trials.

        Nothing is probed, and the task sleeps, while every endpoint is up. At most one probe
        per endpoint is in flight. Returns whether probes run (``False`` without a
        ``probe_interval``); calling it again does nothing. :meth:`aclose` stops them.
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        if self.probe_interval is None:
            return False
        if self._prober is None:
            loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self.endpoints.watch(self._on_transition)
            self.endpoints.probes_started()
            label = self.endpoints.name or "service"
            self._prober = loop.create_task(
                self._probe_loop(self.probe_interval, self._wake), name=f"probe {label}"
            )
            if self.standby and len(self.endpoints.all) > 1:
                self._keeper = loop.create_task(self._standby_loop(), name=f"standby {label}")
        return True

    async def stop_probing(self) -> None:
        """Stop the background probes and wait until they are gone; fail-back goes back to
        ``retry_after`` trials."""
        prober, self._prober = self._prober, None
        keeper, self._keeper = self._keeper, None
        if prober is None:
            return
        self.endpoints.unwatch(self._on_transition)
        self.endpoints.probes_stopped()
        tasks = [prober, *self._probes.values(), *([keeper] if keeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_transition(self, ep: Endpoint, up: bool) -> None:
        if not up and self._wake is not None:
            self._wake.set()

    async def _probe_loop(self, interval: float, wake: asyncio.Event) -> None:
        endpoints = self.endpoints
        while True:
            if not endpoints.down():
                # All up: sleep until an endpoint goes down, at no cost meanwhile.
                wake.clear()
                await wake.wait()
            # The first probe one interval after the failure: right away it would fail too.
            await asyncio.sleep(interval)
            for ep in endpoints.due_probes():
                self._probe_task(ep, self._health_start)

    def _probe_task(self, ep: Endpoint, start: bytes) -> asyncio.Task[bool]:
        """The probe of ``ep`` in flight, or a new one: probes never pile up on a slow
        endpoint."""
        task = self._probes.get(ep.index)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._probe_one(ep, start), name=f"probe {ep.url}"
            )
            self._probes[ep.index] = task
            task.add_done_callback(functools.partial(self._probe_done, ep.index))
        return task

    def _probe_done(self, index: int, task: asyncio.Task[bool]) -> None:
        if self._probes.get(index) is task:
            del self._probes[index]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("probe of %s crashed", self.endpoints.all[index].url, exc_info=exc)

    async def _probe_one(self, ep: Endpoint, start: bytes) -> bool:
        endpoints = self.endpoints
        started = endpoints.clock()
        try:
            response = await self._attempt(
                ep, self._encode(ep, start, None), self.probe_timeout, True, False
            )
        except WireError as exc:
            if self._closed:
                return False
            endpoints.probe_result(ep, False, f"probe: {exc}", started, slow=exc.kind in _SLOW)
            return False
        ok = 200 <= response.status < 300
        endpoints.probe_result(ep, ok, f"probe answered {response.status}", started)
        return ok

    async def _standby_loop(self) -> None:
        """Keep ``standby`` connections warm to the ``standby_endpoints`` up endpoints that
        follow the one calls go to (the first up): where a failover would go next.

        A failover sends every request at once to an endpoint that had none: without warm
        connections each of them waits for a new TLS handshake, on a machine busy with the
        same burst. A health request on each standby connection, more often than the idle
        timeout (ours and the server's keep-alive), keeps them open; one that fails is
        evidence like a failed probe, so a dead secondary is known before a failover needs it.
        """
        endpoints = self.endpoints
        while True:
            await asyncio.sleep(self.idle_timeout * STANDBY_REFRESH)
            down = endpoints.down()
            backups = [ep for ep in endpoints.all if ep not in down][1 : 1 + self.standby_endpoints]
            await asyncio.gather(
                *(self._keep_warm(ep) for ep in backups for _ in range(self.standby))
            )

    async def _keep_warm(self, ep: Endpoint) -> None:
        started = self.endpoints.clock()
        try:
            response = await self._attempt(
                ep, self._encode(ep, self._health_start, None), self.probe_timeout, True, False
            )
        except WireError as exc:
            if not self._closed:
                self.endpoints.probe_result(
                    ep, False, f"standby connection: {exc}", started, slow=exc.kind in _SLOW
                )
            return
        if not 200 <= response.status < 300:
            self.endpoints.probe_result(
                ep, False, f"standby connection answered {response.status}", started
            )

    async def probe(self, path: str | None = None, *, include_up: bool = False) -> dict[str, bool]:
        """Probe every down endpoint (every endpoint with ``include_up``) now, in parallel,
        and report each outcome to :meth:`Endpoints.probe_result`: a 2xx passes.

        ``path`` defaults to the client's health path; a probe of it already in flight (from
        the background probes) is awaited rather than doubled. Returns ``{url: passed}``.
        """
        if self._closed:
            raise ClientClosed("GET", path or self.health_path)
        endpoints = self.endpoints
        targets = list(endpoints.all) if include_up else endpoints.down()
        if path is None or path == self.health_path:
            tasks = [self._probe_task(ep, self._health_start) for ep in targets]
            # Shielded: cancelling this call leaves the shared probes to finish; aclose
            # cancels them, which this call reports as the client being closed.
            outcomes = await asyncio.gather(
                *(asyncio.shield(task) for task in tasks), return_exceptions=True
            )
            results = []
            for outcome in outcomes:
                if self._closed:
                    raise ClientClosed("GET", self.health_path)
                if isinstance(outcome, asyncio.CancelledError):
                    outcome = False  # stopped by stop_probing: no answer
                elif isinstance(outcome, BaseException):
                    raise outcome
                results.append(outcome)
        else:
            start = _request_start("GET", path)
            results = await asyncio.gather(*(self._probe_one(ep, start) for ep in targets))
        return {ep.url: ok for ep, ok in zip(targets, results, strict=True)}

    # metrics and lifecycle --------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """A JSON-ready snapshot for health and metrics answers: each endpoint's state (
        ``since``: UNIX time of its last transition; ``state_seconds``: how long it has been
        in its state; both ``None`` if it never changed) and counters, and the client's
        counters (``transitions`` = ``down`` + ``up``)."""
        endpoints = self.endpoints
        now = endpoints.clock()
        wall = time.time()
        rows: list[dict[str, Any]] = []
        for ep, st in zip(endpoints.all, endpoints.status(), strict=True):
            age = None if st.since is None else max(0.0, now - st.since)
            rows.append(
                {
                    "url": st.url,
                    "up": st.up,
                    "since": None if age is None else round(wall - age, 3),
                    "state_seconds": None if age is None else round(age, 3),
                    "reason": st.reason,
                    "passes": st.passes,
                    "went_down": st.went_down,
                    "came_up": st.came_up,
                    "failovers": st.failovers,
                    "probes_passed": st.probes_passed,
                    "probes_failed": st.probes_failed,
                    "probe_in_flight": ep.index in self._probes,
                    "probe_every": st.probe_every,
                }
            )
        return {
            "service": endpoints.name,
            "probing": self.probing,
            "rise": endpoints.rise,
            "endpoints": rows,
            "counters": dict(endpoints.counters),
        }

    def routing(self) -> dict[str, Any]:
        """Where calls go now, for health answers and ``gatehouse cluster status``: ``using``
        is the endpoint the next call tries first (the first one up, in configured order;
        ``None`` when every one is down), ``endpoints`` each one's URL, state and ``since``
        (UNIX time of its last transition, ``None`` if it never changed), and ``counters``
        the client's transitions, failovers and probes so far (the full snapshot is
        :meth:`metrics`)."""
        endpoints = self.endpoints
        states = endpoints.status()
        now = endpoints.clock()
        wall = time.time()
        using = next((st.url for st in states if st.up), None)
        return {
            "using": using,
            "endpoints": [
                {
                    "url": st.url,
                    "up": st.up,
                    "since": None
                    if st.since is None
                    else round(wall - max(0.0, now - st.since), 3),
                }
                for st in states
            ],
            "counters": dict(endpoints.counters),
        }

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """Per endpoint: connections opened so far, open now, idle now."""
        return {
            ep.url: {"opened": pool.opened, "open": len(pool.open), "idle": len(pool.idle)}
            for ep, pool in zip(self.endpoints.all, self._pools, strict=True)
        }

    async def aclose(self) -> None:
        """Stop the probes, close every connection (in-flight calls fail) and wait until
        they are closed."""
        self._closed = True
        await self.stop_probing()
        await asyncio.gather(*(pool.aclose() for pool in self._pools))

    async def __aenter__(self) -> FailoverClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

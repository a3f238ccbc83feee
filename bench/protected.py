"""Client side of the protected-resource benchmarks, used by ``bench/run.py``.

``run.py`` starts the servers (backend, Authentication and Policy services, Access Points);
this module only talks to them over HTTP/1.1 on keep-alive connections:

- :func:`login` signs in through an Access Point's portal relay and returns the session id;
- :func:`open_loop` sends requests at a fixed rate, each one scheduled at a fixed instant,
  and measures latency from that instant, so a stalled server is charged for the requests
  that queue behind it (no coordinated omission);
- :func:`decision_latency` times ``POST /internal/v1/decide`` calls, sequential and
  concurrent;
- :func:`login_rate` measures concurrent logins (form + submit) through an Access Point.

Everything here is bounded in time; connections are closed before returning.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import re
import statistics
import sys
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httptools

REQUEST_TIMEOUT = 10.0  # seconds: one request; beyond it the request counts as an error
_CSRF_INPUT = re.compile(rb'name="csrf"\s+value="([^"]*)"')


class ClientError(Exception):
    """A request failed (connection, timeout, unexpected answer)."""


# --------------------------------------------------------------------------- HTTP/1.1


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def cookies(self) -> dict[str, str]:
        """Name → value of every ``Set-Cookie`` (attributes dropped)."""
        out = {}
        for name, value in self.headers:
            if name.lower() == b"set-cookie":
                pair = value.decode("latin-1").split(";", 1)[0]
                key, _, val = pair.partition("=")
                out[key.strip()] = val.strip()
        return out


def build_request(
    method: str,
    path: str,
    host: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """A complete HTTP/1.1 keep-alive request, ready to be written as is."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = 5.0) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(cls, host, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise ClientError(f"connect to {host}:{port}: {exc or 'timeout'}") from exc
        return conn

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ClientError(f"bad response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ClientError(f"connection closed: {exc or 'by the server'}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            status = self.parser.get_status_code()
            waiter.set_result(Response(status, self._headers, b"".join(self._body)))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def request(self, raw: bytes, timeout: float = REQUEST_TIMEOUT) -> Response:
        if self.closed or self.transport is None:
            raise ClientError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        try:
            return await asyncio.wait_for(self.waiter, timeout)
        except TimeoutError:
            self.close()
            raise ClientError(f"no answer within {timeout:g}s") from None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def run_async(coro: Awaitable[object]) -> object:
    """Run on uvloop when it is there (as the Access Point does), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``samples``; None when empty."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Latencies:
    """Latency samples in milliseconds, and how many requests failed."""

    samples: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0  # seconds the measurement took

    def error(self, message: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = message

    def extend(self, other: Latencies) -> None:
        self.samples += other.samples
        self.elapsed += other.elapsed
        for _ in range(other.errors):
            self.error(other.first_error or "error")

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def p(self, q: float) -> float | None:
        return percentile(self.samples, q)

    def summary(self) -> dict[str, float | int | str | None]:
        return {
            "count": self.count,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": round(self.elapsed, 3),
            "rate_per_s": round(self.rate, 1),
            "p50_ms": self.p(50),
            "p90_ms": self.p(90),
            "p99_ms": self.p(99),
            "p999_ms": self.p(99.9),
            "max_ms": max(self.samples) if self.samples else None,
            "mean_ms": statistics.fmean(self.samples) if self.samples else None,
        }


# --------------------------------------------------------------------------- login


def session_cookie_header(session: str, cookie_name: str = "gatehouse_session") -> str:
    return f"{cookie_name}={session}"


async def login(
    conn: Connection,
    host: str,
    username: str,
    password: str,
    cookie_name: str = "gatehouse_session",
    portal: str = "/_gatehouse/",
) -> str:
    """Sign in through the portal on ``conn``: GET the form, POST it; the session id."""
    form = await conn.request(build_request("GET", f"{portal}login?rd=%2F", host))
    match = _CSRF_INPUT.search(form.body)
    csrf_cookie = form.cookies().get("gatehouse_csrf")
    if form.status != 200 or match is None or csrf_cookie is None:
        raise ClientError(
            f"GET {portal}login: HTTP {form.status}, csrf field "
            f"{'found' if match else 'missing'}, csrf cookie "
            f"{'set' if csrf_cookie else 'missing'}: {form.body[:200]!r}"
        )
    body = urllib.parse.urlencode(
        {
            "username": username,
            "password": password,
            "csrf": html.unescape(match.group(1).decode()),
            "rd": "/",
        }
    ).encode()
    headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", f"gatehouse_csrf={csrf_cookie}"),
    ]
    answer = await conn.request(build_request("POST", f"{portal}login", host, headers, body))
    session = answer.cookies().get(cookie_name)
    if answer.status != 303 or not session:
        raise ClientError(
            f"POST {portal}login: HTTP {answer.status}, "
            f"{cookie_name} {'set' if session else 'missing'}: {answer.body[:200]!r}"
        )
    return session


def login_once(port: int, username: str, password: str, host: str = "127.0.0.1") -> str:
    """One login through the Access Point on ``port``; the session id."""

    async def go() -> str:
        conn = await Connection.open(host, port)
        try:
            return await login(conn, f"{host}:{port}", username, password)
        finally:
            conn.close()

    result = run_async(go())
    assert isinstance(result, str)
    return result


async def _login_rate(
    port: int, username: str, password: str, clients: int, duration: float
) -> Latencies:
    host = f"127.0.0.1:{port}"
    result = Latencies()
    conns = [await Connection.open("127.0.0.1", port) for _ in range(clients)]
    start = time.perf_counter()
    deadline = start + duration
    last_done = start

    async def client(index: int) -> None:
        nonlocal last_done
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                if conns[index].closed:
                    conns[index] = await Connection.open("127.0.0.1", port)
                await login(conns[index], host, username, password)
            except ClientError as exc:
                result.error(str(exc))
                await asyncio.sleep(0.05)  # do not spin on a broken server
                continue
            now = time.perf_counter()
            result.samples.append((now - t0) * 1000)
            last_done = max(last_done, now)

    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        for conn in conns:
            conn.close()
    result.elapsed = last_done - start
    return result


def login_rate(
    port: int, username: str, password: str, clients: int = 4, duration: float = 10.0
) -> Latencies:
    """``clients`` concurrent clients logging in for ``duration`` seconds (closed loop)."""
    result = run_async(_login_rate(port, username, password, clients, duration))
    assert isinstance(result, Latencies)
    return result


# --------------------------------------------------------------------------- decisions


async def _decision_latency(
    port: int, payload: bytes, calls: int, clients: int, warmup: int
) -> Latencies:
    request = build_request(
        "POST",
        "/internal/v1/decide",
        f"127.0.0.1:{port}",
        [("Content-Type", "application/json")],
        payload,
    )
    conns = [await Connection.open("127.0.0.1", port) for _ in range(clients)]
    result = Latencies()
    remaining = calls
    perf = time.perf_counter

    async def one(conn: Connection) -> float:
        t0 = perf()
        answer = await conn.request(request)
        elapsed = (perf() - t0) * 1000
        if answer.status != 200 or b'"allow"' not in answer.body:
            raise ClientError(f"decide: HTTP {answer.status}: {answer.body[:200]!r}")
        return elapsed

    async def client(conn: Connection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                result.samples.append(await one(conn))
            except ClientError as exc:
                result.error(str(exc))
                return

    try:
        for conn in conns:  # warm-up, and check the answer once per connection
            for _ in range(warmup):
                await one(conn)
        start = perf()
        await asyncio.gather(*(client(conn) for conn in conns))
        result.elapsed = perf() - start
    finally:
        for conn in conns:
            conn.close()
    return result


def decision_latency(
    port: int, payload: bytes, calls: int = 2000, clients: int = 1, warmup: int = 200
) -> Latencies:
    """``calls`` decisions over ``clients`` persistent connections, each client sequential."""
    result = run_async(_decision_latency(port, payload, calls, clients, warmup))
    assert isinstance(result, Latencies)
    return result


# --------------------------------------------------------------------------- open loop


@dataclass
class OpenLoopResult:
    latency: Latencies  # from each request's scheduled instant to the end of its answer
    lag: Latencies  # how late the generator itself handed each request to the event loop
    sent: int = 0
    rate: float = 0.0


async def _open_loop(
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]],
    expect: bytes,
    rate: float,
    duration: float,
    warmup: float,
    connections: int,
) -> OpenLoopResult:
    loop = asyncio.get_running_loop()
    request = build_request("GET", path, f"127.0.0.1:{port}", headers)
    conns = [await Connection.open("127.0.0.1", port) for _ in range(connections)]
    idle: collections.deque[Connection] = collections.deque(conns)
    pending: collections.deque[tuple[float, bool]] = collections.deque()
    result = OpenLoopResult(Latencies(), Latencies(), rate=rate)
    in_flight: dict[asyncio.Task[None], bool] = {}  # task → measured
    perf = time.perf_counter
    all_sent = loop.create_future()
    stopped = False

    async def one(conn: Connection, intended: float, measured: bool) -> None:
        try:
            if conn.closed:
                conn = await Connection.open("127.0.0.1", port)
            answer = await conn.request(request)
            if answer.status != 200 or answer.body != expect:
                raise ClientError(f"HTTP {answer.status}: {answer.body[:200]!r}")
        except ClientError as exc:
            if measured:
                result.latency.error(str(exc))
        else:
            if measured:
                result.latency.samples.append((perf() - intended) * 1000)
        finally:
            idle.append(conn)
            dispatch()

    def dispatch() -> None:
        # Requests wait here, in order, for a free connection: that wait is part of their
        # latency, because it is measured from the instant they were scheduled for.
        while idle and pending and not stopped:
            intended, measured = pending.popleft()
            task = loop.create_task(one(idle.popleft(), intended, measured))
            in_flight[task] = measured
            task.add_done_callback(lambda t: in_flight.pop(t, None))

    def fire(intended: float, measured: bool) -> None:
        if measured:
            result.lag.samples.append((perf() - intended) * 1000)
            result.sent += 1
        pending.append((intended, measured))
        dispatch()

    def done() -> None:
        if not all_sent.done():
            all_sent.set_result(None)

    stop = threading.Event()
    total = int((warmup + duration) * rate)
    skip = int(warmup * rate)

    def scheduler(start: float) -> None:
        # A thread sleeping with the kernel's precision, not the event loop's millisecond
        # timers; each request is handed over at its instant whatever happened before.
        with contextlib.suppress(RuntimeError):  # the loop is closed: we were interrupted
            try:
                for i in range(total):
                    instant = start + i / rate
                    delay = instant - perf()
                    if delay > 0:
                        time.sleep(delay)
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(fire, instant, i >= skip)
            finally:
                loop.call_soon_threadsafe(done)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the scheduler thread gets the GIL back quickly
    start = perf() + 0.05
    thread = threading.Thread(target=scheduler, args=(start,), daemon=True)
    thread.start()
    try:
        await all_sent
        # What is still queued or in flight gets one request timeout to finish, then counts
        # as failed: a server that stopped answering cannot keep the run going.
        deadline = perf() + REQUEST_TIMEOUT
        while in_flight and perf() < deadline:
            await asyncio.wait(
                list(in_flight), timeout=deadline - perf(), return_when=asyncio.FIRST_COMPLETED
            )
        result.latency.elapsed = perf() - (start + skip / rate)
    finally:
        stopped = True
        stop.set()
        thread.join(timeout=2)
        sys.setswitchinterval(old_interval)
        unfinished = sum(in_flight.values()) + sum(measured for _, measured in pending)
        for _ in range(unfinished):
            result.latency.error(f"no answer within {REQUEST_TIMEOUT:g}s of the last request")
        for task in list(in_flight):
            task.cancel()
        for conn in conns + list(idle):
            conn.close()
    return result


def open_loop(
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]],
    expect: bytes,
    rate: float = 500.0,
    duration: float = 10.0,
    warmup: float = 1.0,
    connections: int = 32,
) -> OpenLoopResult:
    """GET ``path`` at ``rate`` requests/s for ``duration`` s (after ``warmup`` s not counted)
    over ``connections`` keep-alive connections; every answer must be 200 with ``expect``."""
    result = run_async(_open_loop(port, path, headers, expect, rate, duration, warmup, connections))
    assert isinstance(result, OpenLoopResult)
    return result


def open_loop_alternating(
    targets: Sequence[tuple[str, Callable[[float], OpenLoopResult]]],
    duration: float,
    rounds: int,
) -> dict[str, OpenLoopResult]:
    """Run each target for ``duration / rounds`` seconds, ``rounds`` times in turn (A B A B),
    so that a change in the machine's load over time hits every target alike."""
    merged: dict[str, OpenLoopResult] = {}
    for _ in range(rounds):
        for name, run in targets:
            part = run(duration / rounds)
            if name not in merged:
                merged[name] = part
                continue
            total = merged[name]
            total.latency.extend(part.latency)
            total.lag.extend(part.lag)
            total.sent += part.sent
    return merged

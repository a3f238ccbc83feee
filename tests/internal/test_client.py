"""The failover client against real servers on loopback.

Most tests script a raw HTTP/1.1 server (asyncio streams) in the test's own event loop, so a
test can make an endpoint refuse, hang, reset or close at an exact point; a few use uvicorn +
Starlette (in-process, and as a process that gets killed). Every test runs on the default
asyncio loop and on uvloop, as the services and the Access Point do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gatehouse.errors import GatehouseError
from gatehouse.internal.client import (
    AllEndpointsFailed,
    ClientClosed,
    FailoverClient,
    FailureKind,
    RequestNotRetried,
    StreamBroken,
    StreamRefused,
)
from gatehouse.internal.endpoints import Endpoints
from gatehouse.internal.http1 import MAX_CONNECTING, MAX_LINE, Pool, WireError
from gatehouse.internal.liveness import peer_has_closed
from tests.support.asgi_server import serving
from tests.support.processes import free_port, wait_port

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run[Any]:
    """Run a scenario to completion on a fresh event loop of the given kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        async def guarded() -> T:
            async with asyncio.timeout(30):  # a hung scenario fails instead of hanging
                return await coro

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(guarded())

    return runner


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counts(
    *, down: int = 0, up: int = 0, failovers: int = 0, passed: int = 0, failed: int = 0
) -> dict[str, int]:
    """The whole ``Endpoints.counters`` dict expected after a scenario."""
    return {
        "transitions": down + up,
        "down": down,
        "up": up,
        "failovers": failovers,
        "probes_passed": passed,
        "probes_failed": failed,
    }


def no_counts() -> dict[str, int]:
    return counts()


# a scriptable raw server --------------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    conn: int  # which connection (1, 2, ...)
    nth: int  # which request on that connection (1, 2, ...)


Handler = Callable[[Req, asyncio.StreamWriter], Awaitable[bool]]


def answer(w: asyncio.StreamWriter, status: int = 200, data: object = None) -> None:
    body = orjson.dumps(data if data is not None else {"ok": True})
    w.write(
        b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (status, len(body), body)
    )


async def echo(req: Req, w: asyncio.StreamWriter) -> bool:
    answer(
        w,
        200,
        {"method": req.method, "path": req.path, "headers": req.headers, "body": req.body.decode()},
    )
    return True


def reset(w: asyncio.StreamWriter) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


class Server:
    """An HTTP/1.1 server on a free loopback port whose every answer a test scripts."""

    def __init__(self, handler: Handler = echo, port: int = 0) -> None:
        self.handler = handler
        self.port = port
        self.connections = 0
        self.closed_connections = 0
        self.requests: list[Req] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(w)
        self.connections += 1
        conn, nth = self.connections, 0
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await r.readexactly(int(headers.get("content-length", "0")))
                nth += 1
                req = Req(method, path, headers, body, conn, nth)
                self.requests.append(req)
                if not await self.handler(req, w) or w.is_closing():
                    break
                await w.drain()
        except ConnectionError:
            pass
        finally:
            self.closed_connections += 1
            w.close()
            self._writers.discard(w)
            self._tasks.discard(task)


def refusing_url() -> str:
    """A loopback URL nothing listens on: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}"


@contextlib.contextmanager
def unresponsive_url() -> Iterator[str]:
    """A loopback URL whose listen backlog is full, so connecting times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def hang(req: Req, w: asyncio.StreamWriter) -> bool:
    await asyncio.Event().wait()
    return False


def status(code: int) -> Handler:
    async def handler(req: Req, w: asyncio.StreamWriter) -> bool:
        answer(w, code, {"error": "x"})
        return True

    return handler


# JSON calls and the connection pool ---------------------------------------------------------


def test_json_round_trip_and_request_headers(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server() as server,
            FailoverClient([server.url], bearer_token="s3cret-token") as client,
        ):
            response = await client.call(
                "POST", "/internal/v1/decide?x=1", {"a": [1, "é"]}, retry_safe=True
            )
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            got = response.json()
            assert got["method"] == "POST"
            assert got["path"] == "/internal/v1/decide?x=1"
            assert orjson.loads(got["body"]) == {"a": [1, "é"]}
            assert got["headers"] == {
                "host": f"127.0.0.1:{server.port}",
                "connection": "keep-alive",
                "authorization": "Bearer s3cret-token",
                "content-type": "application/json",
                "content-length": str(len(orjson.dumps({"a": [1, "é"]}))),
            }

            got = (await client.call("GET", "/internal/v1/health", retry_safe=True)).json()
            assert got["method"] == "GET"
            assert "content-length" not in got["headers"]
            assert "content-type" not in got["headers"]

            got = (await client.call("POST", "/x", retry_safe=False)).json()
            assert got["headers"]["content-length"] == "0"
            assert "content-type" not in got["headers"]

    run(scenario())


def test_sequential_calls_reuse_one_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server, FailoverClient([server.url]) as client:
            for i in range(20):
                response = await client.call("POST", "/echo", {"i": i}, retry_safe=True)
                assert orjson.loads(response.json()["body"]) == {"i": i}
            assert server.connections == 1
            assert [r.nth for r in server.requests] == list(range(1, 21))
            assert client.pool_stats()[server.url] == {"opened": 1, "open": 1, "idle": 1}

    run(scenario())


def test_concurrent_calls_use_parallel_connections_and_the_pool_keeps_max_idle(
    run: Run[None],
) -> None:
    async def scenario() -> None:
        arrived: list[asyncio.Event] = []
        release = asyncio.Event()

        async def gated(req: Req, w: asyncio.StreamWriter) -> bool:
            if len(server.requests) <= len(arrived):
                arrived[len(server.requests) - 1].set()
            await release.wait()
            return await echo(req, w)

        arrived = [asyncio.Event() for _ in range(6)]
        async with Server(gated) as server, FailoverClient([server.url], max_idle=2) as client:
            calls = [
                asyncio.create_task(client.call("GET", f"/{i}", retry_safe=True)) for i in range(6)
            ]
            await asyncio.gather(*(event.wait() for event in arrived))
            assert server.connections == 6  # all six in flight at once
            release.set()
            responses = await asyncio.gather(*calls)
            assert sorted(r.json()["path"] for r in responses) == [f"/{i}" for i in range(6)]
            assert client.pool_stats()[server.url]["idle"] == 2
            for _ in range(10):
                await client.call("GET", "/again", retry_safe=True)
            assert server.connections == 6
            while server.closed_connections < 4:  # the four beyond max_idle were closed
                await asyncio.sleep(0.01)

    run(scenario())


FRAMINGS = {
    "content-length": (b'HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}', True),
    "chunked": (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n4\r\n":1}\r\n0\r\n\r\n',
        True,
    ),
    "interim 100 first": (
        b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}',
        True,
    ),
    "connection close": (
        b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 7\r\n\r\n{"a":1}',
        False,
    ),
    "close-delimited": (b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"a":1}', False),
    "HTTP/1.0": (b'HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\n{"a":1}', False),
}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_answers_framed_every_way(run: Run[None], framing: str) -> None:
    raw, reusable = FRAMINGS[framing]

    async def handler(req: Req, w: asyncio.StreamWriter) -> bool:
        w.write(raw)
        return reusable

    async def scenario() -> None:
        async with Server(handler) as server, FailoverClient([server.url]) as client:
            for _ in range(2):
                response = await client.call("GET", "/", retry_safe=True)
                assert (response.status, response.json()) == (200, {"a": 1})
                # Wait until a closed connection is noticed, so the count below is exact.
                while not reusable and client.pool_stats()[server.url]["open"]:
                    await asyncio.sleep(0.005)
            assert server.connections == (1 if reusable else 2)
            assert client.endpoints.counters == no_counts()

    run(scenario())


def test_head_answer_has_no_body(run: Run[None]) -> None:
    async def handler(req: Req, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Thing: 1\r\nX-Thing: 2\r\n\r\n")
        return True

    async def scenario() -> None:
        async with Server(handler) as server, FailoverClient([server.url]) as client:
            response = await client.call("HEAD", "/", retry_safe=True, timeout=1.0)
            assert (response.status, response.body) == (200, b"")
            assert response.headers["x-thing"] == "1, 2"

    run(scenario())


def test_idle_connections_expire(run: Run[None]) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        async with Server() as server:
            endpoints = Endpoints([server.url], clock=clock)
            async with FailoverClient(endpoints, idle_timeout=4.0) as client:
                await client.call("GET", "/1", retry_safe=True)
                clock.now += 3.9
                await client.call("GET", "/2", retry_safe=True)
                assert server.connections == 1
                clock.now += 4.1
                await client.call("GET", "/3", retry_safe=True)
                assert server.connections == 2
                assert [r.conn for r in server.requests] == [1, 1, 2]
                while server.closed_connections < 1:  # the expired one was closed
                    await asyncio.sleep(0.01)

    run(scenario())


def test_server_closing_an_idle_connection_is_noticed(run: Run[None]) -> None:
    async def answer_then_close(req: Req, w: asyncio.StreamWriter) -> bool:
        await echo(req, w)
        return False  # close right after answering, without announcing it

    async def scenario() -> None:
        async with (
            Server(answer_then_close) as server,
            FailoverClient([server.url]) as client,
        ):
            for i in range(3):
                await client.call("POST", f"/{i}", retry_safe=False)
                while client.pool_stats()[server.url]["open"]:
                    await asyncio.sleep(0.005)
            assert server.connections == 3
            assert client.endpoints.counters == no_counts()

    run(scenario())


def stale_on_second_request(kind: str) -> Handler:
    """Answer the first request of each connection; close (or reset) on the second without
    answering, as a server does whose keep-alive timeout fires as the request arrives."""

    async def handler(req: Req, w: asyncio.StreamWriter) -> bool:
        if req.nth == 1:
            return await echo(req, w)
        if kind == "reset":
            reset(w)
        return False

    return handler


@pytest.mark.parametrize("kind", ["close", "reset"])
def test_request_on_a_stale_connection_is_retried_on_a_fresh_one(run: Run[None], kind: str) -> None:
    async def scenario() -> None:
        async with (
            Server(stale_on_second_request(kind)) as server,
            Server() as backup,
            FailoverClient([server.url, backup.url]) as client,
        ):
            await client.call("GET", "/1", retry_safe=True)
            response = await client.call("POST", "/2", {"x": 1}, retry_safe=True)
            assert response.json()["path"] == "/2"
            assert [(r.path, r.conn, r.nth) for r in server.requests] == [
                ("/1", 1, 1),
                ("/2", 1, 2),
                ("/2", 2, 1),
            ]
            assert backup.requests == []
            assert client.endpoints.counters == no_counts()

    run(scenario())


def test_non_retry_safe_request_on_a_stale_connection_is_not_resent(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server(stale_on_second_request("close")) as server,
            Server() as backup,
            FailoverClient([server.url, backup.url]) as client,
        ):
            await client.call("GET", "/1", retry_safe=True)
            with pytest.raises(RequestNotRetried) as info:
                await client.call("POST", "/password/verify", {"x": 1}, retry_safe=False)
            assert [f.kind for f in info.value.failures] == [FailureKind.CLOSED]
            assert [r.path for r in server.requests] == ["/1", "/password/verify"]
            assert backup.requests == []
            # Ambiguous evidence: the endpoint is not marked down for it.
            assert client.endpoints.is_up(client.endpoints.all[0])

    run(scenario())


# ordered failover ---------------------------------------------------------------------------


def test_first_endpoint_serves_while_up(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server() as first,
            Server() as second,
            FailoverClient([first.url, second.url]) as client,
        ):
            for _ in range(10):
                await client.call("GET", "/", retry_safe=True)
            assert len(first.requests) == 10
            assert second.requests == []

    run(scenario())


def test_failover_on_refused_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        dead = refusing_url()
        async with Server() as second, FailoverClient([dead, second.url]) as client:
            assert (await client.call("GET", "/a", retry_safe=True)).json()["path"] == "/a"
            assert (await client.call("GET", "/b", retry_safe=True)).json()["path"] == "/b"
            assert len(second.requests) == 2
            # The second call went straight to the second endpoint.
            assert client.endpoints.counters == counts(down=1, failovers=1)
            assert client.endpoints.status()[0].reason == "connection refused"

    run(scenario())


def test_failover_on_5xx(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server(status(503)) as first,
            Server() as second,
            FailoverClient([first.url, second.url]) as client,
        ):
            assert (await client.call("GET", "/a", retry_safe=True)).status == 200
            assert (await client.call("GET", "/b", retry_safe=True)).status == 200
            assert [r.path for r in first.requests] == ["/a"]
            assert [r.path for r in second.requests] == ["/a", "/b"]
            assert client.endpoints.status()[0].reason == "answered 503"

    run(scenario())


def test_4xx_is_an_answer_not_a_failure(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server(status(404)) as first,
            Server() as second,
            FailoverClient([first.url, second.url]) as client,
        ):
            response = await client.call("GET", "/users/nobody", retry_safe=True)
            assert response.status == 404
            assert response.json() == {"error": "x"}
            assert second.requests == []
            assert client.endpoints.is_up(client.endpoints.all[0])

    run(scenario())


def test_failover_on_read_timeout(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server(hang) as first,
            Server() as second,
            FailoverClient([first.url, second.url], timeout=0.2) as client,
        ):
            started = time.monotonic()
            assert (await client.call("GET", "/a", retry_safe=True)).status == 200
            assert 0.19 <= time.monotonic() - started < 1.0
            assert client.endpoints.status()[0].reason.startswith("read timeout")
            assert len(second.requests) == 1

    run(scenario())


def test_per_call_timeout(run: Run[None]) -> None:
    async def slow(req: Req, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.3)
        return await echo(req, w)

    async def scenario() -> None:
        async with Server(slow) as server, FailoverClient([server.url], timeout=0.1) as client:
            with pytest.raises(AllEndpointsFailed) as info:
                await client.call("GET", "/", retry_safe=True)
            assert [f.kind for f in info.value.failures] == [FailureKind.READ_TIMEOUT]
            response = await client.call("GET", "/", retry_safe=True, timeout=1.0)
            assert response.status == 200

    run(scenario())


def mid_answer(how: str) -> Handler:
    """Start an answer, then die: RST, FIN, or FIN before any byte."""

    async def handler(req: Req, w: asyncio.StreamWriter) -> bool:
        if how != "silent":
            w.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"par')
            await w.drain()
            await asyncio.sleep(0.02)
        if how == "reset":
            reset(w)
        return False

    return handler


@pytest.mark.parametrize("how", ["reset", "close", "silent"])
def test_retry_safe_call_fails_over_when_the_server_dies_mid_answer(
    run: Run[None], how: str
) -> None:
    async def scenario() -> None:
        async with (
            Server(mid_answer(how)) as first,
            Server() as second,
            FailoverClient([first.url, second.url]) as client,
        ):
            response = await client.call("POST", "/decide", {"s": 1}, retry_safe=True)
            assert response.status == 200
            assert len(first.requests) == 1
            assert len(second.requests) == 1
            assert not client.endpoints.is_up(client.endpoints.all[0])

    run(scenario())


@pytest.mark.parametrize("how", ["reset", "close", "silent"])
def test_non_retry_safe_post_is_not_resent_after_it_was_written(run: Run[None], how: str) -> None:
    async def scenario() -> None:
        async with (
            Server(mid_answer(how)) as first,
            Server() as second,
            FailoverClient([first.url, second.url]) as client,
        ):
            with pytest.raises(RequestNotRetried) as info:
                await client.call("POST", "/password/verify", {"p": "x"}, retry_safe=False)
            assert len(first.requests) == 1
            assert second.requests == []
            (failure,) = info.value.failures
            assert failure.endpoint == first.url
            assert failure.kind in (FailureKind.RESET, FailureKind.CLOSED)
            assert isinstance(info.value, GatehouseError)
            assert info.value.status == 503
            assert not client.endpoints.is_up(client.endpoints.all[0])

    run(scenario())


def test_non_retry_safe_post_is_not_resent_after_a_5xx(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server(status(500)) as first,
            Server() as second,
            FailoverClient([first.url, second.url]) as client,
        ):
            with pytest.raises(RequestNotRetried) as info:
                await client.call("POST", "/password/verify", {"p": "x"}, retry_safe=False)
            assert second.requests == []
            (failure,) = info.value.failures
            assert failure.kind is FailureKind.SERVER_ERROR
            assert failure.response is not None
            assert failure.response.json() == {"error": "x"}

    run(scenario())


def test_non_retry_safe_post_goes_to_the_next_endpoint_when_the_first_refuses(
    run: Run[None],
) -> None:
    async def scenario() -> None:
        async with Server() as second, FailoverClient([refusing_url(), second.url]) as client:
            response = await client.call("POST", "/password/verify", {"p": 1}, retry_safe=False)
            assert response.status == 200
            assert [(r.method, r.path) for r in second.requests] == [("POST", "/password/verify")]

    run(scenario())


def test_connect_timeout_fails_over_even_when_not_retry_safe(run: Run[None]) -> None:
    async def scenario() -> None:
        with unresponsive_url() as blackhole:
            async with (
                Server() as second,
                FailoverClient([blackhole, second.url], connect_timeout=0.2) as client,
            ):
                started = time.monotonic()
                response = await client.call("POST", "/password/verify", {}, retry_safe=False)
                assert response.status == 200
                assert 0.19 <= time.monotonic() - started < 1.0
                assert client.endpoints.status()[0].reason.startswith("connect timeout")
                assert len(second.requests) == 1

    run(scenario())


def test_invalid_answer_fails_over(run: Run[None]) -> None:
    async def garbage(req: Req, w: asyncio.StreamWriter) -> bool:
        w.write(b"SMTP ready\r\n\r\n")
        return True

    async def scenario() -> None:
        async with (
            Server(garbage) as first,
            Server() as second,
            FailoverClient([first.url, second.url]) as client,
        ):
            assert (await client.call("GET", "/", retry_safe=True)).status == 200
            assert client.endpoints.status()[0].reason.startswith("invalid response")

    run(scenario())


def test_all_endpoints_failed_lists_every_failure(run: Run[None]) -> None:
    async def scenario() -> None:
        dead = refusing_url()
        async with (
            Server(status(503)) as unavailable,
            Server(hang) as stuck,
            FailoverClient([dead, unavailable.url, stuck.url], timeout=0.2) as client,
        ):
            with pytest.raises(AllEndpointsFailed) as info:
                await client.call("GET", "/internal/v1/health", retry_safe=True)
            error = info.value
            assert [(f.endpoint, f.kind) for f in error.failures] == [
                (dead, FailureKind.REFUSED),
                (unavailable.url, FailureKind.SERVER_ERROR),
                (stuck.url, FailureKind.READ_TIMEOUT),
            ]
            assert isinstance(error, GatehouseError)
            assert (error.status, error.code) == (503, "unavailable")
            message = str(error)
            assert message.startswith("GET /internal/v1/health failed on every endpoint: ")
            for url in (dead, unavailable.url, stuck.url):
                assert url in message
            assert client.endpoints.counters == counts(down=3, failovers=2)

            # All down: still tried, in configured order, as a last resort.
            with pytest.raises(AllEndpointsFailed) as info:
                await client.call("GET", "/internal/v1/health", retry_safe=True)
            assert [f.endpoint for f in info.value.failures] == [
                dead,
                unavailable.url,
                stuck.url,
            ]

    run(scenario())


def test_fail_back_after_retry_after(run: Run[None]) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        port = free_port()
        async with Server() as second:
            endpoints = Endpoints([f"http://127.0.0.1:{port}", second.url], clock=clock)
            async with FailoverClient(endpoints) as client:
                await client.call("GET", "/1", retry_safe=True)  # first refused
                async with Server(port=port) as first:
                    await client.call("GET", "/2", retry_safe=True)
                    clock.now += 1.9
                    await client.call("GET", "/3", retry_safe=True)
                    assert first.requests == []  # not due yet: not even tried
                    clock.now += 0.1
                    await client.call("GET", "/4", retry_safe=True)
                    await client.call("GET", "/5", retry_safe=True)
                    assert [r.path for r in first.requests] == ["/4", "/5"]
                    assert [r.path for r in second.requests] == ["/1", "/2", "/3"]
                    assert endpoints.is_up(endpoints.all[0])
                    assert endpoints.counters == counts(down=1, up=1, failovers=1)

    run(scenario())


def test_a_failed_fail_back_trial_costs_one_call(run: Run[None]) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        with unresponsive_url() as blackhole:
            async with Server() as second:
                endpoints = Endpoints([blackhole, second.url], clock=clock)
                # A connect timeout long enough that the nine quick calls finish well before
                # it even on a loaded machine.
                async with FailoverClient(endpoints, connect_timeout=1.5) as client:
                    await client.call("GET", "/1", retry_safe=True)
                    clock.now += 2.0
                    # Ten concurrent calls when the dead primary is due: one makes the trial
                    # (and waits for the connect timeout), nine go straight to the second.
                    started = time.monotonic()
                    tasks = [
                        asyncio.create_task(client.call("GET", f"/{i}", retry_safe=True))
                        for i in range(10)
                    ]
                    done, _ = await asyncio.wait(tasks, timeout=1.0)
                    assert len(done) == 9
                    await asyncio.gather(*tasks)
                    assert time.monotonic() - started >= 1.49
                    assert len(second.requests) == 11
                    assert endpoints.counters["failovers"] == 2

    run(scenario())


def test_a_cancelled_call_does_not_leave_its_connection_in_the_pool(run: Run[None]) -> None:
    async def first_hangs(req: Req, w: asyncio.StreamWriter) -> bool:
        if req.conn == 1:
            await asyncio.Event().wait()
        return await echo(req, w)

    async def scenario() -> None:
        async with Server(first_hangs) as server, FailoverClient([server.url]) as client:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.call("GET", "/hang", retry_safe=True)
            response = await client.call("GET", "/after", retry_safe=True)
            assert response.json()["path"] == "/after"
            assert server.connections == 2
            assert client.endpoints.is_up(client.endpoints.all[0])

    run(scenario())


def test_aclose_closes_connections_and_fails_calls_in_flight(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server(hang) as stuck, Server() as server:
            client = FailoverClient([server.url, stuck.url])
            await client.call("GET", "/", retry_safe=True)
            client.endpoints.failed(client.endpoints.all[0], "test")
            call = asyncio.create_task(client.call("GET", "/", retry_safe=True))
            while not stuck.requests:
                await asyncio.sleep(0.005)
            await client.aclose()
            with pytest.raises(ClientClosed):
                await call
            with pytest.raises(ClientClosed):
                await client.call("GET", "/", retry_safe=True)
            assert client.pool_stats()[server.url]["open"] == 0
            while server.closed_connections < 1:
                await asyncio.sleep(0.005)

    run(scenario())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/a b"),
        ("GET", "/a\r\nX-Injected: 1"),
        ("GET", "relative"),
        ("GET", "/caf\u00e9"),
        ("GET", "/a#fragment"),
        ("get", "/"),
        ("GE T", "/"),
    ],
)
def test_refuses_what_cannot_go_on_a_request_line(run: Run[None], method: str, path: str) -> None:
    async def scenario() -> None:
        async with FailoverClient([refusing_url()]) as client:
            with pytest.raises(ValueError, match=r"method|path"):
                await client.call(method, path, retry_safe=True)

    run(scenario())


def test_refuses_a_bad_bearer_token() -> None:
    with pytest.raises(ValueError, match="bearer token"):
        FailoverClient(["http://127.0.0.1:1"], bearer_token="a\r\nX: y")


# streams ------------------------------------------------------------------------------------


def chunked_lines(steps: list[bytes], got: list[bytes], end: str) -> Handler:
    """Stream ``steps`` as chunks, each one only once the consumer has every line sent so far
    (in ``got``), then end: "clean", "reset", "close" or "hang".

    A client that held lines back instead of yielding them as they arrive would deadlock
    (and fail on the scenario timeout)."""

    async def handler(req: Req, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n")
        w.write(b"Transfer-Encoding: chunked\r\n\r\n")
        sent = b""
        for step in steps:
            w.write(b"%x\r\n%s\r\n" % (len(step), step))
            await w.drain()
            sent += step
            complete = [line for line in sent.split(b"\n")[:-1] if line.strip()]
            while len(got) < len(complete):
                await asyncio.sleep(0.002)
        if end == "hang":
            await asyncio.Event().wait()
        if end == "clean":
            w.write(b"0\r\n\r\n")
            return True
        if end == "reset":
            reset(w)
        return False

    return handler


def test_stream_lines_chunked_yields_each_line_as_it_arrives(run: Run[None]) -> None:
    async def scenario() -> None:
        got: list[bytes] = []
        steps = [b'{"type": "hello"}\n', b'{"type": "pi', b'ng"}\r\n\n{"a": 1}\n{"b"', b": 2}\n"]
        async with (
            Server(chunked_lines(steps, got, "clean")) as server,
            FailoverClient([server.url]) as client,
        ):
            async with contextlib.aclosing(client.stream_lines("/internal/v1/events")) as lines:
                async for line in lines:
                    got.append(line)
                    if len(got) == 1:
                        assert client.current_endpoint == client.endpoints.all[0]
            assert got == [b'{"type": "hello"}', b'{"type": "ping"}', b'{"a": 1}', b'{"b": 2}']
            assert server.requests[0].path == "/internal/v1/events"

    run(scenario())


def test_stream_lines_close_delimited(run: Run[None]) -> None:
    async def close_delimited(req: Req, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for part in (b"one\ntw", b"o\n", b"three"):
            w.write(part)
            await w.drain()
            await asyncio.sleep(0.01)
        return False

    async def scenario() -> None:
        async with (
            Server(close_delimited) as server,
            FailoverClient([server.url]) as client,
        ):
            got = [line async for line in client.stream_lines("/events")]
            assert got == [b"one", b"two", b"three"]
            assert client.endpoints.counters["transitions"] == 0

    run(scenario())


def test_broken_stream_raises_and_reconnecting_uses_the_next_endpoint(run: Run[None]) -> None:
    async def scenario() -> None:
        got: list[bytes] = []
        first_lines = [b'{"type": "hello", "instance": "ps1"}\n']
        second_lines = [b'{"type": "hello", "instance": "ps2"}\n']
        async with (
            Server(chunked_lines(first_lines, got, "reset")) as first,
            Server(chunked_lines(second_lines, [], "hang")) as second,
            FailoverClient([first.url, second.url]) as client,
        ):

            async def follow() -> None:
                async for line in client.stream_lines("/events"):
                    got.append(line)

            with pytest.raises(StreamBroken) as info:
                await follow()
            assert got == [b'{"type": "hello", "instance": "ps1"}']
            assert info.value.failures[0].endpoint == first.url
            assert client.current_endpoint == client.endpoints.all[0]
            assert not client.endpoints.is_up(client.endpoints.all[0])

            async with contextlib.aclosing(client.stream_lines("/events")) as lines:
                async for line in lines:
                    assert line == b'{"type": "hello", "instance": "ps2"}'
                    break
            assert client.current_endpoint == client.endpoints.all[1]
            assert len(first.requests) == 1
            assert len(second.requests) == 1

    run(scenario())


def test_stream_establishment_fails_over(run: Run[None]) -> None:
    async def one_line(req: Req, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
        return True

    async def scenario() -> None:
        async with (
            Server(status(503)) as unavailable,
            Server(one_line) as server,
            FailoverClient([refusing_url(), unavailable.url, server.url]) as client,
        ):
            assert [line async for line in client.stream_lines("/events")] == [b"hello"]
            assert client.current_endpoint == client.endpoints.all[2]
            assert client.endpoints.counters == counts(down=2, failovers=2)

            async with FailoverClient([refusing_url(), unavailable.url]) as failing:
                with pytest.raises(AllEndpointsFailed) as info:
                    async for _ in failing.stream_lines("/events"):
                        pass
                assert [f.kind for f in info.value.failures] == [
                    FailureKind.REFUSED,
                    FailureKind.SERVER_ERROR,
                ]

    run(scenario())


def test_stream_refused_with_4xx(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server(status(401)) as server,
            Server() as second,
            FailoverClient([server.url, second.url]) as client,
        ):
            with pytest.raises(StreamRefused) as info:
                async for _ in client.stream_lines("/events"):
                    pass
            assert info.value.response.status == 401
            assert second.requests == []

    run(scenario())


def test_stream_idle_timeout(run: Run[None]) -> None:
    async def scenario() -> None:
        got: list[bytes] = []
        async with (
            Server(chunked_lines([b"first\n"], got, "hang")) as server,
            FailoverClient([server.url]) as client,
        ):
            started = time.monotonic()

            async def follow() -> None:
                nonlocal started
                async for line in client.stream_lines("/events", idle_timeout=0.2):
                    got.append(line)
                    started = time.monotonic()

            with pytest.raises(StreamBroken) as info:
                await follow()
            assert got == [b"first"]
            assert 0.19 <= time.monotonic() - started < 1.0
            assert info.value.failures[0].kind is FailureKind.READ_TIMEOUT

    run(scenario())


def test_a_stream_abandoned_by_its_consumer_closes_its_connection(run: Run[None]) -> None:
    async def scenario() -> None:
        async with (
            Server(chunked_lines([b"a\n", b"b\n"], [], "hang")) as server,
            FailoverClient([server.url]) as client,
        ):

            async def follow() -> None:
                async for _ in client.stream_lines("/events"):
                    raise ValueError("consumer gave up")

            with pytest.raises(ValueError, match="consumer gave up"):
                await follow()
            # The generator was dropped mid-stream; its finaliser closes the connection.
            while client.pool_stats()[server.url]["open"]:
                await asyncio.sleep(0.005)

    run(scenario())


def test_a_slow_consumer_gets_every_line_in_order(run: Run[None]) -> None:
    async def burst(req: Req, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for block in range(200):  # ~230 KB: more than one read
            data = b"".join(b'{"n": %d}\n' % (block * 100 + i) for i in range(100))
            w.write(b"%x\r\n%s\r\n" % (len(data), data))
        w.write(b"0\r\n\r\n")
        return True

    async def scenario() -> None:
        async with Server(burst) as server, FailoverClient([server.url]) as client:
            numbers = []
            async with asyncio.timeout(5):  # reading that never resumed would hang here
                async for line in client.stream_lines("/events"):
                    if not numbers:
                        await asyncio.sleep(0.1)  # the lines pile up meanwhile: reading pauses
                    numbers.append(orjson.loads(line)["n"])
            assert numbers == list(range(20000))

    run(scenario())


def test_a_line_too_long_breaks_the_stream(run: Run[None]) -> None:
    async def endless_line(req: Req, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok\n")
        w.write(b"x" * (MAX_LINE + 10))
        await asyncio.Event().wait()
        return False

    async def scenario() -> None:
        async with Server(endless_line) as server, FailoverClient([server.url]) as client:
            got = []

            async def follow() -> None:
                async for line in client.stream_lines("/events"):
                    got.append(line)

            with pytest.raises(StreamBroken) as info:
                await follow()
            assert got == [b"ok"]
            assert info.value.failures[0].kind is FailureKind.INVALID

    run(scenario())


# probes -------------------------------------------------------------------------------------


def test_probe_brings_back_an_endpoint_that_passes(run: Run[None]) -> None:
    async def scenario() -> None:
        port = free_port()
        async with Server() as second:
            endpoints = Endpoints([f"http://127.0.0.1:{port}", second.url], retry_after=None)
            async with FailoverClient(endpoints) as client:
                await client.call("GET", "/", retry_safe=True)
                assert await client.probe() == {f"http://127.0.0.1:{port}": False}
                async with Server(port=port) as first:
                    assert await client.probe() == {first.url: True}
                    assert [r.path for r in first.requests] == ["/internal/v1/health"]
                    await client.call("GET", "/", retry_safe=True)
                    assert len(first.requests) == 2
                    assert await client.probe() == {}  # nothing down: nothing probed
                results = await client.probe("/internal/v1/health", include_up=True)
                assert results == {f"http://127.0.0.1:{port}": False, second.url: True}
                assert endpoints.status()[0].reason.startswith("probe: connection refused")

    run(scenario())


# bursts and standby connections --------------------------------------------------------------


def test_a_burst_opens_few_connections_and_reuses_those_that_come_free(
    run: Run[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most ``MAX_CONNECTING`` handshakes at once; callers waiting meanwhile get the
    connections of finished exchanges instead of a handshake each."""
    connecting = peak = 0
    real_connect = Pool.connect

    async def slow_connect(self: Pool, timeout: float) -> Any:
        nonlocal connecting, peak
        connecting += 1
        peak = max(peak, connecting)
        try:
            await asyncio.sleep(0.05)  # a handshake on a busy machine
            return await real_connect(self, timeout)
        finally:
            connecting -= 1

    monkeypatch.setattr(Pool, "connect", slow_connect)

    async def scenario() -> None:
        async with Server() as server, FailoverClient([server.url]) as client:
            calls = [client.call("GET", f"/{i}", retry_safe=True) for i in range(30)]
            responses = await asyncio.gather(*calls)
            assert sorted(r.json()["path"] for r in responses) == sorted(f"/{i}" for i in range(30))
            assert peak == MAX_CONNECTING
            assert server.connections < 10  # not one per caller
            assert len(server.requests) == 30

    run(scenario())


def test_a_waiting_caller_gives_up_after_the_connect_timeout(
    run: Run[None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(self: Pool, timeout: float) -> Any:
        await asyncio.sleep(timeout)
        raise WireError(FailureKind.CONNECT_TIMEOUT, "slow", sent=False)

    monkeypatch.setattr(Pool, "connect", never)

    async def scenario() -> None:
        async with Server() as server, FailoverClient([server.url], connect_timeout=0.1) as client:
            calls = [client.call("GET", "/", retry_safe=True) for _ in range(5)]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(o, AllEndpointsFailed) for o in outcomes)
            kinds = {f.kind for o in outcomes for f in o.failures}  # type: ignore[union-attr]
            assert kinds == {FailureKind.CONNECT_TIMEOUT}
            assert server.connections == 0

    run(scenario())


def test_standby_connections_stay_warm_to_the_backup_endpoint(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as first, Server() as second:
            client = FailoverClient(
                [first.url, second.url], idle_timeout=0.25, probe_interval=0.05, standby=2
            )
            async with client:
                client.start_probing()
                await client.call("GET", "/work", retry_safe=True)
                await asyncio.sleep(0.5)  # three refreshes (every 0.6 x idle_timeout)
                assert {r.path for r in second.requests} == {"/internal/v1/health"}
                assert second.connections == 2  # the same two, kept open
                assert len(second.requests) >= 4
                assert [r.path for r in first.requests] == ["/work"]  # the preferred: none
                await first.stop()
                burst = [client.call("GET", "/after", retry_safe=True) for _ in range(2)]
                for response in await asyncio.gather(*burst):
                    assert response.json()["path"] == "/after"
                assert second.connections == 2  # the failover found them open: no handshake

    run(scenario())


def test_standby_connections_go_to_the_next_backup_only(run: Run[None]) -> None:
    # Every backup warmed would cost clients x endpoints connections (issue 20: 40 APs
    # listing 30 Policy services kept 2,320 open): only the next in line gets them, and the
    # one after it once that one is in use.
    async def scenario() -> None:
        async with Server() as first, Server() as second, Server() as third:
            client = FailoverClient(
                [first.url, second.url, third.url],
                idle_timeout=0.25,
                probe_interval=0.05,
                standby=2,
            )
            async with client:
                client.start_probing()
                await client.call("GET", "/work", retry_safe=True)
                await asyncio.sleep(0.4)  # two refreshes
                assert second.connections == 2
                assert third.connections == 0
                assert not third.requests
                await first.stop()
                response = await client.call("GET", "/after", retry_safe=True)
                assert response.json()["path"] == "/after"
                await asyncio.sleep(0.4)
                assert third.connections == 2  # now the next in line
                assert {r.path for r in third.requests} == {"/internal/v1/health"}

    run(scenario())


def test_a_dead_backup_is_found_by_its_standby_connections(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as first:
            dead = refusing_url()
            client = FailoverClient(
                [first.url, dead], idle_timeout=0.1, probe_interval=10.0, standby=1
            )
            async with client:
                client.start_probing()
                await asyncio.sleep(0.2)
                assert [ep.url for ep in client.endpoints.down()] == [dead]
                assert client.endpoints.status()[1].reason.startswith("standby connection")

    run(scenario())


def test_a_slow_backup_stays_up_until_fall_standby_refreshes_in_a_row_time_out(
    run: Run[None],
) -> None:
    # Issue 20: on a machine too busy to answer a health check within probe_timeout, one
    # slow refresh flipped the backup down (and two probes later up again), each flip
    # paying new TLS handshakes on the same busy machine.
    async def sluggish(req: Req, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.3)  # past the probe timeout
        answer(w)
        return True

    async def scenario() -> None:
        async with Server() as first, Server(sluggish) as second:
            endpoints = Endpoints([first.url, second.url], retry_after=None, fall=3)
            failed_at_transition: list[int] = []
            endpoints.watch(
                lambda ep, up: failed_at_transition.append(endpoints.counters["probes_failed"])
            )
            client = FailoverClient(
                endpoints, idle_timeout=0.1, probe_interval=10.0, probe_timeout=0.1, standby=1
            )
            async with client:
                client.start_probing()
                deadline = time.monotonic() + 5
                while not failed_at_transition and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert failed_at_transition == [3]  # down at the third slow refresh, not the first
                assert endpoints.status()[1].reason.startswith("standby connection: read timeout")
                assert len(second.requests) >= 3

    run(scenario())


class OneAnswerServer:
    """A server on a thread of its own: one answer per connection, then, once told, it
    closes the connection (FIN) while the client's event loop is busy and cannot see it."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.close_now = threading.Event()
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            self.close_now.wait(5)
            conn.close()
            self.closed.set()


def test_a_call_that_cannot_be_resent_does_not_take_a_connection_the_server_closed(
    run: Run[None],
) -> None:
    """The server closed the idle connection and the event loop has not seen it yet: a call
    that is not retry-safe checks with the kernel and takes a new connection."""

    async def scenario() -> None:
        server = OneAnswerServer()
        try:
            async with FailoverClient([server.url]) as client:
                await client.call("POST", "/first", {}, retry_safe=False)
                server.close_now.set()
                assert server.closed.wait(5)
                time.sleep(0.05)  # the FIN is in; the loop is busy and has not read it
                response = await client.call("POST", "/second", {}, retry_safe=False)
                assert response.status == 200
                assert server.connections == 2
        finally:
            server.listener.close()

    run(scenario())


def test_peer_has_closed_asks_the_kernel() -> None:
    async def scenario() -> None:
        server = OneAnswerServer()
        try:
            loop = asyncio.get_running_loop()
            host, port = server.url.removeprefix("http://").split(":")
            transport, _ = await loop.create_connection(asyncio.Protocol, host, int(port))
            assert peer_has_closed(transport) is False
            transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.05)
            server.close_now.set()
            assert server.closed.wait(5)
            time.sleep(0.05)
            assert peer_has_closed(transport) is True  # unread answer and FIN: unusable
            transport.close()
            assert peer_has_closed(transport) is True
            assert peer_has_closed(None) is True
        finally:
            server.listener.close()

    uvloop.run(scenario())
    asyncio.run(scenario())


def test_peer_has_closed_sees_a_bare_fin_and_a_reset() -> None:
    """The server closes an idle connection without a byte (keep-alive timeout), or resets
    it: both unusable, seen without reading."""

    async def scenario(reset: bool) -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            loop = asyncio.get_running_loop()
            port = listener.getsockname()[1]
            transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            accepted, _ = listener.accept()
            assert peer_has_closed(transport) is False
            if reset:  # SO_LINGER 0: close sends a RST
                accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            accepted.close()
            time.sleep(0.05)
            assert peer_has_closed(transport) is True
            transport.abort()

    for reset in (False, True):
        uvloop.run(scenario(reset))


# real uvicorn servers -----------------------------------------------------------------------


async def events(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"type": "hello", "instance": "ps"}\n'
        for i in range(3):
            await asyncio.sleep(0.01)
            yield orjson.dumps({"type": "revoke", "session": f"s{i}"}) + b"\n"

    return StreamingResponse(body(), media_type="application/x-ndjson")


async def decide(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse({"decision": "allow", "headers": {"x-user": data["session"]}, "ttl": 5})


APP = Starlette(
    routes=[
        Route("/internal/v1/decide", decide, methods=["POST"]),
        Route("/internal/v1/events", events),
    ]
)


def uvicorn_server(keep_alive: int = 5) -> contextlib.AbstractAsyncContextManager[str]:
    config = uvicorn.Config(
        APP,
        host="127.0.0.1",
        port=free_port(),
        loop="none",
        http="httptools",
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_keep_alive=keep_alive,
    )
    return serving(config)


def test_with_uvicorn_json_calls_keep_alive_and_event_stream(run: Run[None]) -> None:
    async def scenario() -> None:
        async with uvicorn_server(keep_alive=1) as url, FailoverClient([url]) as client:
            for i in range(5):
                response = await client.call(
                    "POST", "/internal/v1/decide", {"session": f"s{i}"}, retry_safe=True
                )
                assert response.json() == {
                    "decision": "allow",
                    "headers": {"x-user": f"s{i}"},
                    "ttl": 5,
                }
            assert client.pool_stats()[url]["opened"] == 1
            # uvicorn closes the idle connection after its keep-alive timeout; the client
            # notices and the next call simply opens a new one.
            await asyncio.sleep(1.3)
            assert client.pool_stats()[url]["idle"] == 0
            await client.call("POST", "/internal/v1/decide", {"session": "x"}, retry_safe=True)
            assert client.pool_stats()[url]["opened"] == 2
            assert client.endpoints.counters["transitions"] == 0

            lines = [
                orjson.loads(line) async for line in client.stream_lines("/internal/v1/events")
            ]
            assert lines[0] == {"type": "hello", "instance": "ps"}
            assert [e["session"] for e in lines[1:]] == ["s0", "s1", "s2"]

    run(scenario())


SERVICE = textwrap.dedent(
    """
    import os
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def who(request):
        return JSONResponse({"name": os.environ["NAME"]})

    app = Starlette(routes=[Route("/who", who, methods=["GET", "POST"])])
    """
)


class Process:
    def __init__(self, tmp: Path, name: str, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(tmp),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "service:app",
            ],
            env={**os.environ, "NAME": name},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port("127.0.0.1", port, proc=self.proc)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def test_killed_primary_process_fails_over_and_back(run: Run[None], tmp_path: Path) -> None:
    (tmp_path / "service.py").write_text(SERVICE)
    ports = [free_port(), free_port()]
    primary = Process(tmp_path, "ps1", ports[0])
    secondary = Process(tmp_path, "ps2", ports[1])
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    async def who(client: FailoverClient) -> str:
        response = await client.call("GET", "/who", retry_safe=True)
        return str(response.json()["name"])

    async def scenario() -> None:
        nonlocal primary
        endpoints = Endpoints(urls, retry_after=0.5)
        async with FailoverClient(endpoints) as client:
            assert [await who(client) for _ in range(3)] == ["ps1"] * 3
            primary.kill()
            assert [await who(client) for _ in range(3)] == ["ps2"] * 3
            assert not endpoints.is_up(endpoints.all[0])
            primary = Process(tmp_path, "ps1", ports[0])
            await asyncio.sleep(0.5)
            assert [await who(client) for _ in range(3)] == ["ps1"] * 3
            assert endpoints.counters["transitions"] == 2

    try:
        run(scenario())
    finally:
        primary.kill()
        secondary.kill()

"""The AP's idle backend connections: a request that could not be resent (a body, or not
idempotent) never takes one that the backend has already closed, even when the event loop
has not seen the close yet (a Policy service killed as a sign-in form is posted)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvloop

from gatehouse.access_point.upstream import Origin, UpstreamConnection
from gatehouse.config.access_point import Backend


def closing_server() -> tuple[socket.socket, threading.Event, threading.Event]:
    """A backend that accepts one connection and closes it when told."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    close_now, closed = threading.Event(), threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        close_now.wait(5)
        conn.close()
        closed.set()

    threading.Thread(target=serve, daemon=True).start()
    return listener, close_now, closed


async def scenario() -> None:
    listener, close_now, closed = closing_server()
    port = listener.getsockname()[1]
    origin = Origin(Backend.parse(f"http://127.0.0.1:{port}"), None, 4, 60.0)
    loop = asyncio.get_running_loop()
    try:
        _, conn = await loop.create_connection(
            lambda: UpstreamConnection(origin), "127.0.0.1", port
        )
        now = loop.time()
        origin.release(conn, now)
        assert origin.take_idle(now, check=True) is conn  # alive: taken
        origin.release(conn, now)
        close_now.set()
        assert closed.wait(5)
        time.sleep(0.05)  # the FIN is in; this loop has not run since
        assert not conn.closed
        assert origin.take_idle(now, check=True) is None  # asked the kernel: closed
        assert origin.idle == []
    finally:
        listener.close()


def test_a_request_that_cannot_be_resent_skips_a_connection_the_backend_closed() -> None:
    uvloop.run(scenario())
    asyncio.run(scenario())


async def burst_scenario() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    origin = Origin(Backend.parse(f"http://127.0.0.1:{port}"), None, 4, 60.0)
    t0 = asyncio.get_running_loop().time()
    try:
        # A burst of 20 concurrent requests, 5 times the limit: 20 connections.
        burst = [await origin.connect(5.0) for _ in range(20)]
        for conn in burst:
            origin.release(conn, t0)
        assert len(origin.idle) == 20  # kept while bursts may need them again
        # The next burst within a second reuses every one of them: no new connection.
        again = [origin.take_idle(t0 + 0.5) for _ in range(20)]
        assert all(conn is not None for conn in again)
        assert len({id(conn) for conn in again}) == 20
        for conn in again:
            assert conn is not None
            origin.release(conn, t0 + 0.6)
        # The load drops to one request at a time: the surplus idle for more than a second is
        # closed, one per release, down to the limit.
        for step in range(40):
            conn = origin.take_idle(t0 + 2 + step * 0.01)
            assert conn is not None
            origin.release(conn, t0 + 2 + step * 0.01)
        assert len(origin.idle) == 4
        assert sum(c.closed for c in again) == 16
        # Never more than 8 times the limit idle, however large the burst.
        many = [await origin.connect(5.0) for _ in range(40)]
        for conn in many:
            origin.release(conn, t0 + 3)
        assert len(origin.idle) == 32
    finally:
        origin.close_idle()
        server.close()
        for writer in accepted:
            writer.close()
        await asyncio.sleep(0)


def test_a_burst_above_the_keepalive_limit_keeps_its_connections_while_it_lasts() -> None:
    uvloop.run(burst_scenario())


async def no_keepalive_scenario() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    origin = Origin(Backend.parse(f"http://127.0.0.1:{port}"), None, 0, 60.0)
    try:
        conn = await origin.connect(5.0)
        origin.release(conn, 0.0)
        assert conn.closed
        assert origin.idle == []
    finally:
        server.close()
        for writer in accepted:
            writer.close()
        await asyncio.sleep(0)


def test_upstream_keepalive_zero_keeps_no_idle_connection() -> None:
    uvloop.run(no_keepalive_scenario())

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

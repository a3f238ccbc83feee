"""Flow control between a client connection and its backend connection, in process.

While the backend's socket buffer is full, the client connection stops reading (the request
body waits in the client's socket, not in the Access Point's memory). When the exchange ends
with the pause still on (the backend answered before it had read the whole body), the client
connection must read again: its next request would otherwise wait unread until the keep-alive
timeout closed the connection. And the backend connection, with request bytes still unsent,
is closed rather than pooled: the next request must not queue behind the rest of this body.
The same holds for the pause of a body buffered for a backend connection that was never
made."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gatehouse.access_point.exchange import BODY_BUFFER_LIMIT
from gatehouse.access_point.pausing import PAUSE_BUFFER, PAUSE_UPSTREAM
from tests.support.fake_socket import Wired, wired_access_point

BODY = 200_000
HEAD = b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n" % BODY
EARLY = b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: app\r\n\r\n"


@pytest.fixture
def wired() -> Iterator[Wired]:
    """A client connection and one pooled backend connection (to a port that refuses)."""
    with wired_access_point("http://127.0.0.1:9") as wired:
        yield wired


def test_an_early_answer_while_the_backend_is_full_resumes_the_client(
    wired: Wired,
) -> None:
    conn, client, upstream = wired.conn, wired.client, wired.upstream
    backend, origin = wired.backend, wired.origin
    conn.data_received(HEAD + b"x" * 65_536)
    assert upstream.sink is not None  # sent on the pooled connection
    upstream.pause_writing()  # the backend's socket buffer is full
    assert conn.paused & PAUSE_UPSTREAM
    assert not client.reading
    conn.data_received(b"x" * (BODY - 65_536))  # what the client had sent meanwhile
    upstream.data_received(EARLY)  # the backend answers without reading the rest
    assert client.sent[-1].startswith(b"HTTP/1.1 413")
    # The client connection reads again: its next request is answered.
    assert not conn.paused
    assert client.reading
    # The backend connection, with part of the body still unsent, is not pooled.
    assert backend.closed
    assert upstream not in origin.idle
    conn.data_received(NEXT)
    assert upstream.sink is None
    assert conn.queue
    assert conn.queue[0].started


def test_an_answer_after_the_whole_body_pools_the_backend_connection(
    wired: Wired,
) -> None:
    """The pause that ended before the answer changes nothing: the connection is pooled."""
    conn, client, upstream = wired.conn, wired.client, wired.upstream
    backend, origin = wired.backend, wired.origin
    conn.data_received(HEAD + b"x" * 65_536)
    upstream.pause_writing()
    upstream.resume_writing()
    conn.data_received(b"x" * (BODY - 65_536))
    upstream.data_received(EARLY)
    assert not conn.paused
    assert client.reading
    assert not backend.closed
    assert upstream in origin.idle


def test_a_failed_connect_with_a_full_body_buffer_resumes_the_client(
    wired: Wired,
) -> None:
    """A body that waited for a backend connection (reading paused, the buffer full) and a
    connection that could not be made: the 502 ends the exchange and the client is read
    again. (Port 9 on loopback refuses the connection.)"""
    conn, client, origin = wired.conn, wired.client, wired.origin
    origin.idle.clear()  # no pooled connection: the request waits for a new one
    size = BODY_BUFFER_LIMIT + 1
    conn.data_received(b"POST /up HTTP/1.1\r\nHost: app\r\nContent-Length: %d\r\n\r\n" % size)
    conn.data_received(b"x" * size)
    assert conn.paused & PAUSE_BUFFER
    task = conn.queue[0].connect_task
    assert task is not None
    conn.loop.run_until_complete(task)
    assert client.sent[-1].startswith(b"HTTP/1.1 502")
    assert not conn.paused
    assert client.reading

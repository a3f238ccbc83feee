"""Lost connections are freed by reference counting, not left to the cyclic collector
(the Access Point's client and backend connections, its redirect listener's, and the
internal client's).

An httptools parser holds bound methods of its connection. Kept after the connection is lost,
that cycle (and everything the connection reaches: over TLS its SSL protocol, transport, SSL
object and BIOs, about 30 objects) waited for a collection; with a new TLS connection per
request the collector took about 12 µs of every connection's CPU. In process, with the
collector off, so that a cycle shows as an object still alive."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from gatehouse.access_point.connection import ClientConnection, WorkerState
from gatehouse.access_point.runtime import OriginRegistry, compile_config
from gatehouse.access_point.tls import RedirectProtocol
from gatehouse.access_point.upstream import UpstreamConnection
from gatehouse.config.access_point import AccessPointConfig
from gatehouse.internal.http1 import Connection, Pool
from tests.support.fake_socket import FakeTransport

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def alive(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


@pytest.fixture
def state() -> Iterator[WorkerState]:
    loop = asyncio.new_event_loop()
    config = AccessPointConfig.model_validate(
        {
            "access_point": {"listen": "127.0.0.1:8000"},
            "resources": [{"id": "app", "backends": ["http://127.0.0.1:8080"], "public": True}],
        }
    )
    runtime = compile_config(config, OriginRegistry(), 1, None)
    gc.collect()
    gc.disable()
    try:
        yield WorkerState(runtime, loop)
    finally:
        gc.enable()
        loop.close()


def serve_one_request(state: WorkerState) -> None:
    """A client connection that asks for ``/``, gets the backend's answer and is lost; the
    backend connection is lost too."""
    route = state.runtime.router.match("app.test", "/")
    assert route is not None
    origin = route[0].group.origins[0]
    backend = FakeTransport()
    upstream = UpstreamConnection(origin)
    upstream.connection_made(backend)  # type: ignore[arg-type]
    origin.release(upstream, state.loop.time())
    client = FakeTransport()
    conn = ClientConnection(state)
    client.protocol = conn
    conn.connection_made(client)  # type: ignore[arg-type]
    conn.data_received(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert backend.sent, "the request reached the backend"
    upstream.data_received(RESPONSE)
    assert b"".join(client.sent).startswith(b"HTTP/1.1 200")
    conn.connection_lost(None)
    client.protocol = None  # as uvloop's transports do after connection_lost
    upstream.connection_lost(None)


def test_a_lost_client_connection_is_freed_at_once(state: WorkerState) -> None:
    before = alive(ClientConnection)
    serve_one_request(state)
    assert alive(ClientConnection) == before, "a lost connection is still in a reference cycle"


def test_a_lost_backend_connection_is_freed_at_once(state: WorkerState) -> None:
    before = alive(UpstreamConnection)
    serve_one_request(state)
    assert alive(UpstreamConnection) == before, "a lost backend connection is in a cycle"


def test_a_lost_connection_ignores_late_data(state: WorkerState) -> None:
    """What a lost connection keeps instead of its parser calls nothing back."""
    conn = ClientConnection(state)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    conn.connection_lost(None)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert conn.queue == []
    assert conn.transport is None


def test_a_lost_redirect_connection_is_freed_at_once(state: WorkerState) -> None:
    """The plain-HTTP listener that redirects to HTTPS: one request per connection."""
    before = alive(RedirectProtocol)
    client = FakeTransport()
    protocol = RedirectProtocol(443, 308, set())
    client.protocol = protocol
    protocol.connection_made(client)  # type: ignore[arg-type]
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert b"".join(client.sent).startswith(b"HTTP/1.1 308")
    protocol.connection_lost(None)
    client.protocol = None
    del protocol
    assert alive(RedirectProtocol) == before, "a lost redirect connection is in a cycle"


def test_a_lost_internal_client_connection_is_freed_at_once(state: WorkerState) -> None:
    """A pooled connection of the internal client (to a Policy service, ...) that the server
    closed."""

    async def scenario() -> None:
        pool = Pool("127.0.0.1", 9, clock=state.loop.time, max_idle=4, idle_timeout=30.0)
        conn = Connection(pool)
        server = FakeTransport()
        server.protocol = conn
        conn.connection_made(server)  # type: ignore[arg-type]
        conn.connection_lost(None)
        server.protocol = None

    before = alive(Connection)
    state.loop.run_until_complete(scenario())
    assert alive(Connection) == before, "a lost internal connection is in a cycle"

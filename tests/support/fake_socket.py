"""An asyncio transport without a socket, for driving the Access Point's connections in
process: it records what is written, whether it is read and whether it was closed, and can
be told to fail; and :func:`wired_access_point`, a client connection and one pooled backend
connection on such transports.

    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gatehouse.access_point.connection import ClientConnection, WorkerState
from gatehouse.access_point.runtime import Origin, OriginRegistry, compile_config
from gatehouse.access_point.upstream import UpstreamConnection
from gatehouse.config.access_point import AccessPointConfig
from gatehouse.metrics.access_point import WorkerCounters


class FakeTransport:
    """Records what is written (``sent``), whether the protocol reads it (``reading``) and
    whether it was closed or aborted (``closed``); holds its protocol (``protocol``) when a
    test sets it, as real transports do until the connection is lost; ``fail``: every write
    raises."""

    def __init__(self, peer: str = "127.0.0.1", fail: bool = False) -> None:
        self.peer = peer
        self.fail = fail
        self.sent: list[bytes] = []
        self.protocol: Any = None
        self.reading = True
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("the socket broke")
        self.sent.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


@dataclass
class Wired:
    """A client connection and the pooled backend connection its request will take."""

    conn: ClientConnection
    client: FakeTransport
    upstream: UpstreamConnection
    backend: FakeTransport
    origin: Origin


@contextmanager
def wired_access_point(backend: str, counters: WorkerCounters | None = None) -> Iterator[Wired]:
    """An AP with one public resource at ``/`` on ``backend`` (counting into ``counters``
    when given), one client connection, and one idle backend connection in the pool."""
    config = AccessPointConfig.model_validate(
        {
            "access_point": {"listen": "127.0.0.1:8000"},
            "resources": [{"id": "app", "path_prefix": "/", "backends": [backend], "public": True}],
        }
    )
    loop = asyncio.new_event_loop()
    try:
        runtime = compile_config(config, OriginRegistry(), 1, None, counters=counters)
        clock = counters.clock if counters is not None else None
        conn = ClientConnection(WorkerState(runtime, loop, clock=clock))
        client = FakeTransport()
        conn.connection_made(client)  # type: ignore[arg-type]
        match = runtime.router.match("127.0.0.1", "/")
        assert match is not None
        origin = match[0].group.origins[0]
        upstream = UpstreamConnection(origin)
        backend_socket = FakeTransport()
        upstream.connection_made(backend_socket)  # type: ignore[arg-type]
        origin.release(upstream, loop.time())
        yield Wired(conn, client, upstream, backend_socket, origin)
    finally:
        loop.close()

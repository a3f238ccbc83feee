"""The metrics listener: ``GET /metrics`` over plain HTTP/1.1, one request per connection.

Small on purpose (Prometheus sends one GET per scrape): it reads one request head, answers
from ``render`` (the text exposition format) and closes. A head larger than :data:`MAX_HEAD`
or slower than :data:`READ_TIMEOUT` is dropped; at most :data:`MAX_CONNECTIONS` are open.
It runs on the service's own event loop (or the Access Point supervisor's metrics thread).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gatehouse.internal.one_request import OneRequestProtocol, head_end, request_line

log = logging.getLogger("gatehouse.metrics")

MAX_HEAD = 8 << 10
READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 16
PATHS = frozenset({b"/metrics", b"/"})

Render = Callable[[], Awaitable[bytes]]


def http_answer(status: int, reason: str, body: bytes, content_type: str, head: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii") + (b"" if head else body)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _plain(status: int, reason: str, text: str) -> bytes:
    return http_answer(status, reason, text.encode() + b"\n", "text/plain; charset=utf-8", False)


class MetricsProtocol(OneRequestProtocol):
    """One connection: read one request head, answer, close."""

    max_connections = MAX_CONNECTIONS
    read_timeout = READ_TIMEOUT

    def __init__(self, render: Render, connections: set[asyncio.Transport]) -> None:
        super().__init__(connections)
        self.render = render

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return
        self.buffer += data
        if head_end(self.buffer) < 0:
            if len(self.buffer) > MAX_HEAD:
                self.send(_plain(431, "Request Header Fields Too Large", "head too large"))
            return
        self.answered = True
        request = request_line(self.buffer)
        if request is None:
            self.send(_plain(400, "Bad Request", "not an HTTP/1.x request"))
            return
        method, target = request[0], request[1].split(b"?", 1)[0]
        if target not in PATHS:
            self.send(_plain(404, "Not Found", "metrics are at /metrics"))
        elif method not in (b"GET", b"HEAD"):
            self.send(_plain(405, "Method Not Allowed", "use GET"))
        else:
            asyncio.get_running_loop().create_task(self._metrics(method == b"HEAD"))

    async def _metrics(self, head: bool) -> None:
        try:
            body = await self.render()
        except Exception:
            log.exception("rendering the metrics failed")
            self.send(_plain(500, "Internal Server Error", "rendering the metrics failed"))
            return
        self.send(http_answer(200, "OK", body, CONTENT_TYPE_PLAIN_0_0_4, head))


class MetricsListener:
    """``GET /metrics`` on ``host:port``, answered from ``render``, on the running loop."""

    def __init__(self, render: Render) -> None:
        self.render = render
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Transport] = set()

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> bool:
        """Listen; False (logged) when the address cannot be bound: the service runs on
        without metrics rather than not at all (Prometheus shows the target down)."""
        loop = asyncio.get_running_loop()
        factory = lambda: MetricsProtocol(self.render, self._connections)  # noqa: E731
        try:
            if sock is None and _is_ip(host):
                # Bound here rather than by create_server(host, port): uvloop would resolve
                # the address on libuv's thread pool, leaving four idle threads in an Access
                # Point worker that has none otherwise. (A host name may stand for several
                # addresses: create_server binds them all.)
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                sock = socket.create_server((host, port), family=family)
            if sock is not None:
                self.server = await loop.create_server(factory, sock=sock)
            else:
                self.server = await loop.create_server(factory, host, port, reuse_address=True)
        except OSError as exc:
            log.error("metrics listener: cannot listen on %s:%d: %s", host, port, exc.strerror)
            return False
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("metrics on http://%s/metrics", shown)
        return True

    @property
    def port(self) -> int | None:
        if self.server is None or not self.server.sockets:
            return None
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for transport in list(self._connections):
            transport.abort()

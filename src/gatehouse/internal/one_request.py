"""The server side of a small listener that answers one HTTP/1.x request per connection and
closes it (the metrics listener, the Access Point's status listener).

:class:`OneRequestProtocol` keeps what such a connection needs around its one answer: at most
``max_connections`` open (one more is aborted at once), ``read_timeout`` seconds to send the
request head (then aborted), the bytes read so far, and one answer written before closing.
A subclass finds the head in :attr:`~OneRequestProtocol.buffer` with :func:`head_end`, reads
its request line with :func:`request_line` and answers with :meth:`~OneRequestProtocol.send`.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, cast


def head_end(buffer: bytes) -> int:
    """Where the request head in ``buffer`` ends (the blank line, CRLF or bare LF), or -1
    while it has not ended."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        end = buffer.find(b"\n\n")
    return end


def request_line(head: bytes) -> tuple[bytes, bytes] | None:
    """The method and target (query included) of an HTTP/1.x request head, or None when its
    first line is not ``METHOD TARGET HTTP/1.x``."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return None
    return parts[0], parts[1]


class OneRequestProtocol(asyncio.Protocol):
    """One connection: read one request head, answer it once, close."""

    #: Connections open at once; more are aborted as they come.
    max_connections: ClassVar[int]
    #: Seconds a client has to send its request head.
    read_timeout: ClassVar[float]

    def __init__(self, connections: set[asyncio.Transport]) -> None:
        #: The listener's open connections (shared by its protocols).
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None

    def timer_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the read timeout runs on."""
        return asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        tcp = cast(asyncio.Transport, transport)
        if len(self.connections) >= self.max_connections:
            tcp.abort()
            return
        self.transport = tcp
        self.connections.add(tcp)
        self.timer = self.timer_loop().call_later(self.read_timeout, tcp.abort)

    def eof_received(self) -> bool:
        if self.transport is not None and not self.answered:
            self.transport.abort()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.connections.discard(self.transport)

    def send(self, data: bytes) -> None:
        """Write the answer and close (nothing when the connection is gone or closing)."""
        self.answered = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        transport.close()

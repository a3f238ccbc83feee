"""Send raw bytes to a server and read back what it answers, for malformed-request tests.

http.client cannot send what these tests need (bare LF, obs-fold, two Content-Length fields),
so the bytes go straight onto a socket; responses are parsed with httptools.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import httptools

Header = tuple[bytes, bytes]


def exchange(host: str, port: int, data: bytes, timeout: float = 3.0) -> tuple[bytes, bool]:
    """Send ``data`` in one write on a fresh connection and read until the server closes.

    Returns what was read and whether the server closed the connection (end of stream or reset)
    within ``timeout`` seconds; ``False`` means it was still open when the time ran out.
    """
    received = bytearray()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(received), False
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return bytes(received), False
            except ConnectionResetError:
                return bytes(received), True
            if not chunk:
                return bytes(received), True
            received += chunk


@dataclass(slots=True)
class Response:
    """One parsed response."""

    status: int
    headers: list[Header] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of ``name`` (any case), or None."""
        lname = name.lower()
        return next((v for n, v in self.headers if n.lower() == lname), None)


class _Collector:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.responses: list[Response] = []
        self.headers: list[Header] = []
        self.body = bytearray()

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.responses.append(Response(self.parser.get_status_code(), list(self.headers)))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if self.responses:
            self.responses[-1].body = bytes(self.body)
            self.responses[-1].complete = True


def parse_responses(data: bytes) -> list[Response]:
    """Parse one or several pipelined responses; stop quietly at bytes that are not HTTP.

    A response whose body is cut short is returned with ``complete`` false. Responses to HEAD
    requests cannot be told apart from the bytes alone, so do not use this for them.
    """
    collector = _Collector()
    try:
        collector.parser.feed_data(data)
    except httptools.HttpParserError:
        pass
    return collector.responses


def statuses(data: bytes) -> list[int]:
    """Status codes of the responses in ``data``, in order (interim ones included)."""
    return [response.status for response in parse_responses(data)]

"""A strict HTTP/1.x client over a plain socket, for tests that must see the exact bytes.

``http.client`` hides what these tests check (interim responses, framing, whether the server
closed, pipelining), so :class:`WireClient` writes raw requests and parses each response itself:
Content-Length, chunked (trailers kept apart) and close-delimited bodies, no body for HEAD, 1xx,
204 and 304.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Response", "WireClient", "request_bytes"]


@dataclass
class Response:
    """One parsed response."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The first value of a field (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "1.1",
    host: str = "127.0.0.1",
) -> bytes:
    """A request head (with Host unless ``headers`` has one) followed by ``body`` as given."""
    fields = list(headers or [])
    if version == "1.1" and not any(name.lower() == "host" for name, _ in fields):
        fields.insert(0, ("Host", host))
    lines = [f"{method} {target} HTTP/{version}"] + [f"{n}: {v}" for n, v in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class WireClient:
    """A connected socket with a read buffer."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        version: str = "1.1",
    ) -> Response:
        """Send one request (adding Content-Length for a body) and read its response."""
        fields = list(headers or [])
        if body and not any(
            n.lower() in ("content-length", "transfer-encoding") for n, _ in fields
        ):
            fields.append(("Content-Length", str(len(body))))
        self.send(request_bytes(method, target, fields, body, version, self.host))
        return self.read_response(method)

    # reading ---------------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Read more bytes into the buffer; False at end of stream."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(256 << 10)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        """Bytes up to and including ``marker``; ConnectionError if the stream ends first."""
        start = 0
        while True:
            at = self.buf.find(marker, start)
            if at >= 0:
                end = at + len(marker)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            start = max(0, len(self.buf) - len(marker) + 1)
            if len(self.buf) > limit:
                raise ValueError(f"no {marker!r} in the first {limit} bytes")
            if not self._fill():
                raise ConnectionError(f"connection closed before {marker!r}: {bytes(self.buf)!r}")

    def read_exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            if not self._fill():
                raise ConnectionError(f"connection closed after {len(self.buf)} of {size} bytes")
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def read_to_close(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_response(self, method: str = "GET") -> Response:
        """The next response on the connection (an interim 1xx one is returned as it is)."""
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *lines = head[:-4].split("\r\n")
        version, status, reason = [*status_line.split(" ", 2), ""][:3]
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise ValueError(f"not a status line: {status_line!r}")
        headers = []
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or name != name.strip():
                raise ValueError(f"malformed header line: {line!r}")
            headers.append((name, value.strip(" \t")))
        resp = Response(version, int(status), reason, headers)
        te = (resp.header("Transfer-Encoding") or "").lower()
        length = resp.header("Content-Length")
        if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            return resp
        if te:
            if te != "chunked":
                raise ValueError(f"unexpected Transfer-Encoding {te!r}")
            if length is not None:
                raise ValueError("both Transfer-Encoding and Content-Length in a response")
            resp.body, resp.trailers = self._read_chunked()
        elif length is not None:
            resp.body = self.read_exact(int(length))
        else:
            resp.body = self.read_to_close()
        return resp

    def _read_chunked(self) -> tuple[bytes, list[tuple[str, str]]]:
        parts = []
        while True:
            size_line = self.read_until(b"\r\n").decode("latin-1")
            size = int(size_line.split(";", 1)[0].strip(), 16)
            if size == 0:
                break
            parts.append(self.read_exact(size))
            if self.read_exact(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
        trailers: list[tuple[str, str]] = []
        while True:
            line = self.read_until(b"\r\n").decode("latin-1")
            if line == "\r\n":
                return b"".join(parts), trailers
            name, _, value = line[:-2].partition(":")
            trailers.append((name, value.strip(" \t")))

    def closed_by_peer(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the peer to close, ignoring data it sends first."""
        deadline = time.monotonic() + within
        previous = self.sock.gettimeout()
        try:
            while not self.eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.sock.settimeout(remaining)
                try:
                    self._fill()
                except TimeoutError:
                    return False
            return True
        finally:
            self.sock.settimeout(previous)

    def idle(self, within: float) -> bool:
        """True when nothing arrives and the peer does not close for ``within`` seconds."""
        before = len(self.buf)
        return not self.closed_by_peer(within) and len(self.buf) == before

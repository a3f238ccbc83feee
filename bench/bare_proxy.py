#!/usr/bin/env python3
"""The least a Python reverse proxy can do per request, for `bench/ceiling.py`.

Not part of Gatehouse: a reference, like the nginx proxy, that shows how fast any proxy
written on the same libraries (uvloop, httptools) can be on this machine. One process, one
backend connection per client connection (no pool, no routing, no header rewrite, no
timeouts, no limits: nothing a gateway must do), in one of two modes:

- ``relay``: bytes from the client go to the backend as they are and back (a TCP relay,
  no parsing at all): the same system calls per request as any proxy, and nothing else;
- ``parse``: each request and response is parsed with httptools and written again (method,
  target, Host; status, headers, body), the least an HTTP proxy must do.

    python bench/bare_proxy.py relay 127.0.0.1:8080 127.0.0.1:9000
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport, parse: bool) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self) if parse else None
        self.head: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.pending:
            self.transport.write(b"".join(self.pending))  # type: ignore[union-attr]
            self.pending.clear()

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            self.client.write(data)
        else:
            self.parser.feed_data(data)

    # httptools callbacks (parse mode)
    def on_message_begin(self) -> None:
        assert self.parser is not None
        self.head = []
        self.body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.append(b"%s: %s\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        self.client.write(
            b"HTTP/1.1 %d OK\r\n%s\r\n%s" % (status, b"".join(self.head), b"".join(self.body))
        )


class Client(asyncio.Protocol):
    def __init__(self, backend: tuple[str, int], parse: bool) -> None:
        self.backend = backend
        self.parse = parse
        self.parser = httptools.HttpRequestParser(self) if parse else None
        self.upstream: Upstream | None = None
        self.url = b""
        self.host = b""
        self.connecting: asyncio.Task[object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.upstream = Upstream(transport, self.parse)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(
            loop.create_connection(lambda: self.upstream, *self.backend)  # type: ignore[arg-type,return-value]
        )

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            assert self.upstream is not None
            self.upstream.send(data)
        else:
            self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    # httptools callbacks (parse mode)
    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host":
            self.host = value

    def on_message_complete(self) -> None:
        assert self.parser is not None
        assert self.upstream is not None
        self.upstream.send(
            b"%s %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (self.parser.get_method(), self.url, self.host)
        )


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(mode: str, listen: tuple[str, int], backend: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Client(backend, mode == "parse"), *listen, backlog=4096, reuse_port=True
    )
    async with server:
        await server.serve_forever()


def main() -> int:
    mode, listen, backend = sys.argv[1:4]
    if mode not in ("relay", "parse"):
        raise SystemExit("mode: relay or parse")
    uvloop.run(serve(mode, address(listen), address(backend)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

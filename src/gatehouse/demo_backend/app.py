"""The demo "whoami" backend: a raw ASGI app run by uvicorn.

Every HTTP request is answered with a JSON description of what arrived (method, raw path, query,
headers in order, body size and SHA-256), so tests and benchmarks can see exactly what a proxy in
front of it forwarded. Paths are matched by their ending so the endpoints work behind prefix
routing (``/x/download`` is ``/download``):

- ``GET …/download?size=N[&chunked=1]``: N bytes of :func:`download_chunks`, 64 KiB at a time.
- ``…/status/NNN``: that status with a tiny body (none for 204 and 304).
- ``…/slow?delay=SECONDS``: waits, then echoes.
- WebSocket at any path: echoes every text and binary message.

With an :class:`~gatehouse.demo_backend.assertion_check.AssertionCheck` (``--jwks-url``),
every request must carry a valid signed identity assertion: without one the answer is 401
``{"error": "assertion", "message": ...}`` (a WebSocket is refused), with one the echo
carries its verified claims as ``"assertion"``.

With a :class:`~gatehouse.demo_backend.mail_sink.MailSink` (``--smtp HOST:PORT``), the
process also runs the demo SMTP sink, and ``GET …/mail`` (a page) and ``GET …/mail.json``
list the messages it received, newest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import uvicorn

from gatehouse.demo_backend.assertion_check import AssertionCheck, KeySetUnavailable
from gatehouse.demo_backend.mail_sink import MailBox, MailSink, mail_json, mail_page
from gatehouse.internal.hosting import Server
from gatehouse.policy.assertions import AssertionInvalid

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHUNK_SIZE = 64 << 10
MAX_DOWNLOAD = 4 << 30
MAX_DELAY = 3600.0

_BLOCK = bytes(range(256)) * (CHUNK_SIZE // 256)
_STATUS_PATH = re.compile(r"(?:^|/)status/(\d{3})$")
#: Where a checked request's assertion claims travel from the check to the echo.
ASSERTION_SCOPE_KEY = "gatehouse.assertion"


class _BadRequest(Exception):
    """A query parameter is missing or malformed; answered with 400."""


class _Disconnected(Exception):
    """The client went away before the request body was read."""


def download_chunks(size: int) -> Iterator[bytes]:
    """The deterministic body of ``/download?size=N``, in 64 KiB chunks.

    Chunk ``i`` is ``i`` as 8 big-endian bytes followed by the bytes 8, 9, …, 255, 0, 1, …, so a
    lost, repeated or reordered chunk changes the content, not only its length.
    """
    for index, offset in enumerate(range(0, size, CHUNK_SIZE)):
        chunk = index.to_bytes(8, "big") + _BLOCK[8:]
        yield chunk if size - offset >= CHUNK_SIZE else chunk[: size - offset]


def _dumps(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope["query_string"]
    return {key: values[-1] for key, values in parse_qs(raw.decode("latin-1")).items()}


def _download_size(query: dict[str, str]) -> int:
    value = query.get("size", "")
    if not value.isdigit() or int(value) > MAX_DOWNLOAD:
        raise _BadRequest(f"size must be a whole number of bytes up to {MAX_DOWNLOAD}")
    return int(value)


def _delay(query: dict[str, str]) -> float:
    try:
        delay = float(query.get("delay", "1"))
    except ValueError:
        raise _BadRequest("delay must be a number of seconds") from None
    if not (math.isfinite(delay) and 0 <= delay <= MAX_DELAY):
        raise _BadRequest(f"delay must be between 0 and {MAX_DELAY:g} seconds")
    return delay


def _status_code(path: str) -> int | None:
    match = _STATUS_PATH.search(path)
    if match is None:
        return None
    status = int(match.group(1))
    if not 200 <= status <= 599:
        raise _BadRequest("status must be between 200 and 599")
    return status


async def _drain(receive: Receive) -> tuple[int, str]:
    """Read the whole request body without keeping it; return its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body: bytes = message.get("body", b"")
        size += len(body)
        digest.update(body)
        if not message.get("more_body", False):
            return size, digest.hexdigest()


async def _respond(send: Send, status: int, body: bytes = b"") -> None:
    headers = []
    if status not in (204, 304):
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body if headers else b""})


def _echo(scope: Scope, body_size: int, body_sha256: str) -> dict[str, object]:
    raw_path: bytes | None = scope.get("raw_path")
    client = scope.get("client")
    checked = {"assertion": scope[ASSERTION_SCOPE_KEY]} if ASSERTION_SCOPE_KEY in scope else {}
    return {
        **checked,
        "method": scope["method"],
        "path": raw_path.decode("latin-1") if raw_path is not None else scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "http_version": scope["http_version"],
        "headers": [
            [name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]
        ],
        "body_size": body_size,
        "body_sha256": body_sha256,
        "client": f"{client[0]}:{client[1]}" if client else "",
    }


async def _download(send: Send, receive: Receive, size: int, chunked: bool) -> None:
    headers = [(b"content-type", b"application/octet-stream")]
    if not chunked:
        headers.append((b"content-length", b"%d" % size))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    # The body has been read, so the next receive() only returns when the client disconnects;
    # uvicorn's send() silently drops data after that, so stop producing it.
    gone = asyncio.ensure_future(receive())
    try:
        for chunk in download_chunks(size):
            if gone.done():
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        gone.cancel()


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    query = _query(scope)
    download = scope["method"] == "GET" and path.endswith("/download")
    try:
        try:
            status = _status_code(path)
            size = _download_size(query) if download else 0
            delay = _delay(query) if path.endswith("/slow") else 0.0
        except _BadRequest as exc:
            await _drain(receive)
            await _respond(send, 400, _dumps({"error": str(exc)}))
            return
        if download:
            await _drain(receive)
            await _download(send, receive, size, query.get("chunked") == "1")
        elif status is not None:
            await _drain(receive)
            await _respond(send, status, _dumps({"status": status}))
        else:
            await asyncio.sleep(delay)
            body_size, body_sha256 = await _drain(receive)
            await _respond(send, 200, _dumps(_echo(scope, body_size, body_sha256)))
    except _Disconnected:
        return


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    accept: Message = {"type": "websocket.accept"}
    if scope.get("subprotocols"):
        accept["subprotocol"] = scope["subprotocols"][0]
    await send(accept)
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)


ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def checking(check: AssertionCheck, inner: ASGIApp = app) -> ASGIApp:
    """``inner`` (:func:`app`), answering only requests that carry a valid identity assertion."""

    async def checked_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        try:
            claims = await check.claims(scope["headers"])
        except (AssertionInvalid, KeySetUnavailable) as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            status = 401 if isinstance(exc, AssertionInvalid) else 503
            with contextlib.suppress(_Disconnected):
                await _drain(receive)
                await _respond(send, status, _dumps({"error": "assertion", "message": str(exc)}))
            return
        await inner({**scope, ASSERTION_SCOPE_KEY: claims}, receive, send)

    return checked_app


_PAGE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
    (b"cache-control", b"no-store"),
]


def with_mail(inner: ASGIApp, box: MailBox) -> ASGIApp:
    """``inner``, except that ``GET …/mail`` and ``GET …/mail.json`` list ``box``'s messages."""

    async def mail_app(scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await inner(scope, receive, send)
        elif path.endswith("/mail"):
            body = mail_page(box).encode()
            await _answer(scope, receive, send, b"text/html; charset=utf-8", body)
        elif path.endswith("/mail.json"):
            body = _dumps(mail_json(box))
            await _answer(scope, receive, send, b"application/json", body)
        else:
            await inner(scope, receive, send)

    return mail_app


async def _answer(scope: Scope, receive: Receive, send: Send, kind: bytes, body: bytes) -> None:
    try:
        await _drain(receive)
    except _Disconnected:
        return
    headers = [(b"content-type", kind), (b"content-length", b"%d" % len(body)), *_PAGE_HEADERS]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def with_sink(inner: ASGIApp, sink: MailSink) -> ASGIApp:
    """``inner``, with ``sink`` started at the lifespan's startup and stopped at its end."""

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await inner(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await sink.start()
                except OSError as exc:
                    text = f"demo mail sink: cannot listen on {sink.host}:{sink.port}: {exc}"
                    await send({"type": "lifespan.startup.failed", "message": text})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await sink.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return lifespan_app


def serve(
    host: str,
    port: int,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    check: AssertionCheck | None = None,
    sink: MailSink | None = None,
) -> None:
    """Serve the demo backend until SIGTERM or SIGINT; HTTPS when a certificate is given;
    with ``check``, only requests with a valid identity assertion; with ``sink``, the demo
    SMTP sink too, its mail listed at ``…/mail`` and ``…/mail.json``."""
    served: ASGIApp = app if sink is None else with_mail(app, sink.box)
    if check is not None:
        served = checking(check, served)
    if sink is not None:
        served = with_sink(served, sink)
    config = uvicorn.Config(
        served,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",  # the "websockets" one is deprecated by uvicorn
        lifespan="off" if sink is None else "on",
        access_log=False,
        server_header=False,
        # Show the peer as it connected, not what X-Forwarded-For claims.
        proxy_headers=False,
        # Longer than the Access Point's upstream idle timeout (60 s), so the proxy, not the
        # backend, closes idle pooled connections: no race on reuse.
        timeout_keep_alive=75,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    Server(config).run()

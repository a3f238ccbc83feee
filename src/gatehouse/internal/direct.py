"""Hot internal calls served straight from ASGI, before Starlette's router.

A call's Starlette route (:meth:`gatehouse.internal.calls.Call.route`) goes through the
router's linear scan of every route, two middlewares, a request and a response object: about
as much CPU per call as the OAuth2 introspection it carries. :class:`DirectCalls`, an ASGI
middleware of the service's app, serves the calls it is given for their exact path and
methods itself, with the same checks in the same order (the caller's role, the body's size,
the declared decoding) and the same answers (the encoded value as JSON; a
:class:`~gatehouse.internal.errors.ServiceError` as its JSON error; 503 when the database is
unavailable; 500, logged, for anything else). Every other request goes on to the app.
The Starlette routes stay registered for the same calls (a method the declaration does not
take still gets the router's 405).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse.internal.calls import EMPTY, Call, Handler
from gatehouse.internal.endpoint import bad_request
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.storage.errors import DatabaseUnavailable

__all__ = ["CallerGone", "DirectCalls", "RouteLabel", "read_asgi_body", "send_bytes"]

log = logging.getLogger("gatehouse.internal")

JSON = b"application/json"


@dataclass(frozen=True, slots=True)
class RouteLabel:
    """Put in the scope as ``route`` where Starlette's router would have put the matched
    route: metrics label requests by its ``path`` template
    (:class:`gatehouse.metrics.asgi.RequestMetrics`)."""

    path: str


class CallerGone(Exception):
    """The caller closed the connection before its request's body was in: nobody to answer."""


async def read_asgi_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request's body, refused (400) as soon as it is known to exceed ``limit``
    (:func:`gatehouse.internal.calls.read_body` on ASGI messages).

    Raises:
        ServiceError: 400, the body is too large.
        CallerGone: the caller went away first.
    """
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise bad_request(f"body larger than {limit} bytes")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise CallerGone()
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise bad_request(f"body larger than {limit} bytes")
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """One whole answer: ``headers`` (lower-case names) and ``Content-Length`` (none on a
    204 or 304, RFC 9110 §8.6)."""
    if status not in (204, 304):
        headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Direct:
    __slots__ = ("call", "handler", "has_body", "label", "methods")

    def __init__(self, call: Call[Any, Any], handler: Handler[Any, Any]) -> None:
        if call.params:
            raise ValueError(f"{call.name}: only calls without path parameters are served directly")
        self.call = call
        self.handler = handler
        self.has_body = call.request is not EMPTY
        self.methods = frozenset(call.methods)
        self.label = RouteLabel(call.path)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = self.call
        scope["route"] = self.label
        try:
            peer = call.authorize_scope(scope)
            body = await read_asgi_body(scope, receive, call.max_body) if self.has_body else b""
            try:
                parsed = call.request.decode(body)
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            answer = await self.handler(Request(scope, receive), peer, parsed)
            if isinstance(answer, Response):
                await answer(scope, receive, send)
                return
            encoded = call.answer.encode(answer)
        except ServiceError as error:
            await _error(send, error)
            return
        except CallerGone:
            return
        except DatabaseUnavailable as exc:
            log.warning("%s %s: %s", scope["method"], scope["path"], exc)
            await _error(send, ServiceError(Code.UNAVAILABLE, str(exc), 503))
            return
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            await _error(send, ServiceError(Code.INTERNAL, "internal error", 500))
            return
        await send_bytes(send, 200, [(b"content-type", JSON)], encoded)


async def _error(send: Send, error: ServiceError) -> None:
    body = orjson.dumps({"error": error.code.value, "message": error.message})
    await send_bytes(send, error.status, [(b"content-type", JSON)], body)


class DirectCalls:
    """ASGI middleware: ``calls`` (each a declaration and its handler, as
    :meth:`Call.route` takes them) served for their exact path and declared methods; every
    other request goes to ``app``."""

    def __init__(
        self, app: ASGIApp, calls: Sequence[tuple[Call[Any, Any], Handler[Any, Any]]]
    ) -> None:
        self.app = app
        self.paths = {call.path: _Direct(call, handler) for call, handler in calls}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            direct = self.paths.get(scope["path"])
            if direct is not None and scope["method"] in direct.methods:
                await direct.serve(scope, receive, send)
                return
        await self.app(scope, receive, send)

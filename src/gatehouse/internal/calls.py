"""One declaration per internal call: both the server's route and the client's call are made
from it, so the two sides cannot drift (the shape of synapse's replication endpoints).

A :class:`Call` says everything about one internal endpoint: the service that serves it, its
method and path, how its request and answer are encoded (a :class:`Codec` each way), the roles
(from the caller's certificate) that may call it, and whether a retry on the next endpoint is
safe. ::

    DECIDE = Call("policy", "decide", "POST", "/internal/v1/decide", DECISION_REQUEST,
                  DECISION, roles={ACCESS_POINT}, retry_safe=True, summary="...")

    routes = [DECIDE.route(handle_decide)]          # the Policy service
    decision = await DECIDE.invoke(client, request)  # the Access Point

On an authenticated (mutual TLS) listener a caller whose role is not in ``roles`` gets 403
``forbidden`` before anything is parsed, and the refusal is logged on ``gatehouse.audit``. A
plaintext listener (a service started from a file without ``--tls``: development on one
machine) has no peers to check: its calls are not authorized by role.

The catalogue of every declaration (:mod:`gatehouse.internal.catalog`) makes
docs/internal-api.md's role table and the role-matrix test.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import orjson

from gatehouse.internal.client import FailoverClient
from gatehouse.internal.client import Response as Answer
from gatehouse.internal.endpoint import bad_request, json_endpoint, parse_json_object
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.internal.peer import scope_peer
from gatehouse.trust.identity import (
    ACCESS_POINT,
    ADMINISTRATION,
    AUTHENTICATION,
    OPERATOR,
    POLICY,
    ROLES,
    Peer,
)

__all__ = [
    "EMPTY",
    "HEALTH_PATH",
    "HEALTH_ROLES",
    "JSON_OBJECT",
    "Call",
    "CallRefused",
    "Codec",
    "Handler",
    "health_call",
    "json_codec",
]

if TYPE_CHECKING:  # the server half needs Starlette; an Access Point, a client only, never loads it
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

audit = logging.getLogger("gatehouse.audit")

T = TypeVar("T")
Req = TypeVar("Req")
Ans = TypeVar("Ans")

#: Request bodies larger than this are refused (400) unless a declaration says otherwise.
MAX_BODY = 64 * 1024
#: Who may ask a service for its health: every role that calls one.
HEALTH_ROLES = frozenset({ACCESS_POINT, POLICY, AUTHENTICATION, ADMINISTRATION, OPERATOR})
_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    """Both directions of one body's encoding. ``decode`` raises :class:`ServiceError`
    (400, naming the field) or ``ValueError`` for a body it refuses."""

    decode: Callable[[bytes], T]
    encode: Callable[[T], bytes]
    #: What docs/internal-api.md shows for it.
    shape: str = "JSON object"


def json_codec(
    parse: Callable[[dict[str, Any]], T],
    render: Callable[[T], Mapping[str, Any]],
    shape: str,
    max_bytes: int = MAX_BODY,
) -> Codec[T]:
    """A codec of one JSON object: ``parse`` checks the decoded object, ``render`` makes it."""

    def decode(body: bytes) -> T:
        return parse(parse_json_object(body, max_bytes))

    def encode(value: T) -> bytes:
        return orjson.dumps(render(value))

    return Codec(decode, encode, shape)


def _empty(body: bytes) -> None:
    if body:
        raise bad_request("this call takes no body")


#: No body.
EMPTY: Codec[None] = Codec(_empty, lambda _value: b"", "-")
#: Any JSON object, checked by the handler.
JSON_OBJECT: Codec[dict[str, Any]] = json_codec(lambda data: data, lambda data: data, "JSON object")

#: ``handler(request, peer, body)``: what a route calls; returns the answer to encode, or a
#: ready :class:`Response` (a stream, an error with a status of its own).
Handler = Callable[["Request", Peer | None, Req], Awaitable["Ans | Response"]]


class CallRefused(ServiceError):
    """The server answered the call with a 4xx (its ``{"error", "message"}``)."""


@dataclass(frozen=True, slots=True)
class Call(Generic[Req, Ans]):
    service: str
    name: str
    method: str
    path: str
    request: Codec[Req]
    answer: Codec[Ans]
    roles: frozenset[str]
    retry_safe: bool
    summary: str
    #: The answer is a never-ending stream of JSON lines (``answer`` decodes one line).
    stream: bool = False
    #: Further methods this declaration covers (a guarded HTML page also takes POST).
    more_methods: tuple[str, ...] = ()
    #: Request bodies larger than this are refused (400) before they are read in full.
    max_body: int = MAX_BODY
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"{self.name}: unknown roles {sorted(unknown)}")
        object.__setattr__(self, "roles", frozenset(self.roles))
        object.__setattr__(self, "params", tuple(_PARAM.findall(self.path)))

    def allows(self, role: str) -> bool:
        return role in self.roles

    @property
    def methods(self) -> tuple[str, ...]:
        return (self.method, *self.more_methods)

    # the server ------------------------------------------------------------------------
    def authorize(self, request: Request) -> Peer | None:
        """The caller, if its role may make this call.

        Raises:
            ServiceError: 403 ``forbidden`` (logged on the audit log).
        """
        return self.authorize_scope(request.scope)

    def authorize_scope(self, scope: Mapping[str, Any]) -> Peer | None:
        """:meth:`authorize` of a request's ASGI scope (a route served without Starlette's
        request object: :class:`gatehouse.internal.direct.DirectCalls`)."""
        tls, peer = scope_peer(scope)
        if not tls:
            return None
        if peer is None or peer.role not in self.roles:
            who = "a caller without a Gatehouse certificate" if peer is None else str(peer.identity)
            client = scope.get("client")
            audit.warning(
                "refused %s %s (%s) to %s from %s",
                scope.get("method"),
                scope.get("path"),
                self.name,
                who,
                client[0] if client else "?",
            )
            allowed = " or ".join(sorted(self.roles))
            raise ServiceError(Code.FORBIDDEN, f"{self.name} may be called by {allowed} only", 403)
        return peer

    def route(self, handler: Handler[Req, Ans]) -> Route:
        from starlette.responses import Response
        from starlette.routing import Route

        """The Starlette route serving this call with ``handler``."""
        has_body = self.request is not EMPTY

        @json_endpoint
        async def endpoint(request: Request) -> Response:
            peer = self.authorize(request)
            body = await read_body(request, self.max_body) if has_body else b""
            try:
                parsed = self.request.decode(body)
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            answer = await handler(request, peer, parsed)
            if isinstance(answer, Response):
                return answer
            return Response(self.answer.encode(answer), media_type="application/json")

        endpoint.__name__ = self.name
        return Route(self.path, endpoint, methods=list(self.methods), name=self.name)

    def guard(
        self, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` (a plain Starlette endpoint: HTML pages, say) behind this declaration's
        role check: a refused caller gets the JSON 403 ``forbidden``, audited, and ``handler``
        never runs."""

        async def guarded(request: Request) -> Response:
            try:
                self.authorize(request)
            except ServiceError as error:
                return error.response()
            return await handler(request)

        guarded.__name__ = getattr(handler, "__name__", self.name)
        guarded.__doc__ = handler.__doc__
        return guarded

    # the client ------------------------------------------------------------------------
    def target(self, params: Mapping[str, str] | None = None, query: str = "") -> str:
        """The request target for ``params`` (each quoted as one path segment)."""
        if not self.params:
            # The usual case, on the hot path (decisions): nothing to fill in.
            return f"{self.path}?{query}" if query else self.path
        values = params or {}
        missing = [p for p in self.params if p not in values]
        if missing:
            raise ValueError(f"{self.name}: missing path parameters {missing}")
        path = _PARAM.sub(lambda m: quote(str(values[m[1]]), safe=""), self.path)
        return f"{path}?{query}" if query else path

    async def send(
        self,
        client: FailoverClient,
        body: Req,
        *,
        params: Mapping[str, str] | None = None,
        query: str = "",
        timeout: float | None = None,
    ) -> Answer:
        """Make the call through the failover client; the raw answer (any status < 500)."""
        encoded = None if self.request is EMPTY else self.request.encode(body)
        return await client.call_raw(
            self.method,
            self.target(params, query),
            encoded,
            retry_safe=self.retry_safe,
            timeout=timeout,
        )

    def stream_lines(
        self,
        client: FailoverClient,
        *,
        params: Mapping[str, str] | None = None,
        query: str = "",
        idle_timeout: float | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Follow a stream call (:meth:`FailoverClient.stream_lines`): each line as it comes."""
        if not self.stream:
            raise ValueError(f"{self.name} is not a stream")
        return client.stream_lines(self.target(params, query), idle_timeout=idle_timeout)

    async def invoke(
        self,
        client: FailoverClient,
        body: Req,
        *,
        params: Mapping[str, str] | None = None,
        query: str = "",
        timeout: float | None = None,
    ) -> Ans:
        """Make the call and decode a 2xx answer.

        Raises:
            CallRefused: a 4xx answer (its code and message).
            InternalCallError: no usable answer from any endpoint.
            ValueError: a 2xx answer that does not decode.
        """
        answer = await self.send(client, body, params=params, query=query, timeout=timeout)
        if answer.status >= 400:
            raise refused(answer)
        try:
            return self.answer.decode(answer.body)
        except ServiceError as exc:  # the server-side wording of a body that does not decode
            raise ValueError(f"{self.name} answer: {exc.message}") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (400) as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise bad_request(f"body larger than {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise bad_request(f"body larger than {limit} bytes")
    return body


#: Every service's health, at the same path.
HEALTH_PATH = "/internal/v1/health"


def _healthy(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("status") != "ok":
        raise ValueError(f"status: {data.get('status')!r}")
    return data


def health_call(
    service: str, shape: str = "`{status, role, config_version, ...}`"
) -> Call[None, dict[str, Any]]:
    """The health call of ``service`` (``GET /internal/v1/health``, every caller's role): an
    answer is taken only when its ``status`` is ``ok``."""
    return Call(
        service,
        f"{service}_health",
        "GET",
        HEALTH_PATH,
        EMPTY,
        json_codec(_healthy, lambda data: data, shape),
        roles=HEALTH_ROLES,
        retry_safe=True,
        summary="the service's health and configuration version",
    )


def refused(answer: Answer) -> CallRefused:
    """The error a 4xx answer carries."""
    try:
        data = orjson.loads(answer.body)
        code = Code(data["error"])
        message = str(data["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        code, message = Code.BAD_REQUEST, f"HTTP {answer.status}"
    return CallRefused(code, message, answer.status)


def roles_table(calls: Collection[Call[Any, Any]]) -> str:
    """The Markdown table of ``calls`` docs/internal-api.md carries (and a test checks)."""
    lines = [
        "| service | method, path | request → answer | callers | retry-safe |",
        "|---|---|---|---|---|",
    ]
    for call in calls:
        callers = ", ".join(f"`{r}`" for r in sorted(call.roles))
        stream = " (stream)" if call.stream else ""
        lines.append(
            f"| {call.service} | `{', '.join(call.methods)} {call.path}` | {call.request.shape} → "
            f"{call.answer.shape}{stream} | {callers} | {'yes' if call.retry_safe else 'no'} |"
        )
    return "\n".join(lines) + "\n"

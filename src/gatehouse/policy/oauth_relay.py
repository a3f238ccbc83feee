"""The OpenID Provider's client endpoints (``{P}oauth2/token|introspect|revoke|userinfo``)
relayed straight from ASGI, before the Policy app's router.

These are the requests a resource server makes per API call (introspection) and a client per
token, so the Policy service's share of their CPU counts. Through Starlette each one went
through the router's scan of some thirty portal routes, two middlewares, a request object,
a response object and the header objects of both, about as much CPU as the relay itself;
:class:`ClientEndpoints` reads what the relay needs from the ASGI scope (the
:data:`~gatehouse.authentication.oauth_calls.RELAYED_HEADERS`, ``Origin``, the query and the
body) and writes the answer as one start and one body message. What is decided is the same,
by the same code (:class:`~gatehouse.policy.oauth_flow.OAuthFlow`): the caller's role (the
portal's declaration: Access Points only), the body's size, CORS, the relay call and its
errors. Other methods, and every request while no provider is configured, go on to the
router (405, 404).
"""

from __future__ import annotations

import logging

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gatehouse.authentication.oauth_calls import RELAYED_HEADERS
from gatehouse.internal.direct import CallerGone, RouteLabel, read_asgi_body, send_bytes
from gatehouse.internal.errors import ServiceError
from gatehouse.policy.calls import PORTAL
from gatehouse.policy.oauth_flow import ENDPOINT_PATHS, MAX_BODY, TOO_LARGE, OAuthFlow

__all__ = ["ClientEndpoints", "methods_of"]

log = logging.getLogger("gatehouse.policy")

_RELAYED = {name.encode("latin-1"): name for name in RELAYED_HEADERS}
_SERVER_ERROR = orjson.dumps({"error": "server_error", "error_description": "internal error"})
_JSON = [(b"content-type", b"application/json")]

Headers = list[tuple[bytes, bytes]]


def methods_of(endpoint: str) -> tuple[str, ...]:
    """The methods a client endpoint takes (``OPTIONS``: the CORS preflight)."""
    return ("GET", "POST", "OPTIONS") if endpoint == "userinfo" else ("POST", "OPTIONS")


def _raw(headers: dict[str, str]) -> Headers:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class ClientEndpoints:
    """ASGI middleware of the Policy app for the portal under ``prefix``."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.paths: dict[str, tuple[str, frozenset[str], RouteLabel]] = {}
        for endpoint in ENDPOINT_PATHS:
            path = f"{prefix}oauth2/{endpoint}"
            self.paths[path] = (endpoint, frozenset(methods_of(endpoint)), RouteLabel(path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            hit = self.paths.get(scope["path"])
            if hit is not None and scope["method"] in hit[1]:
                runtime = scope["app"].state.service.runtime
                flow: OAuthFlow | None = runtime.oauth
                if flow is not None:
                    scope["route"] = hit[2]
                    with runtime.checker.in_use():  # the client stays open until answered
                        await self._serve(flow, hit[0], scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self, flow: OAuthFlow, endpoint: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            PORTAL.authorize_scope(scope)
        except ServiceError as error:
            body = orjson.dumps({"error": error.code.value, "message": error.message})
            await send_bytes(send, error.status, list(_JSON), body)
            return
        relayed: dict[str, str] = {}
        origin: str | None = None
        for name, value in scope["headers"]:
            key = _RELAYED.get(name)
            if key is not None:
                if key not in relayed:
                    relayed[key] = value.decode("latin-1")
            elif name == b"origin" and origin is None:
                origin = value.decode("latin-1")
        method = scope["method"]
        try:
            if method == "OPTIONS":
                await send_bytes(send, 204, _raw(flow.preflight_headers(origin, endpoint)), b"")
                return
            try:
                body = await read_asgi_body(scope, receive, MAX_BODY)
            except ServiceError:
                status, headers, data = TOO_LARGE
            else:
                query = scope["query_string"].decode("latin-1")
                status, headers, data = await flow.relay_call(
                    endpoint, method, {k: v for k, v in relayed.items() if v}, body, query
                )
            answer = _raw(headers)
            answer += _raw(flow.cors(origin))
        except CallerGone:
            return
        except Exception:
            log.exception("%s %s failed", method, scope["path"])
            await send_bytes(send, 500, list(_JSON), _SERVER_ERROR)
            return
        await send_bytes(send, status, answer, data)

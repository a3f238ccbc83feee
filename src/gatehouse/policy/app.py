"""The Policy service's HTTP app (Starlette): the internal API and the login portal.

Internal endpoints (``/internal/v1/...``) answer JSON, errors as ``{"error", "message"}``;
portal pages answer HTML. A database that is down answers 503 so callers fail over; nothing
ever answers a traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gatehouse.cookies import TWO_SESSION_COOKIES
from gatehouse.internal.config_agent import config_fields
from gatehouse.internal.endpoint import http_error_response, json_endpoint
from gatehouse.internal.errors import Code, ServiceError, json_response
from gatehouse.internal.hosting import on_stop_signal
from gatehouse.policy.calls import (
    DECIDE,
    END_SESSIONS,
    EVENTS,
    HEALTH,
    PORTAL,
    REVOKE_SESSION,
    SESSIONS,
    DecisionRequest,
)
from gatehouse.policy.oauth_flow import ENDPOINT_PATHS, WELL_KNOWN, OAuthFlow
from gatehouse.policy.oauth_relay import ClientEndpoints, methods_of
from gatehouse.policy.portal import Pages, Portal, unavailable_page
from gatehouse.policy.service import PolicyService
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.trust.identity import Peer

log = logging.getLogger("gatehouse.policy")

Handler = Callable[[Request], Awaitable[Response]]
INTERNAL = "/internal/"
#: How long backends may cache the key set (they fetch it again on an unknown key).
JWKS_MAX_AGE = 300


def _service(request: Request) -> PolicyService:
    service: PolicyService = request.app.state.service
    return service


endpoint = json_endpoint


PortalHandler = Callable[[Request, Portal], Awaitable[Response]]


def page(handler: PortalHandler) -> Handler:
    """A portal page, served by the running configuration's portal (read once, so the page
    and its error pages come from one configuration): every failure becomes an HTML page."""

    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        runtime = _service(request).runtime
        portal = runtime.portal
        try:
            # A configuration swap closes the old client only once this request is done.
            with runtime.checker.in_use():
                return await handler(request, portal)
        except HTTPException:
            raise  # a malformed form: rendered as a page by the exception handler
        except DatabaseUnavailable as error:
            log.warning("%s %s: %s", request.method, request.url.path, error)
            action = "Signing out" if "logout" in request.url.path else "Signing in"
            return unavailable_page(portal.pages, portal.settings.prefix, action)
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return _internal_error_page(portal.pages)

    return wrapped


def _internal_error_page(pages: Pages) -> Response:
    return pages.error(500, "Something went wrong", "Something went wrong on our side. Sorry.")


# --- internal endpoints ----------------------------------------------------------------------


async def health(request: Request, peer: Peer | None, body: None) -> dict[str, object]:
    """The service's health; ``config_version`` / ``config_source`` as every service says
    them (:func:`config_fields`), next to the agent's ``config`` status when managed."""
    service = _service(request)
    answer = await service.health()
    answer.update(config_fields(service.agent))
    return answer


async def decide(request: Request, peer: Peer | None, body: DecisionRequest) -> dict[str, object]:
    """``DECIDE``: over mutual TLS ``peer`` is the Access Point (the body's ``ap`` unread)."""
    return await _service(request).decide(body, peer)


@endpoint
async def jwks(request: Request) -> Response:
    """The identity assertion key set, for backends: public, cacheable for 5 minutes."""
    response = json_response(await _service(request).jwks())
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


async def events(request: Request, peer: Peer | None, body: None) -> Response:
    hub = _service(request).hub
    return StreamingResponse(
        hub.stream(),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# --- errors outside the handlers (404, 405, ...) -------------------------------------------


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(INTERNAL) or not hasattr(request.app.state, "service"):
        return http_error_response(exc)
    pages = _service(request).runtime.portal.pages
    if exc.status_code == 404:
        return pages.error(404, "Page not found", "There is nothing at this address.")
    if exc.status_code == 400:
        if exc.detail == TWO_SESSION_COOKIES:  # raised by policy.sessions.session_cookie
            return pages.error(400, "Two sign-in cookies", TWO_SESSION_COOKIES)
        return pages.error(400, "Bad request", "The form could not be read. Please try again.")
    response = pages.error(exc.status_code, "Not allowed", "This request is not allowed here.")
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    if request.url.path.startswith(INTERNAL) or not hasattr(request.app.state, "service"):
        return ServiceError(Code.INTERNAL, "internal error", 500).response()
    return _internal_error_page(_service(request).runtime.portal.pages)


# --- shutdown: end the never-ending event streams promptly ---------------------------------


#: Portal handlers that need the session DB (the others render without it).
_NEEDS_DB = frozenset(
    {"login_submit", "logout_submit", "wait_page", "otp_page", "otp_submit", "otp_enrol"}
    | {"otp_confirm"}
    | {"invite_page", "invite_enrol", "invite_confirm"}
    | {"code_page", "code_submit", "code_send"}
)


def _portal(name: str) -> Handler:
    @page
    async def handler(request: Request, portal: Portal) -> Response:
        if name in _NEEDS_DB:
            _service(request).require_ready()
        method: Handler = getattr(portal, name)
        return await method(request)

    handler.__name__ = f"portal_{name}"
    return handler


# --- the OAuth 2.0 / OpenID Connect provider (gatehouse.policy.oauth_flow) -----------------

OAuthHandler = Callable[[OAuthFlow, Request], Awaitable[Response]]


def _oauth_flow(request: Request) -> OAuthFlow:
    flow = _service(request).runtime.oauth
    if flow is None:
        raise HTTPException(404)
    return flow


def _oauth_page(handler: OAuthHandler, needs_db: bool = True) -> Handler:
    """A provider page: served like the portal's pages (HTML errors)."""

    @page
    async def wrapped(request: Request, portal: Portal) -> Response:
        if needs_db:
            _service(request).require_ready()
        return await handler(_oauth_flow(request), request)

    wrapped.__name__ = f"oauth_{handler.__name__}"
    return wrapped


def _oauth_json(handler: OAuthHandler) -> Handler:
    """A client endpoint: JSON answers, errors as RFC 6749 §5.2 says."""

    async def wrapped(request: Request) -> Response:
        runtime = _service(request).runtime
        try:
            with runtime.checker.in_use():
                return await handler(_oauth_flow(request), request)
        except HTTPException:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return json_response(
                {"error": "server_error", "error_description": "internal error"}, 500
            )

    wrapped.__name__ = f"oauth_{handler.__name__}"
    return wrapped


def _relay(endpoint: str) -> OAuthHandler:
    async def relay(flow: OAuthFlow, request: Request) -> Response:
        return await flow.relay(request, endpoint)

    relay.__name__ = f"relay_{endpoint}"
    return relay


def oauth_routes(prefix: str) -> list[Route]:
    portal = PORTAL.guard
    base = f"{prefix}oauth2/"
    page_methods = ["GET", "POST"]
    routes = [
        Route(f"{base}authorize", portal(_oauth_page(OAuthFlow.authorize)), methods=page_methods),
        Route(f"{base}consent", portal(_oauth_page(OAuthFlow.consent)), methods=["POST"]),
        Route(
            f"{base}end_session", portal(_oauth_page(OAuthFlow.end_session)), methods=page_methods
        ),
        Route(f"{base}consents", portal(_oauth_page(OAuthFlow.consents)), methods=page_methods),
        Route(f"{base}jwks", portal(_oauth_json(OAuthFlow.jwks)), methods=["GET"]),
    ]
    for endpoint in ENDPOINT_PATHS:
        # Served by ClientEndpoints before the router; the routes answer the other methods.
        methods = list(methods_of(endpoint))
        routes.append(
            Route(f"{base}{endpoint}", portal(_oauth_json(_relay(endpoint))), methods=methods)
        )
    for path in WELL_KNOWN:
        routes.append(Route(path, portal(_oauth_json(OAuthFlow.well_known)), methods=["GET"]))
    return routes


async def list_sessions(request: Request, peer: Peer | None, body: None) -> list[dict[str, object]]:
    service = _service(request)
    service.require_ready()
    return await service.runtime.admin.sessions(request)


async def end_sessions(request: Request, peer: Peer | None, body: None) -> int:
    service = _service(request)
    service.require_ready()
    return await service.runtime.admin.end_sessions(request)


async def revoke_session(request: Request, peer: Peer | None, body: None) -> int:
    service = _service(request)
    service.require_ready()
    return await service.runtime.admin.revoke(request)


def routes(prefix: str) -> list[Route]:
    # The portal's pages (HTML) are for Access Points only, as the portal declaration says.
    portal = PORTAL.guard
    return [
        HEALTH.route(health),
        DECIDE.route(decide),
        EVENTS.route(events),
        SESSIONS.route(list_sessions),
        END_SESSIONS.route(end_sessions),
        REVOKE_SESSION.route(revoke_session),
        Route(f"{prefix}login", portal(_portal("login_page")), methods=["GET"]),
        Route(f"{prefix}login", portal(_portal("login_submit")), methods=["POST"]),
        Route(f"{prefix}logout", portal(_portal("logout_page")), methods=["GET"]),
        Route(f"{prefix}wait", portal(_portal("wait_page")), methods=["GET"]),
        Route(f"{prefix}logout", portal(_portal("logout_submit")), methods=["POST"]),
        Route(f"{prefix}otp", portal(_portal("otp_page")), methods=["GET"]),
        Route(f"{prefix}otp", portal(_portal("otp_submit")), methods=["POST"]),
        Route(f"{prefix}otp/enrol", portal(_portal("otp_enrol")), methods=["POST"]),
        Route(f"{prefix}otp/confirm", portal(_portal("otp_confirm")), methods=["POST"]),
        Route(f"{prefix}enrol/invite", portal(_portal("invite_page")), methods=["GET"]),
        Route(f"{prefix}enrol/invite", portal(_portal("invite_enrol")), methods=["POST"]),
        Route(f"{prefix}enrol/invite/confirm", portal(_portal("invite_confirm")), methods=["POST"]),
        Route(f"{prefix}code", portal(_portal("code_page")), methods=["GET"]),
        Route(f"{prefix}code", portal(_portal("code_submit")), methods=["POST"]),
        Route(f"{prefix}code/send", portal(_portal("code_send")), methods=["POST"]),
        Route(f"{prefix}static/gatehouse.css", portal(_portal("stylesheet")), methods=["GET"]),
        Route(f"{prefix}jwks.json", portal(jwks), methods=["GET"]),
        *oauth_routes(prefix),
    ]


def create_app(prefix: str, make_service: Callable[[], PolicyService]) -> Starlette:
    """The app for a portal under ``prefix``; ``make_service`` builds the service on start."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = make_service()
        app.state.service = service
        await service.start()
        try:
            with on_stop_signal(service.hub.shutdown):
                yield
        finally:
            await service.stop()

    return Starlette(
        routes=routes(prefix),
        middleware=[Middleware(ClientEndpoints, prefix=prefix)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )

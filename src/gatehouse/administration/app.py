"""The Administration service's HTTP API (Starlette): requests in, JSON out.

Every answer is JSON. Errors are ``{"error": CODE, "message": TEXT}`` with the error's status;
an invalid configuration answers 422 with every problem and its field path in ``problems``;
nothing ever answers a traceback. Admin calls need the admin token (``Authorization:
Bearer``); a service's own calls its client certificate (the TLS peer, which must name the
service in the path and not be revoked). The routes are described in :mod:`.openapi`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from functools import wraps
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatehouse.administration import api_models as api
from gatehouse.administration.admins import acting_as
from gatehouse.administration.admins_roles import allows, rest_permission
from gatehouse.administration.errors import AdminError, Forbidden, RemovalRefused
from gatehouse.administration.openapi import openapi_document
from gatehouse.administration.service import MAX_WAIT, AdministrationService
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError
from gatehouse.internal.endpoint import bad_request, json_endpoint, parse_json_object
from gatehouse.internal.errors import Code, ServiceError, json_response
from gatehouse.internal.hosting import on_stop_signal
from gatehouse.internal.peer import scope_peer
from gatehouse.trust.identity import Peer

if TYPE_CHECKING:
    from gatehouse.administration.tokens_api import HomeTokens

Handler = Callable[[Request], Awaitable[Response]]
M = TypeVar("M", bound=BaseModel)

#: The largest request body: a configuration text with room to spare.
MAX_BODY = 4 * 1024 * 1024
MAX_LIMIT = 1000


def _service(request: Request) -> AdministrationService:
    service: AdministrationService = request.app.state.service
    return service


def problems_response(error: ConfigError | RemovalRefused) -> Response:
    count = len(error.problems)
    code: Literal["conflict", "bad_request"] = "bad_request"
    status = 422
    message = f"the configuration is invalid ({count} problem{'s' if count != 1 else ''})"
    if isinstance(error, RemovalRefused):
        code, status = "conflict", error.status
        message = "the configuration would remove what runs; nothing was changed"
    body = api.ErrorOut(
        error=code,
        message=message,
        problems=[api.Problem(path=path, message=message) for path, message in error.problems],
    )
    return json_response(body.model_dump(mode="json"), status)


def endpoint(handler: Handler) -> Handler:
    """AdminError as its status and code, ConfigError as 422 with problems; the rest as in
    every internal API (:func:`~gatehouse.internal.endpoint.json_endpoint`)."""

    @json_endpoint
    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except RemovalRefused as error:
            return problems_response(error)
        except AdminError as error:
            return ServiceError(error.code, error.message, error.status).response()
        except ConfigError as error:
            return problems_response(error)

    return wrapped


def admin(handler: Handler) -> Handler:
    """An endpoint for administrators: a personal token whose role has the route's
    permission (:func:`~.admins_roles.rest_permission`), or the home's admin token (the
    break-glass identity). Everything audited while it runs names that person."""

    @endpoint
    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        actor = await _service(request).authenticate(request.headers.get("authorization"))
        route = request.scope.get("route")
        path = getattr(route, "path", None) or request.url.path
        permission = rest_permission(request.method, path)
        if permission and not allows(actor.role, permission):
            raise Forbidden(
                f"{actor.name} ({actor.role}) lacks the permission {permission} for "
                f"{request.method} {path}"
            )
        with acting_as(actor):
            return await handler(request)

    return wrapped


def own_service(handler: Handler) -> Handler:
    """An endpoint for the service named in the path, with its certificate."""

    @endpoint
    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        service_id = request.path_params["service_id"]
        await _service(request).authorize_service(service_id, _peer(request))
        return await handler(request)

    return wrapped


def _peer(request: Request) -> Peer | None:
    return scope_peer(request.scope)[1]


async def read_body(request: Request, model: type[M]) -> M:
    """The JSON body as ``model``; 400 naming the field at fault otherwise."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise bad_request(f"body larger than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise bad_request(f"body larger than {MAX_BODY} bytes")
    data = parse_json_object(bytes(body), MAX_BODY)
    try:
        return validate(model, data)
    except ConfigError as error:
        raise bad_request("; ".join(f"{p}: {m}" if p else m for p, m in error.problems)) from None


def query_int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise bad_request(f"{name}: must be a whole number from {low} to {high}, not {raw!r}")
    return int(raw)


def query_seconds(request: Request, name: str, high: float) -> float:
    raw = request.query_params.get(name, "0")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= high:
        raise bad_request(f"{name}: must be a number of seconds from 0 to {high:g}, not {raw!r}")
    return value


def answer(data: BaseModel | list[BaseModel]) -> Response:
    if isinstance(data, list):
        return json_response([item.model_dump(mode="json") for item in data])
    return json_response(data.model_dump(mode="json"))


OK = api.OkOut(ok=True)


# --- anyone --------------------------------------------------------------------------------


@endpoint
async def health(request: Request) -> Response:
    return answer(await _service(request).health())


async def openapi(request: Request) -> Response:
    return json_response(openapi_document())


async def ca_certificate(request: Request) -> Response:
    """The CA certificate, to anyone: a joining service checks it against its token."""
    return Response(
        _service(request).ca.certificate_pem,
        media_type="application/x-pem-file",
        headers={"Cache-Control": "no-store"},
    )


# --- the admin token -----------------------------------------------------------------------


@admin
async def get_draft(request: Request) -> Response:
    return answer(await _service(request).draft())


@admin
async def put_draft(request: Request) -> Response:
    body = await read_body(request, api.DraftIn)
    await _service(request).save_draft(body.text, body.allow_removal)
    return answer(OK)


@admin
async def diff(request: Request) -> Response:
    since = query_int(request, "from", None, 1, 2**31 - 1)
    return answer(api.DiffOut(diff=await _service(request).diff(since)))


@admin
async def publish(request: Request) -> Response:
    body = await read_body(request, api.PublishIn)
    return answer(api.VersionNumberOut(version=await _service(request).publish(body.comment)))


@admin
async def rollback(request: Request) -> Response:
    body = await read_body(request, api.RollbackIn)
    number = await _service(request).rollback(body.version, body.comment, body.allow_removal)
    return answer(api.VersionNumberOut(version=number))


@admin
async def versions(request: Request) -> Response:
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    assert limit is not None
    return answer(list(await _service(request).versions(limit)))


@admin
async def version(request: Request) -> Response:
    return answer(await _service(request).version(request.path_params["number"]))


@admin
async def services(request: Request) -> Response:
    return answer(list(await _service(request).services()))


@admin
async def join_tokens(request: Request) -> Response:
    body = await read_body(request, api.JoinTokenIn)
    return answer(await _service(request).join_token(body))


@admin
async def revoke(request: Request) -> Response:
    body = await read_body(request, api.RevokeIn)
    return answer(await _service(request).revoke(request.path_params["service_id"], body.reason))


@admin
async def audit(request: Request) -> Response:
    limit = query_int(request, "limit", 100, 1, MAX_LIMIT)
    before = query_int(request, "before", None, 1, 2**63 - 1)
    assert limit is not None
    return answer(list(await _service(request).audit(limit, before)))


# --- the services --------------------------------------------------------------------------


@endpoint
async def register(request: Request) -> Response:
    body = await read_body(request, api.RegisterIn)
    return answer(await _service(request).register(body))


@endpoint
async def renew(request: Request) -> Response:
    peer = await _service(request).authorize_service(None, _peer(request))
    body = await read_body(request, api.RenewIn)
    return answer(await _service(request).renew(peer, body))


@own_service
async def config(request: Request) -> Response:
    after = query_int(request, "after", 0, 0, 2**31 - 1)
    wait = query_seconds(request, "wait", MAX_WAIT)
    assert after is not None
    service_id = request.path_params["service_id"]
    peer = _peer(request)
    serial = peer.serial if peer else None
    envelope = await _service(request).config_for(service_id, after, wait, serial)
    if envelope is None:
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    response = json_response(envelope)
    response.headers["Cache-Control"] = "no-store"
    return response


@own_service
async def ack(request: Request) -> Response:
    body = await read_body(request, api.AckIn)
    await _service(request).ack(request.path_params["service_id"], body)
    return answer(OK)


ROUTES = [
    Route("/api/v1/health", health, methods=["GET"]),
    Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    Route("/api/v1/ca", ca_certificate, methods=["GET"]),
    Route("/api/v1/draft", get_draft, methods=["GET"]),
    Route("/api/v1/draft", put_draft, methods=["PUT"]),
    Route("/api/v1/diff", diff, methods=["GET"]),
    Route("/api/v1/publish", publish, methods=["POST"]),
    Route("/api/v1/rollback", rollback, methods=["POST"]),
    Route("/api/v1/versions", versions, methods=["GET"]),
    Route("/api/v1/versions/{number:int}", version, methods=["GET"]),
    Route("/api/v1/services", services, methods=["GET"]),
    Route("/api/v1/join-tokens", join_tokens, methods=["POST"]),
    Route("/api/v1/services/{service_id}/revoke", revoke, methods=["POST"]),
    Route("/api/v1/audit", audit, methods=["GET"]),
    Route("/api/v1/register", register, methods=["POST"]),
    Route("/api/v1/certificates/renew", renew, methods=["POST"]),
    Route("/api/v1/config/{service_id}", config, methods=["GET"]),
    Route("/api/v1/config/{service_id}/ack", ack, methods=["POST"]),
]


# --- errors outside the handlers (404, 405) ------------------------------------------------


_STATUS_CODES = {404: Code.NOT_FOUND, 401: Code.UNAUTHORIZED, 403: Code.FORBIDDEN}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _STATUS_CODES.get(exc.status_code, Code.BAD_REQUEST)
    response = json_response({"error": code.value, "message": str(exc.detail)}, exc.status_code)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    return ServiceError(Code.INTERNAL, "internal error", 500).response()


# --- shutdown: answer the parked long polls promptly ---------------------------------------


def create_app(
    make_service: Callable[[], AdministrationService],
    background: Callable[[], Coroutine[Any, Any, None]] | None = None,
    tokens: Callable[[], HomeTokens] | None = None,
) -> Starlette:
    """The app; ``make_service`` builds the service on start, on the server's loop;
    ``background`` runs as a task for as long as the app (renewing Admin's certificate);
    ``tokens`` makes the backend of the token routes (:mod:`.tokens_api`; None: they
    answer 404)."""
    from gatehouse.administration.admins_api import ROUTES as ADMINS_ROUTES
    from gatehouse.administration.console.app import console_routes
    from gatehouse.administration.oauth_api import ROUTES as OAUTH_ROUTES
    from gatehouse.administration.tokens_api import ROUTES as TOKEN_ROUTES

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = make_service()
        app.state.service = service
        app.state.tokens = tokens() if tokens is not None else None
        task: asyncio.Task[None] | None = None
        if background is not None:
            task = asyncio.create_task(background())
        keys: asyncio.Task[None] | None = None
        if service.oauth_keys is not None:
            # The keys that are due exist before the first publish can ask for them.
            with contextlib.suppress(Exception):
                await service.oauth_keys.step()
            keys = asyncio.create_task(service.oauth_keys.run())
        try:
            with on_stop_signal(service.watch.close):
                yield
        finally:
            for running in (task, keys):
                if running is not None:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
            service.watch.close()
            if service.checker is not None:
                await service.checker.aclose()
            if app.state.tokens is not None:
                await app.state.tokens.close()
            await service.store.close()

    return Starlette(
        routes=[*ROUTES, *TOKEN_ROUTES, *OAUTH_ROUTES, *ADMINS_ROUTES, *console_routes()],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )

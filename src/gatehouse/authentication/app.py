"""The Authentication service's HTTP app (Starlette): the Auth endpoints of docs/internal-api.md.

Every answer is JSON. A database that is down answers 503 ``unavailable`` so the caller fails
over; a request that cannot be parsed answers 400 naming the field; nothing answers a
traceback. Migrations run on start; if the database is not reachable yet the service starts
anyway, answers 503 and keeps retrying in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gatehouse.authentication.config import AuthenticationSettings
from gatehouse.authentication.passwords import Passwords
from gatehouse.authentication.verifier import Limits, Verifier
from gatehouse.authentication.wire import MAX_BODY, bad_request, outcome_json, parse_verify
from gatehouse.internal.endpoint import json_endpoint
from gatehouse.internal.errors import Code, ServiceError, json_response
from gatehouse.storage.engine import Database
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import start_migrations

log = logging.getLogger("gatehouse.authentication")

ROLE = "authentication"
HEALTH_DB_TIMEOUT = 2.0

Handler = Callable[[Request], Awaitable[Response]]


class Service:
    """The running service's parts; ``ready`` once the user DB is migrated."""

    def __init__(self, settings: AuthenticationSettings, user_db: str) -> None:
        self.settings = settings
        self.user_db = user_db
        self.db = Database(user_db)
        self.passwords = Passwords(settings.password_hash)
        self.verifier = Verifier(self.db, self.passwords, Limits.of(settings.lockout))
        self.ready = asyncio.Event()
        self._migrating: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Migrate now, or keep trying in the background while answering 503."""
        if self.settings.lockout.insecure_no_rate_cap:
            log.warning("lockout.insecure_no_rate_cap is set: the ASVS rate cap is OFF")
        self._migrating = await start_migrations(self.user_db, "user", self.ready)

    async def stop(self) -> None:
        if self._migrating is not None:
            self._migrating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._migrating
        await self.db.dispose()

    def require_ready(self) -> None:
        if not self.ready.is_set():
            raise DatabaseUnavailable("database unavailable: user DB not reachable yet")


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


endpoint = json_endpoint


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise bad_request(f"body larger than {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise bad_request(f"body larger than {MAX_BODY} bytes")
    return bytes(body)


@endpoint
async def health(request: Request) -> Response:
    service = _service(request)
    service.require_ready()
    try:
        await asyncio.wait_for(service.db.ping(), HEALTH_DB_TIMEOUT)
    except TimeoutError:
        raise DatabaseUnavailable("database unavailable: health check timed out") from None
    return json_response({"status": "ok", "role": ROLE})


@endpoint
async def verify_password(request: Request) -> Response:
    service = _service(request)
    parsed = parse_verify(await _read_body(request))
    service.require_ready()
    outcome = await service.verifier.verify(parsed.username, parsed.password, parsed.client_ip)
    return json_response(outcome_json(outcome))


@endpoint
async def get_user(request: Request) -> Response:
    service = _service(request)
    service.require_ready()
    user = await service.verifier.user(request.path_params["username"])
    if user is None:
        raise ServiceError(Code.NOT_FOUND, "no such user", 404)
    return json_response(user.to_json())


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = Code.NOT_FOUND if exc.status_code == 404 else Code.BAD_REQUEST
    return json_response({"error": code.value, "message": str(exc.detail)}, exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return ServiceError(Code.INTERNAL, "internal error", 500).response()


def create_app(settings: AuthenticationSettings, user_db: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = Service(settings, user_db)
        app.state.service = service
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        Route("/internal/v1/health", health, methods=["GET"]),
        Route("/internal/v1/password/verify", verify_password, methods=["POST"]),
        Route("/internal/v1/users/{username}", get_user, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected},
    )

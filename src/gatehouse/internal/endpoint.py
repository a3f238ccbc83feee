"""What every internal JSON endpoint shares: error rendering and request-body parsing."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response

from gatehouse.internal.errors import Code, ServiceError, json_response
from gatehouse.storage.errors import DatabaseUnavailable

log = logging.getLogger("gatehouse.internal")

Handler = Callable[["Request"], Awaitable["Response"]]


def json_endpoint(handler: Handler) -> Handler:
    """Render every failure as a JSON error (503 when the database is unavailable, so callers
    fail over); log what was not expected; never a traceback to the caller."""

    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ServiceError as error:
            return error.response()
        except DatabaseUnavailable as error:
            log.warning("%s %s: %s", request.method, request.url.path, error)
            return ServiceError(Code.UNAVAILABLE, str(error), 503).response()
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return ServiceError(Code.INTERNAL, "internal error", 500).response()

    return wrapped


def http_error_response(exc: HTTPException) -> Response:
    """What Starlette refuses before a handler (no such route, a wrong method) as a JSON
    error: ``not_found`` for a 404, ``bad_request`` otherwise, with its status."""
    code = Code.NOT_FOUND if exc.status_code == 404 else Code.BAD_REQUEST
    return json_response({"error": code.value, "message": str(exc.detail)}, exc.status_code)


async def http_error(request: Request, exc: Exception) -> Response:
    """The app's handler of Starlette's ``HTTPException``: :func:`http_error_response`."""
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    return http_error_response(exc)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """The app's handler of any other exception: a JSON 500 that tells the caller nothing."""
    return ServiceError(Code.INTERNAL, "internal error", 500).response()


def bad_request(message: str) -> ServiceError:
    return ServiceError(Code.BAD_REQUEST, message, 400)


def string_field(data: dict[str, Any], name: str) -> str:
    """The string ``data[name]`` of a request body; 400 naming the field when it is missing
    or not a string."""
    if name not in data:
        raise bad_request(f"{name}: missing")
    value = data[name]
    if not isinstance(value, str):
        raise bad_request(f"{name}: must be a string")
    return value


def parse_json_object(body: bytes, max_bytes: int) -> dict[str, object]:
    """A request body that must be one JSON object of at most ``max_bytes``."""
    if len(body) > max_bytes:
        raise bad_request(f"body larger than {max_bytes} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object")
    return data

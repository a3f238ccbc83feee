"""Errors on the internal wire: a code, a message and an HTTP status, rendered as JSON."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from starlette.responses import Response


class Code(StrEnum):
    """Wire error codes; clients branch on these, never on messages."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class ServiceError(Exception):
    """An error a service reports to its caller."""

    def __init__(self, code: Code, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def response(self) -> Response:
        return json_response({"error": self.code.value, "message": self.message}, self.status)


def json_response(data: object, status: int = 200) -> Response:
    from starlette.responses import Response

    return Response(orjson.dumps(data), status_code=status, media_type="application/json")

"""The Authentication service's JSON on the wire (docs/internal-api.md): parsing and rendering."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from gatehouse.authentication.lockout import canonical_ip
from gatehouse.authentication.verifier import Invalid, Locked, Ok, Outcome
from gatehouse.internal.errors import Code, ServiceError

MAX_BODY = 16 * 1024


def bad_request(message: str) -> ServiceError:
    return ServiceError(Code.BAD_REQUEST, message, 400)


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    username: str
    password: str
    client_ip: str


def _string(data: dict[str, object], field: str) -> str:
    if field not in data:
        raise bad_request(f"{field}: missing")
    value = data[field]
    if not isinstance(value, str):
        raise bad_request(f"{field}: must be a string")
    return value


def parse_verify(body: bytes) -> VerifyRequest:
    """``{"username", "password", "client_ip"}``; errors name the field at fault."""
    if len(body) > MAX_BODY:
        raise bad_request(f"body larger than {MAX_BODY} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object")
    username = _string(data, "username")
    password = _string(data, "password")
    client_ip = _string(data, "client_ip")
    if not username:
        raise bad_request("username: empty")
    try:
        address = canonical_ip(client_ip)
    except ValueError:
        raise bad_request(f"client_ip: not an IP address: {client_ip[:64]!r}") from None
    return VerifyRequest(username, password, address)


def outcome_json(outcome: Outcome) -> dict[str, object]:
    match outcome:
        case Ok(user):
            return {"result": "ok", "user": user.to_json()}
        case Locked(retry_after):
            return {"result": "locked", "retry_after": retry_after}
        case Invalid():
            return {"result": "invalid"}

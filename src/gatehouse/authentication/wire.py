"""The Authentication service's JSON on the wire (docs/internal-api.md): parsing and rendering."""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse.authentication.lockout import canonical_ip
from gatehouse.authentication.verifier import Invalid, Locked, Ok, Outcome
from gatehouse.internal.endpoint import bad_request, parse_json_object

__all__ = ["MAX_BODY", "bad_request", "outcome_json", "parse_verify"]

MAX_BODY = 16 * 1024


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
    data = parse_json_object(body, MAX_BODY)
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

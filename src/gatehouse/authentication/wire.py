"""The Authentication service's JSON on the wire (docs/internal-api.md): parsing and rendering."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gatehouse.authentication.lockout import canonical_ip
from gatehouse.authentication.verifier import Invalid, Locked, Ok, Outcome
from gatehouse.internal.endpoint import bad_request, parse_json_object

__all__ = ["MAX_BODY", "bad_request", "outcome_json", "parse_verify"]

MAX_BODY = 16 * 1024
#: A trusted-device id as the Policy service sends it (from a device cookie it verified).
_DEVICE = re.compile(r"[A-Za-z0-9_-]{11}\Z")


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    username: str
    password: str
    client_ip: str
    device: str | None = None


def _string(data: dict[str, object], field: str) -> str:
    if field not in data:
        raise bad_request(f"{field}: missing")
    value = data[field]
    if not isinstance(value, str):
        raise bad_request(f"{field}: must be a string")
    return value


def parse_verify(body: bytes) -> VerifyRequest:
    """``{"username", "password", "client_ip", "device"?}``; errors name the field at fault."""
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
    device = data.get("device")
    if device is not None and not (isinstance(device, str) and _DEVICE.match(device)):
        raise bad_request("device: must be null or a device id (11 URL-safe characters)")
    return VerifyRequest(username, password, address, device)


def outcome_json(outcome: Outcome) -> dict[str, object]:
    match outcome:
        case Ok(user, device):
            return {"result": "ok", "user": user.to_json(), "device": device}
        case Locked(retry_after):
            return {"result": "locked", "retry_after": retry_after}
        case Invalid():
            return {"result": "invalid"}

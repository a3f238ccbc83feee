"""The Authentication service's internal calls, each declared once
(:class:`gatehouse.internal.calls.Call`), with their wire formats: the service's routes
(authentication/app.py) and the Policy service's password check are made from them.

A leaf module (the Policy service imports it): the wire formats and nothing of the service.

Roles: a password check for Policy services only (the client address it carries is believed
because the caller is one); health for every role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from gatehouse.authentication.lockout import canonical_ip
from gatehouse.internal.calls import EMPTY, HEALTH_ROLES, Call, json_codec
from gatehouse.internal.endpoint import bad_request
from gatehouse.trust.identity import POLICY

__all__ = [
    "ALL",
    "HEALTH",
    "MAX_BODY",
    "VERIFY",
    "Account",
    "VerifyAnswer",
    "VerifyRequest",
]

SERVICE = "authentication"
MAX_BODY = 16 * 1024
#: A trusted-device id as the Policy service sends it (from a device cookie it verified) and
#: as this service issues it.
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{11}\Z")


# --- POST /internal/v1/password/verify ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    username: str
    password: str
    client_ip: str
    device: str | None = None


def _string(data: dict[str, Any], name: str) -> str:
    if name not in data:
        raise bad_request(f"{name}: missing")
    value = data[name]
    if not isinstance(value, str):
        raise bad_request(f"{name}: must be a string")
    return value


def parse_verify(data: dict[str, Any]) -> VerifyRequest:
    """``{"username", "password", "client_ip", "device"?}``; errors name the field at fault."""
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
    if device is not None and not (isinstance(device, str) and DEVICE_ID.match(device)):
        raise bad_request("device: must be null or a device id (11 URL-safe characters)")
    return VerifyRequest(username, password, address, device)


def render_verify(request: VerifyRequest) -> dict[str, object]:
    body: dict[str, object] = {
        "username": request.username,
        "password": request.password,
        "client_ip": request.client_ip,
    }
    if request.device is not None:
        body["device"] = request.device
    return body


@dataclass(frozen=True, slots=True)
class Account:
    """``USER``: what the Policy service learns of an account that signed in."""

    username: str
    display_name: str = ""
    email: str | None = None
    groups: tuple[str, ...] = ()
    enabled: bool = True

    def to_json(self) -> dict[str, object]:
        return {
            "username": self.username,
            "display_name": self.display_name,
            "email": self.email,
            "groups": list(self.groups),
            "enabled": self.enabled,
        }


@dataclass(frozen=True, slots=True)
class VerifyAnswer:
    """``ok`` (with ``user`` and the trusted-device id issued), ``invalid`` or ``locked``
    (with ``retry_after`` seconds)."""

    result: Literal["ok", "invalid", "locked"]
    user: Account | None = None
    retry_after: float = 0.0
    device: str | None = None


def parse_answer(data: dict[str, Any]) -> VerifyAnswer:
    """The answer of a password check; ``ValueError`` if malformed. Lenient where a safe
    reading exists (a bad ``retry_after`` is 60 s, a malformed device id none)."""
    result = data.get("result")
    if result == "invalid":
        return VerifyAnswer("invalid")
    if result == "locked":
        retry = data.get("retry_after")
        seconds = float(retry) if isinstance(retry, int | float) and retry > 0 else 60.0
        return VerifyAnswer("locked", retry_after=seconds)
    if result == "ok":
        user = data.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("username"), str):
            raise ValueError("ok without a user")
        groups = user.get("groups") or []
        email = user.get("email")
        display = user.get("display_name")
        account = Account(
            username=user["username"],
            display_name=display if isinstance(display, str) else "",
            email=email if isinstance(email, str) else None,
            groups=tuple(g for g in groups if isinstance(g, str)),
            enabled=user.get("enabled") is not False,
        )
        device = data.get("device")
        valid = isinstance(device, str) and DEVICE_ID.match(device) is not None
        return VerifyAnswer("ok", account, device=device if valid else None)
    raise ValueError(f"unknown result {result!r}")


def render_answer(answer: VerifyAnswer) -> dict[str, object]:
    if answer.result == "ok":
        user = answer.user.to_json() if answer.user is not None else None
        return {"result": "ok", "user": user, "device": answer.device}
    if answer.result == "locked":
        retry = answer.retry_after
        return {"result": "locked", "retry_after": int(retry) if retry == int(retry) else retry}
    return {"result": "invalid"}


VERIFY_REQUEST = json_codec(
    parse_verify, render_verify, '`{"username", "password", "client_ip", "device"?}`', MAX_BODY
)
VERIFY_ANSWER = json_codec(
    parse_answer,
    render_answer,
    '`{"result": "ok", "user": USER, "device"}` / `{"result": "invalid"}` / '
    '`{"result": "locked", "retry_after"}`',
)


def _health(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("status") != "ok":
        raise ValueError(f"status: {data.get('status')!r}")
    return data


HEALTH_ANSWER = json_codec(_health, lambda data: data, "`{status, role, config_version, ...}`")


# --- the declarations --------------------------------------------------------------------------


HEALTH = Call(
    SERVICE,
    "authentication_health",
    "GET",
    "/internal/v1/health",
    EMPTY,
    HEALTH_ANSWER,
    roles=HEALTH_ROLES,
    retry_safe=True,
    summary="the service's health and configuration version",
)
VERIFY = Call(
    SERVICE,
    "verify_password",
    "POST",
    "/internal/v1/password/verify",
    VERIFY_REQUEST,
    VERIFY_ANSWER,
    roles=frozenset({POLICY}),
    # A password check changes nothing but the shared lockout counters: an Authentication
    # service that dies after counting a failure and before answering makes the next one
    # count it again, at worst one extra failure (erring towards locking).
    retry_safe=True,
    summary="check a password (and the lockout of the account and the client address)",
    max_body=MAX_BODY,
)

ALL: tuple[Call[Any, Any], ...] = (HEALTH, VERIFY)

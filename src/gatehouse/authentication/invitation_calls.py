"""The Authentication service's token-invitation calls, each declared once
(:class:`gatehouse.internal.calls.Call`), with their wire formats: the service's routes
(:mod:`gatehouse.authentication.invitations`) and the Policy portal's enrolment by invitation
(:mod:`gatehouse.policy.invitation_flow`) are made from them.

A leaf module beside :mod:`gatehouse.authentication.calls` (whose field checks it shares).
``invitation`` is the link's secret as the user's browser brought it; a malformed one is an
unknown link, not a 400. Roles: Policy services only.

- ``INVITATION_CHECK``: what the link is (``valid``, ``used``, ``expired``, ``revoked``,
  ``unknown``) and, when known, whose it is and until when it works.
- ``INVITATION_ENROL``: for the invited user only (``foreign`` for anyone else), a pending TOTP
  token as ``OTP_ENROL`` makes it, even where self-enrolment is switched off.
- ``INVITATION_CONFIRM``: ``OTP_CONFIRM`` for that token, and the link marked used by this
  submission (``attempt``) in one conditional ``UPDATE``: single use everywhere, and a retry
  of the same attempt is answered ``ok`` again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from gatehouse.authentication.calls import (
    MAX_BODY,
    MAX_ISSUER,
    MAX_SERIAL,
    _attempt,
    _client_ip,
    _code,
    _username,
)
from gatehouse.internal.calls import Call, json_codec
from gatehouse.internal.endpoint import bad_request, string_field
from gatehouse.trust.identity import POLICY

__all__ = [
    "ALL",
    "INVITATION_CHECK",
    "INVITATION_CONFIRM",
    "INVITATION_ENROL",
    "InvitationAnswer",
    "InvitationCheck",
    "InvitationConfirm",
    "InvitationEnrol",
    "InvitationEnrolAnswer",
    "InvitationRequest",
    "LinkState",
]

SERVICE = "authentication"
#: Longest link secret read (a real one is 43 characters; anything else is unknown).
MAX_SECRET = 64

LinkState = Literal["valid", "used", "expired", "revoked", "unknown"]
LINK_STATES: tuple[str, ...] = get_args(LinkState)
#: Why an invitation call did not go ahead: the link's state, or ``foreign`` (another user's).
Refusal = Literal["used", "expired", "revoked", "unknown", "foreign"]
REFUSALS: tuple[str, ...] = get_args(Refusal)
ConfirmResult = Literal[
    "ok", "invalid", "locked", "used", "expired", "revoked", "unknown", "foreign"
]
CONFIRM_RESULTS: tuple[str, ...] = get_args(ConfirmResult)


def _secret(data: dict[str, Any]) -> str:
    return string_field(data, "invitation")[:MAX_SECRET]


# --- POST /internal/v1/invitations/check -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvitationRequest:
    invitation: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class InvitationCheck:
    """What the link is; ``username`` and ``expires_at`` when it names an invitation."""

    state: LinkState
    username: str | None = None
    expires_at: datetime | None = None


def parse_check_answer(data: dict[str, Any]) -> InvitationCheck:
    state = data.get("state")
    if state not in LINK_STATES:
        raise ValueError(f"state: {state!r}")
    username = data.get("username")
    expires = data.get("expires_at")
    if username is not None and not isinstance(username, str):
        raise ValueError("username: must be null or a string")
    if expires is not None and not isinstance(expires, str):
        raise ValueError("expires_at: must be null or a time")
    return InvitationCheck(
        state,
        username,
        datetime.fromisoformat(expires) if expires else None,
    )


def render_check_answer(answer: InvitationCheck) -> dict[str, object]:
    return {
        "state": answer.state,
        "username": answer.username,
        "expires_at": answer.expires_at.isoformat() if answer.expires_at else None,
    }


# --- POST /internal/v1/invitations/enrol -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvitationEnrol:
    invitation: str = field(repr=False)
    username: str
    issuer: str


def parse_enrol(data: dict[str, Any]) -> InvitationEnrol:
    """``{"invitation", "username", "issuer"}``."""
    issuer = string_field(data, "issuer")
    if len(issuer) > MAX_ISSUER or ":" in issuer:
        raise bad_request(f"issuer: at most {MAX_ISSUER} characters, without ':'")
    return InvitationEnrol(_secret(data), _username(data), issuer)


@dataclass(frozen=True, slots=True)
class InvitationEnrolAnswer:
    """``ok`` with the pending token (serial, otpauth:// URI, base32 seed shown once), or why
    not."""

    result: Literal["ok"] | Refusal
    serial: str | None = None
    uri: str | None = None
    secret: str | None = field(default=None, repr=False)


def parse_enrol_answer(data: dict[str, Any]) -> InvitationEnrolAnswer:
    result = data.get("result")
    if result == "ok":
        values = [data.get(name) for name in ("serial", "uri", "secret")]
        if not all(isinstance(value, str) and value for value in values):
            raise ValueError("serial, uri and secret: must be strings")
        serial, uri, secret = (str(value) for value in values)
        return InvitationEnrolAnswer("ok", serial, uri, secret)
    if result in REFUSALS:
        return InvitationEnrolAnswer(result)
    raise ValueError(f"unknown result {result!r}")


def render_enrol_answer(answer: InvitationEnrolAnswer) -> dict[str, object]:
    if answer.result == "ok":
        return {"result": "ok", "serial": answer.serial, "uri": answer.uri, "secret": answer.secret}
    return {"result": answer.result}


# --- POST /internal/v1/invitations/confirm ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvitationConfirm:
    invitation: str = field(repr=False)
    username: str
    serial: str
    code: str = field(repr=False)
    client_ip: str
    attempt: str


def parse_confirm(data: dict[str, Any]) -> InvitationConfirm:
    """``{"invitation", "username", "serial", "code", "client_ip", "attempt"}``."""
    serial = string_field(data, "serial")
    if not 1 <= len(serial) <= MAX_SERIAL:
        raise bad_request(f"serial: 1-{MAX_SERIAL} characters")
    return InvitationConfirm(
        _secret(data), _username(data), serial, _code(data), _client_ip(data), _attempt(data)
    )


def render_confirm(request: InvitationConfirm) -> dict[str, object]:
    return {
        "invitation": request.invitation,
        "username": request.username,
        "serial": request.serial,
        "code": request.code,
        "client_ip": request.client_ip,
        "attempt": request.attempt,
    }


@dataclass(frozen=True, slots=True)
class InvitationAnswer:
    """``ok`` (the token is active and the link used), ``invalid`` / ``locked`` as
    ``OTP_CONFIRM`` answers them, or why the link cannot be used."""

    result: ConfirmResult
    serial: str | None = None
    retry_after: float | None = None


def parse_confirm_answer(data: dict[str, Any]) -> InvitationAnswer:
    result = data.get("result")
    if result not in CONFIRM_RESULTS:
        raise ValueError(f"unknown result {result!r}")
    serial = data.get("serial")
    retry = data.get("retry_after")
    return InvitationAnswer(
        result,
        serial if isinstance(serial, str) else None,
        float(retry) if isinstance(retry, int | float) and not isinstance(retry, bool) else None,
    )


def render_confirm_answer(answer: InvitationAnswer) -> dict[str, object]:
    rendered: dict[str, object] = {"result": answer.result}
    if answer.serial is not None:
        rendered["serial"] = answer.serial
    if answer.retry_after is not None:
        rendered["retry_after"] = answer.retry_after
    return rendered


CHECK_REQUEST = json_codec(
    lambda data: InvitationRequest(_secret(data)),
    lambda request: {"invitation": request.invitation},
    '`{"invitation"}`',
    MAX_BODY,
)
CHECK_ANSWER = json_codec(
    parse_check_answer,
    render_check_answer,
    '`{"state": "valid"|"used"|"expired"|"revoked"|"unknown", "username", "expires_at"}`',
)
ENROL_REQUEST = json_codec(
    parse_enrol,
    lambda request: {
        "invitation": request.invitation,
        "username": request.username,
        "issuer": request.issuer,
    },
    '`{"invitation", "username", "issuer"}`',
    MAX_BODY,
)
ENROL_ANSWER = json_codec(
    parse_enrol_answer,
    render_enrol_answer,
    '`{"result": "ok", "serial", "uri", "secret"}` / `{"result": "used"|"expired"|"revoked"|'
    '"unknown"|"foreign"}`',
)
CONFIRM_REQUEST = json_codec(
    parse_confirm,
    render_confirm,
    '`{"invitation", "username", "serial", "code", "client_ip", "attempt"}`',
    MAX_BODY,
)
CONFIRM_ANSWER = json_codec(
    parse_confirm_answer,
    render_confirm_answer,
    '`{"result": "ok"|"invalid"|"locked"|"used"|"expired"|"revoked"|"unknown"|"foreign", '
    '"serial"?, "retry_after"?}`',
)

INVITATION_CHECK = Call(
    SERVICE,
    "check_invitation",
    "POST",
    "/internal/v1/invitations/check",
    CHECK_REQUEST,
    CHECK_ANSWER,
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="what a token invitation link is (valid, used, expired, revoked, unknown)",
    max_body=MAX_BODY,
)
INVITATION_ENROL = Call(
    SERVICE,
    "enrol_invitation",
    "POST",
    "/internal/v1/invitations/enrol",
    ENROL_REQUEST,
    ENROL_ANSWER,
    roles=frozenset({POLICY}),
    # As OTP_ENROL: a retry makes a new pending token replacing the first.
    retry_safe=True,
    summary="start the enrolment a token invitation offers (the invited user only)",
    max_body=MAX_BODY,
)
INVITATION_CONFIRM = Call(
    SERVICE,
    "confirm_invitation",
    "POST",
    "/internal/v1/invitations/confirm",
    CONFIRM_REQUEST,
    CONFIRM_ANSWER,
    roles=frozenset({POLICY}),
    # Idempotent per attempt: the token and the link are consumed with the attempt's id.
    retry_safe=True,
    summary="activate the invited user's new token and use the invitation up (single use)",
    max_body=MAX_BODY,
)

ALL: tuple[Call[Any, Any], ...] = (INVITATION_CHECK, INVITATION_ENROL, INVITATION_CONFIRM)

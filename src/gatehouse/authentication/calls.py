"""The Authentication service's internal calls, each declared once
(:class:`gatehouse.internal.calls.Call`), with their wire formats: the service's routes
(authentication/app.py) and the Policy service's password check are made from them.

A leaf module (the Policy service imports it): the wire formats and nothing of the service.

Roles: a password check and the one-time password calls for Policy services only (the client
address they carry is believed because the caller is one); health for every role. The
password check and ``OTP_VERIFY`` also for the Administration service, which signs its
administrators in to the console with them (issue 19).

One-time passwords (issue 15):

- ``OTP_VERIFY`` checks a code against the user's active tokens. ``attempt`` is a random id the
  Policy service makes per submission by the user (16-64 URL-safe characters) and sends again
  when it retries the same submission: the consumed step or counter is recorded with it, so a
  retry on the other Authentication service after the first died between its commit and its
  answer is answered ``ok`` again without a second acceptance; any other attempt with that
  code is a replay (``invalid``). ``no_token``: the user has no active token.
- ``OTP_ENROL`` makes a pending TOTP token (replacing the user's earlier pending one) and
  answers its seed once; 403 ``forbidden`` when ``otp.self_enrolment`` is false.
- ``OTP_CONFIRM`` activates the pending token with a current code (idempotent per attempt as
  above); ``locked`` when the pending token has had too many wrong codes (enrol again).
- ``OTP_STATUS``: how many active tokens the user has, the pending one, and whether an
  administrator requires enrolment.

Every OTP call answers 503 ``unavailable`` while the OATH DB or the seed keyring cannot be
used (the caller fails over; password checks keep working).

One-time codes out of band (issue 16; :mod:`gatehouse.authentication.code_checks`):

- ``CODE_SEND`` makes a code for ``email_otp`` or ``sms_otp`` and hands it to a Distribution
  service; it answers ``accepted`` (with the message id and the masked recipient) only once
  Distribution has accepted the message, ``throttled`` (with ``retry_after``, and the id and
  recipient of the user's latest live code for the method, if any, to check instead) or
  ``no_contact`` (with a message the portal shows). ``key`` is made by the Policy service per
  send and sent again with a retry: the same key never makes a second code or message.
  503 when no Distribution service accepts the message.
- ``CODE_STATUS``: where the message of one of the user's codes is (``accepted``, ``sent``,
  ``failed``: every channel failed and it waits for a retry, ``expired``; ``unknown``: no
  code of this user has that message; ``accepted`` too while no Distribution service answers,
  which is all that is known then: never a 503, so pollers do not take this service for down).
- ``CODE_VERIFY`` checks a code like ``OTP_VERIFY`` (``attempt`` makes it idempotent): ``ok``,
  ``invalid``, ``expired`` (no live code) or ``locked`` (too many wrong codes: the code is
  dead, a new one must be sent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from gatehouse.authentication.lockout import canonical_ip
from gatehouse.internal.calls import Call, health_call, json_codec
from gatehouse.internal.endpoint import bad_request, string_field
from gatehouse.trust.identity import ADMINISTRATION, POLICY

__all__ = [
    "ALL",
    "ATTEMPT",
    "CODE_SEND",
    "CODE_STATUS",
    "CODE_VERIFY",
    "HEALTH",
    "MAX_BODY",
    "OTP_CONFIRM",
    "OTP_ENROL",
    "OTP_STATUS",
    "OTP_VERIFY",
    "VERIFY",
    "Account",
    "CodeSendAnswer",
    "CodeSendRequest",
    "CodeStatusAnswer",
    "CodeStatusRequest",
    "CodeVerifyAnswer",
    "CodeVerifyRequest",
    "ConfirmRequest",
    "EnrolAnswer",
    "EnrolRequest",
    "OtpAnswer",
    "OtpRequest",
    "StatusAnswer",
    "StatusRequest",
    "VerifyAnswer",
    "VerifyRequest",
]

SERVICE = "authentication"
MAX_BODY = 16 * 1024
#: A trusted-device id as the Policy service sends it (from a device cookie it verified) and
#: as this service issues it.
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{11}\Z")
#: An OTP submission's id (made by the Policy service, sent again with a retry of it).
ATTEMPT = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
#: Longest username an OTP call takes (the user DB's is 64; longer ones own no token).
MAX_USERNAME = 256
#: Longest code read (anything longer is as wrong as any malformed code, and cut here).
MAX_CODE = 64
MAX_ISSUER = 64
MAX_SERIAL = 64


# --- POST /internal/v1/password/verify ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    username: str
    password: str
    client_ip: str
    device: str | None = None
    #: Also answer the user's one-time password status when the password is right (what
    #: ``OTP_STATUS`` answers): a sign-in then needs one call instead of two.
    otp: bool = False


def parse_verify(data: dict[str, Any]) -> VerifyRequest:
    """``{"username", "password", "client_ip", "device"?, "otp"?}``; errors name the field at
    fault."""
    username = string_field(data, "username")
    password = string_field(data, "password")
    client_ip = string_field(data, "client_ip")
    if not username:
        raise bad_request("username: empty")
    try:
        address = canonical_ip(client_ip)
    except ValueError:
        raise bad_request(f"client_ip: not an IP address: {client_ip[:64]!r}") from None
    device = data.get("device")
    if device is not None and not (isinstance(device, str) and DEVICE_ID.match(device)):
        raise bad_request("device: must be null or a device id (11 URL-safe characters)")
    otp = data.get("otp", False)
    if not isinstance(otp, bool):
        raise bad_request("otp: must be true or false")
    return VerifyRequest(username, password, address, device, otp)


def render_verify(request: VerifyRequest) -> dict[str, object]:
    body: dict[str, object] = {
        "username": request.username,
        "password": request.password,
        "client_ip": request.client_ip,
    }
    if request.device is not None:
        body["device"] = request.device
    if request.otp:
        body["otp"] = True
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
    """``ok`` (with ``user``, the trusted-device id issued and, when asked for and known,
    the user's one-time password status), ``invalid`` or ``locked`` (with ``retry_after``
    seconds)."""

    result: Literal["ok", "invalid", "locked"]
    user: Account | None = None
    retry_after: float = 0.0
    device: str | None = None
    otp: StatusAnswer | None = None


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
        status = data.get("otp")
        try:
            # Without a usable status the caller asks OTP_STATUS itself.
            otp = parse_status_answer(status) if isinstance(status, dict) else None
        except ValueError:
            otp = None
        return VerifyAnswer("ok", account, device=device if valid else None, otp=otp)
    raise ValueError(f"unknown result {result!r}")


def render_answer(answer: VerifyAnswer) -> dict[str, object]:
    if answer.result == "ok":
        user = answer.user.to_json() if answer.user is not None else None
        body: dict[str, object] = {"result": "ok", "user": user, "device": answer.device}
        if answer.otp is not None:
            body["otp"] = render_status_answer(answer.otp)
        return body
    if answer.result == "locked":
        retry = answer.retry_after
        return {"result": "locked", "retry_after": int(retry) if retry == int(retry) else retry}
    return {"result": "invalid"}


VERIFY_REQUEST = json_codec(
    parse_verify,
    render_verify,
    '`{"username", "password", "client_ip", "device"?, "otp"?}`',
    MAX_BODY,
)
VERIFY_ANSWER = json_codec(
    parse_answer,
    render_answer,
    '`{"result": "ok", "user": USER, "device", "otp"?: STATUS}` / `{"result": "invalid"}` / '
    '`{"result": "locked", "retry_after"}`',
)


# --- the one-time password calls ---------------------------------------------------------------


def _username(data: dict[str, Any]) -> str:
    username = string_field(data, "username")
    if not username:
        raise bad_request("username: empty")
    if len(username) > MAX_USERNAME:
        raise bad_request(f"username: longer than {MAX_USERNAME} characters")
    return username


def _client_ip(data: dict[str, Any]) -> str:
    client_ip = string_field(data, "client_ip")
    try:
        return canonical_ip(client_ip)
    except ValueError:
        raise bad_request(f"client_ip: not an IP address: {client_ip[:64]!r}") from None


def _attempt(data: dict[str, Any]) -> str:
    attempt = string_field(data, "attempt")
    if not ATTEMPT.match(attempt):
        raise bad_request("attempt: must be 16-64 URL-safe characters (A-Z a-z 0-9 _ -)")
    return attempt


def _code(data: dict[str, Any]) -> str:
    # Any string: a malformed code is a wrong code (same answer, same work), not a 400.
    return string_field(data, "code")[:MAX_CODE]


@dataclass(frozen=True, slots=True)
class OtpRequest:
    """``OTP_VERIFY``'s request. ``code`` is what the user typed, checked as it is."""

    username: str
    code: str
    client_ip: str
    attempt: str


def parse_otp(data: dict[str, Any]) -> OtpRequest:
    """``{"username", "code", "client_ip", "attempt"}``; errors name the field at fault."""
    return OtpRequest(_username(data), _code(data), _client_ip(data), _attempt(data))


def render_otp(request: OtpRequest) -> dict[str, object]:
    return {
        "username": request.username,
        "code": request.code,
        "client_ip": request.client_ip,
        "attempt": request.attempt,
    }


OtpResult = Literal["ok", "invalid", "locked", "no_token"]


@dataclass(frozen=True, slots=True)
class OtpAnswer:
    """``ok`` (with the serial of the token that answered), ``invalid``, ``locked`` (with
    ``retry_after`` seconds when the lock runs out by itself) or ``no_token``."""

    result: OtpResult
    serial: str | None = None
    retry_after: float | None = None


def parse_otp_answer(data: dict[str, Any]) -> OtpAnswer:
    """``ValueError`` if malformed; a bad ``retry_after`` reads as none."""
    result = data.get("result")
    if result == "ok":
        serial = data.get("serial")
        return OtpAnswer("ok", serial if isinstance(serial, str) else None)
    if result == "locked":
        retry = data.get("retry_after")
        if isinstance(retry, int | float) and not isinstance(retry, bool) and retry > 0:
            return OtpAnswer("locked", retry_after=float(retry))
        return OtpAnswer("locked")
    if result in ("invalid", "no_token"):
        return OtpAnswer(result)
    raise ValueError(f"unknown result {result!r}")


def render_otp_answer(answer: OtpAnswer) -> dict[str, object]:
    if answer.result == "ok":
        return {"result": "ok", "serial": answer.serial}
    if answer.result == "locked" and answer.retry_after is not None:
        retry = answer.retry_after
        return {"result": "locked", "retry_after": int(retry) if retry == int(retry) else retry}
    return {"result": answer.result}


@dataclass(frozen=True, slots=True)
class EnrolRequest:
    username: str
    issuer: str


def parse_enrol(data: dict[str, Any]) -> EnrolRequest:
    """``{"username", "issuer"}``: the issuer an authenticator app shows (no ``:``)."""
    username = _username(data)
    issuer = string_field(data, "issuer")
    if len(issuer) > MAX_ISSUER or ":" in issuer:
        raise bad_request(f"issuer: at most {MAX_ISSUER} characters, without ':'")
    return EnrolRequest(username, issuer)


@dataclass(frozen=True, slots=True)
class EnrolAnswer:
    """The pending token: its serial, the otpauth:// URI to show as a QR code and the seed in
    base32 (shown once, never stored in the clear)."""

    serial: str
    uri: str
    secret: str = field(repr=False)


def parse_enrol_answer(data: dict[str, Any]) -> EnrolAnswer:
    values = [data.get(name) for name in ("serial", "uri", "secret")]
    if not all(isinstance(value, str) and value for value in values):
        raise ValueError("serial, uri and secret: must be strings")
    serial, uri, secret = (str(value) for value in values)
    return EnrolAnswer(serial, uri, secret)


@dataclass(frozen=True, slots=True)
class ConfirmRequest:
    username: str
    serial: str
    code: str
    client_ip: str
    attempt: str


def parse_confirm(data: dict[str, Any]) -> ConfirmRequest:
    """``{"username", "serial", "code", "client_ip", "attempt"}``."""
    serial = string_field(data, "serial")
    if not 1 <= len(serial) <= MAX_SERIAL:
        raise bad_request(f"serial: 1-{MAX_SERIAL} characters")
    return ConfirmRequest(_username(data), serial, _code(data), _client_ip(data), _attempt(data))


def render_confirm(request: ConfirmRequest) -> dict[str, object]:
    return {
        "username": request.username,
        "serial": request.serial,
        "code": request.code,
        "client_ip": request.client_ip,
        "attempt": request.attempt,
    }


def parse_confirm_answer(data: dict[str, Any]) -> OtpAnswer:
    answer = parse_otp_answer(data)
    if answer.result == "no_token":
        raise ValueError("unknown result 'no_token'")
    return answer


@dataclass(frozen=True, slots=True)
class StatusRequest:
    username: str


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    """How many tokens the user has enrolled (active, or locked: a locked token still asks for
    its code, not for an enrolment; disabled ones are not counted), the serial of the pending
    one, and whether an administrator requires the user to enrol a token."""

    active: int
    pending: str | None
    enrol_required: bool


def parse_status_answer(data: dict[str, Any]) -> StatusAnswer:
    active = data.get("active")
    pending = data.get("pending")
    required = data.get("enrol_required")
    if not isinstance(active, int) or isinstance(active, bool) or active < 0:
        raise ValueError("active: must be a count")
    if pending is not None and not isinstance(pending, str):
        raise ValueError("pending: must be null or a serial")
    if not isinstance(required, bool):
        raise ValueError("enrol_required: must be true or false")
    return StatusAnswer(active, pending, required)


def render_status_answer(answer: StatusAnswer) -> dict[str, object]:
    return {
        "active": answer.active,
        "pending": answer.pending,
        "enrol_required": answer.enrol_required,
    }


OTP_REQUEST = json_codec(
    parse_otp, render_otp, '`{"username", "code", "client_ip", "attempt"}`', MAX_BODY
)
OTP_ANSWER = json_codec(
    parse_otp_answer,
    render_otp_answer,
    '`{"result": "ok", "serial"}` / `{"result": "invalid"}` / '
    '`{"result": "locked", "retry_after"?}` / `{"result": "no_token"}`',
)
ENROL_REQUEST = json_codec(
    parse_enrol,
    lambda request: {"username": request.username, "issuer": request.issuer},
    '`{"username", "issuer"}`',
    MAX_BODY,
)
ENROL_ANSWER = json_codec(
    parse_enrol_answer,
    lambda answer: {"serial": answer.serial, "uri": answer.uri, "secret": answer.secret},
    '`{"serial", "uri", "secret"}`',
)
CONFIRM_REQUEST = json_codec(
    parse_confirm,
    render_confirm,
    '`{"username", "serial", "code", "client_ip", "attempt"}`',
    MAX_BODY,
)
CONFIRM_ANSWER = json_codec(
    parse_confirm_answer, render_otp_answer, '`{"result": "ok"|"invalid"|"locked"}`'
)
STATUS_REQUEST = json_codec(
    lambda data: StatusRequest(_username(data)),
    lambda request: {"username": request.username},
    '`{"username"}`',
    MAX_BODY,
)
STATUS_ANSWER = json_codec(
    parse_status_answer,
    render_status_answer,
    '`{"active": n, "pending": serial|null, "enrol_required": bool}`',
)


# --- the one-time code calls (out of band) ---------------------------------------------------

CodeMethod = Literal["email_otp", "sms_otp"]
CODE_METHODS: tuple[str, ...] = ("email_otp", "sms_otp")
#: A Distribution message id as CODE_SEND answers it.
MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
MAX_HINT = 256
MAX_MESSAGE = 512


def _method(data: dict[str, Any]) -> CodeMethod:
    method = string_field(data, "method")
    if method not in CODE_METHODS:
        raise bad_request(f"method: must be one of {', '.join(CODE_METHODS)}")
    return method  # type: ignore[return-value]  # checked against CODE_METHODS


def _send_key(data: dict[str, Any]) -> str:
    key = string_field(data, "key")
    if not ATTEMPT.match(key):
        raise bad_request("key: must be 16-64 URL-safe characters (A-Z a-z 0-9 _ -)")
    return key


def _message_id(data: dict[str, Any], name: str = "id") -> str:
    value = string_field(data, name)
    if not MESSAGE_ID.match(value):
        raise bad_request(f"{name}: not a message id")
    return value


@dataclass(frozen=True, slots=True)
class CodeSendRequest:
    username: str
    method: CodeMethod
    key: str
    client_ip: str


def parse_code_send(data: dict[str, Any]) -> CodeSendRequest:
    """``{"username", "method", "key", "client_ip"}``; errors name the field at fault."""
    return CodeSendRequest(_username(data), _method(data), _send_key(data), _client_ip(data))


SendResult = Literal["accepted", "throttled", "no_contact"]
CodeStatusValue = Literal["accepted", "sent", "failed", "expired", "unknown"]
CODE_STATUSES: tuple[str, ...] = ("accepted", "sent", "failed", "expired", "unknown")


@dataclass(frozen=True, slots=True)
class CodeSendAnswer:
    """``accepted`` (the message id, its status then, the masked recipient), ``throttled``
    (``retry_after`` seconds) or ``no_contact`` (``message`` says what is missing)."""

    result: SendResult
    id: str | None = None
    status: CodeStatusValue | None = None
    recipient_hint: str = ""
    retry_after: float | None = None
    message: str = ""


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _status_value(value: object) -> CodeStatusValue:
    if value not in CODE_STATUSES:
        raise ValueError(f"status: unknown {value!r}")
    return value  # type: ignore[return-value]  # checked against CODE_STATUSES


def parse_code_send_answer(data: dict[str, Any]) -> CodeSendAnswer:
    result = data.get("result")
    if result == "accepted":
        message_id = data.get("id")
        hint = data.get("recipient_hint")
        if not isinstance(message_id, str) or not MESSAGE_ID.match(message_id):
            raise ValueError("id: must be a message id")
        return CodeSendAnswer(
            "accepted",
            message_id,
            _status_value(data.get("status")),
            hint[:MAX_HINT] if isinstance(hint, str) else "",
        )
    if result == "throttled":
        latest = data.get("id")
        hint = data.get("recipient_hint")
        return CodeSendAnswer(
            "throttled",
            latest if isinstance(latest, str) and MESSAGE_ID.match(latest) else None,
            recipient_hint=hint[:MAX_HINT] if isinstance(hint, str) else "",
            retry_after=_number(data.get("retry_after")) or 30.0,
        )
    if result == "no_contact":
        message = data.get("message")
        return CodeSendAnswer(
            "no_contact", message=message[:MAX_MESSAGE] if isinstance(message, str) else ""
        )
    raise ValueError(f"unknown result {result!r}")


def render_code_send_answer(answer: CodeSendAnswer) -> dict[str, object]:
    if answer.result == "accepted":
        return {
            "result": "accepted",
            "id": answer.id,
            "status": answer.status,
            "recipient_hint": answer.recipient_hint,
        }
    if answer.result == "throttled":
        return {
            "result": "throttled",
            "retry_after": answer.retry_after,
            "id": answer.id,
            "recipient_hint": answer.recipient_hint,
        }
    return {"result": answer.result, "message": answer.message}


@dataclass(frozen=True, slots=True)
class CodeStatusRequest:
    username: str
    id: str


@dataclass(frozen=True, slots=True)
class CodeStatusAnswer:
    """Where the message of one of the user's codes is; ``error`` the last channel's
    failure (short, never the text)."""

    id: str
    status: CodeStatusValue
    recipient_hint: str = ""
    error: str | None = None


def parse_code_status_answer(data: dict[str, Any]) -> CodeStatusAnswer:
    message_id = data.get("id")
    if not isinstance(message_id, str):
        raise ValueError("id: must be a string")
    hint = data.get("recipient_hint")
    error = data.get("error")
    return CodeStatusAnswer(
        message_id,
        _status_value(data.get("status")),
        hint[:MAX_HINT] if isinstance(hint, str) else "",
        error[:MAX_MESSAGE] if isinstance(error, str) else None,
    )


@dataclass(frozen=True, slots=True)
class CodeVerifyRequest:
    """``CODE_VERIFY``'s request: the code as the user typed it, for ``method``."""

    username: str
    method: CodeMethod
    code: str = field(repr=False)
    client_ip: str
    attempt: str


def parse_code_verify(data: dict[str, Any]) -> CodeVerifyRequest:
    """``{"username", "method", "code", "client_ip", "attempt"}``."""
    return CodeVerifyRequest(
        _username(data), _method(data), _code(data), _client_ip(data), _attempt(data)
    )


CodeResult = Literal["ok", "invalid", "expired", "locked"]


@dataclass(frozen=True, slots=True)
class CodeVerifyAnswer:
    result: CodeResult


def parse_code_verify_answer(data: dict[str, Any]) -> CodeVerifyAnswer:
    result = data.get("result")
    if result not in ("ok", "invalid", "expired", "locked"):
        raise ValueError(f"unknown result {result!r}")
    return CodeVerifyAnswer(result)


CODE_SEND_REQUEST = json_codec(
    parse_code_send,
    lambda r: {"username": r.username, "method": r.method, "key": r.key, "client_ip": r.client_ip},
    '`{"username", "method": "email_otp"|"sms_otp", "key", "client_ip"}`',
    MAX_BODY,
)
CODE_SEND_ANSWER = json_codec(
    parse_code_send_answer,
    render_code_send_answer,
    '`{"result": "accepted", "id", "status", "recipient_hint"}` / '
    '`{"result": "throttled", "retry_after", "id", "recipient_hint"}` / '
    '`{"result": "no_contact", "message"}`',
)
CODE_STATUS_REQUEST = json_codec(
    lambda data: CodeStatusRequest(_username(data), _message_id(data)),
    lambda r: {"username": r.username, "id": r.id},
    '`{"username", "id"}`',
    MAX_BODY,
)
CODE_STATUS_ANSWER = json_codec(
    parse_code_status_answer,
    lambda a: {
        "id": a.id,
        "status": a.status,
        "recipient_hint": a.recipient_hint,
        "error": a.error,
    },
    '`{"id", "status": "accepted"|"sent"|"failed"|"expired"|"unknown", "recipient_hint", "error"}`',
)
CODE_VERIFY_REQUEST = json_codec(
    parse_code_verify,
    lambda r: {
        "username": r.username,
        "method": r.method,
        "code": r.code,
        "client_ip": r.client_ip,
        "attempt": r.attempt,
    },
    '`{"username", "method", "code", "client_ip", "attempt"}`',
    MAX_BODY,
)
CODE_VERIFY_ANSWER = json_codec(
    parse_code_verify_answer,
    lambda a: {"result": a.result},
    '`{"result": "ok"|"invalid"|"expired"|"locked"}`',
)


# --- the declarations --------------------------------------------------------------------------


HEALTH = health_call(SERVICE)
VERIFY = Call(
    SERVICE,
    "verify_password",
    "POST",
    "/internal/v1/password/verify",
    VERIFY_REQUEST,
    VERIFY_ANSWER,
    # The Administration service checks its administrators' console sign-ins here too.
    roles=frozenset({POLICY, ADMINISTRATION}),
    # A password check changes nothing but the shared lockout counters: an Authentication
    # service that dies after counting a failure and before answering makes the next one
    # count it again, at worst one extra failure (erring towards locking).
    retry_safe=True,
    summary="check a password (and the lockout of the account and the client address)",
    max_body=MAX_BODY,
)

OTP_VERIFY = Call(
    SERVICE,
    "verify_otp",
    "POST",
    "/internal/v1/otp/verify",
    OTP_REQUEST,
    OTP_ANSWER,
    roles=frozenset({POLICY, ADMINISTRATION}),
    # Idempotent per attempt: the step or counter is consumed with the attempt's id, and the
    # same attempt asking again is answered ok without a second acceptance.
    retry_safe=True,
    summary="check a one-time password against the user's tokens (single use everywhere)",
    max_body=MAX_BODY,
)
OTP_ENROL = Call(
    SERVICE,
    "enrol_otp",
    "POST",
    "/internal/v1/otp/enrol",
    ENROL_REQUEST,
    ENROL_ANSWER,
    roles=frozenset({POLICY}),
    # A retry makes a new pending token replacing the first: the answer received is the one
    # that stands.
    retry_safe=True,
    summary="start a self-enrolment: a pending TOTP token and its otpauth:// URI",
    max_body=MAX_BODY,
)
OTP_CONFIRM = Call(
    SERVICE,
    "confirm_otp",
    "POST",
    "/internal/v1/otp/confirm",
    CONFIRM_REQUEST,
    CONFIRM_ANSWER,
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="activate the pending token with a current code (idempotent per attempt)",
    max_body=MAX_BODY,
)
OTP_STATUS = Call(
    SERVICE,
    "otp_status",
    "POST",
    "/internal/v1/otp/status",
    STATUS_REQUEST,
    STATUS_ANSWER,
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="a user's active tokens, pending enrolment and whether enrolment is required",
    max_body=MAX_BODY,
)

CODE_SEND = Call(
    SERVICE,
    "send_code",
    "POST",
    "/internal/v1/codes/send",
    CODE_SEND_REQUEST,
    CODE_SEND_ANSWER,
    roles=frozenset({POLICY}),
    # Idempotent by key: a retry finds the code the first try made, and submits its message
    # with the same Distribution key (never a second code nor a second message).
    retry_safe=True,
    summary="send a one-time code by e-mail or SMS (answered once Distribution accepted it)",
    max_body=MAX_BODY,
)
CODE_STATUS = Call(
    SERVICE,
    "code_status",
    "POST",
    "/internal/v1/codes/status",
    CODE_STATUS_REQUEST,
    CODE_STATUS_ANSWER,
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="the delivery status of a one-time code's message",
    max_body=MAX_BODY,
)
CODE_VERIFY = Call(
    SERVICE,
    "verify_code",
    "POST",
    "/internal/v1/codes/verify",
    CODE_VERIFY_REQUEST,
    CODE_VERIFY_ANSWER,
    roles=frozenset({POLICY}),
    # Idempotent per attempt, as OTP_VERIFY.
    retry_safe=True,
    summary="check a one-time code sent out of band (single use everywhere)",
    max_body=MAX_BODY,
)

ALL: tuple[Call[Any, Any], ...] = (
    HEALTH,
    VERIFY,
    OTP_VERIFY,
    OTP_ENROL,
    OTP_CONFIRM,
    OTP_STATUS,
    CODE_SEND,
    CODE_STATUS,
    CODE_VERIFY,
)

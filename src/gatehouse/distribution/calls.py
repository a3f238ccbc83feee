"""The Distribution service's internal calls, each declared once
(:class:`gatehouse.internal.calls.Call`), with their wire formats: the service's routes
(distribution/app.py) and its callers' (the Authentication service's code messages) are made
from them.

A leaf module (callers import it): the wire formats, the recipient checks and nothing of the
service.

- ``SUBMIT`` hands a message over. It is answered only once the message's row is committed in
  the outbox, so an answer means "accepted, will be delivered unless it expires". ``key`` is
  made by the caller per message (16-64 URL-safe characters) and sent again with a retry: the
  same key answers the existing message (same id) and never makes a second one.
- ``STATUS``: where a message is (``accepted``, ``sent`` with the channel that delivered it,
  ``failed``: every channel failed at least once and it waits for a retry before its expiry,
  ``expired``: dead-lettered, never sent).

Roles: Policy and Authentication services only; health for every role that asks services.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gatehouse.internal.calls import EMPTY, Call, health_call, json_codec
from gatehouse.internal.endpoint import bad_request, string_field
from gatehouse.trust.identity import AUTHENTICATION, POLICY

__all__ = [
    "ALL",
    "HEALTH",
    "KEY",
    "MAX_BODY",
    "MESSAGE_ID",
    "STATUS",
    "SUBMIT",
    "ChannelKind",
    "MessageStatus",
    "Purpose",
    "Status",
    "SubmitAnswer",
    "SubmitRequest",
    "check_email",
    "check_phone",
    "mask_email",
    "mask_phone",
    "recipient_hint",
]

SERVICE = "distribution"
MAX_BODY = 64 * 1024
#: A caller's key of one message (its idempotency key).
KEY = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
#: A message id as this service makes them (``secrets.token_urlsafe(16)``: 22 characters).
MESSAGE_ID = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
MAX_SUBJECT = 200
MAX_TEXT = 16 * 1024
MAX_USERNAME = 256
MAX_TTL = 86400
#: RFC 5321 4.5.3.1: a path (the address) of at most 256 octets with its brackets, a local part
#: of at most 64.
MAX_EMAIL = 254
MAX_LOCAL = 64

Purpose = Literal["code", "invitation", "notice"]
ChannelKind = Literal["email", "sms"]
Status = Literal["accepted", "sent", "failed", "expired"]
PURPOSES: tuple[str, ...] = get_args(Purpose)
CHANNEL_KINDS: tuple[str, ...] = get_args(ChannelKind)
STATUSES: tuple[str, ...] = get_args(Status)

# The dot-atom local part of RFC 5322 3.2.3 (no quoted strings: no mail system we deliver a
# code to needs one, and a quoted local part may hide what it is) and a domain of LDH labels
# (RFC 1035, 5890 A-labels) with a dot: an address is meant to leave this host.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
#: ITU-T E.164: a "+", a country code that does not start with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}\Z")
#: Characters that never belong in a header line (a subject) or an address.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_email(value: str) -> str | None:
    """Why ``value`` is not an e-mail address we deliver to, or None if it is one."""
    if len(value) > MAX_EMAIL:
        return f"longer than {MAX_EMAIL} characters"
    if _CONTROL.search(value) or " " in value:
        return "contains spaces or control characters"
    local, at, domain = value.rpartition("@")
    if not at or not local:
        return "not an e-mail address (NAME@DOMAIN)"
    if len(local) > MAX_LOCAL:
        return f"the part before '@' is longer than {MAX_LOCAL} characters"
    if not _LOCAL.match(local):
        return "the part before '@' has characters an address may not have there"
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return "the domain after '@' is not a host name with a dot (e.g. example.org)"
    if labels[-1].isdigit():
        return "the domain after '@' is not a host name"
    return None


def check_phone(value: str) -> str | None:
    """Why ``value`` is not an E.164 number (``+4915112345678``), or None if it is one."""
    if not _E164.match(value):
        return "not an E.164 number ('+', country code, number: at most 15 digits, no spaces)"
    return None


def mask_email(address: str) -> str:
    """``jane@example.org`` -> ``j***@example.org``: enough for the user to recognise it."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    """``+4915112345612`` -> ``+49*********12``: country code and the last two digits."""
    if len(number) <= 5:
        return number[:1] + "*" * (len(number) - 1)
    return number[:3] + "*" * (len(number) - 5) + number[-2:]


def recipient_hint(email: str | None, phone: str | None) -> str:
    """The masked recipients of a message, e-mail first (``j***@example.org, +49******12``)."""
    parts = []
    if email:
        parts.append(mask_email(email))
    if phone:
        parts.append(mask_phone(phone))
    return ", ".join(parts)


# --- POST /internal/v1/messages ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    """One message to deliver. ``text`` may hold a secret (a code, a link): it is kept out of
    ``repr`` and stored encrypted."""

    key: str
    purpose: Purpose
    email: str | None
    phone: str | None
    subject: str
    text: str = field(repr=False)
    #: The caller's preference order of channel kinds; None: the configured order.
    channels: list[ChannelKind] | None = None
    #: Seconds from acceptance after which the message is never sent.
    ttl: int = 300
    #: For the outbox listing and the audit log only.
    username: str | None = None


def _optional_string(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{name}: must be null or a string")
    return value


def parse_submit(data: dict[str, Any]) -> SubmitRequest:
    """``{"key", "purpose", "email"?, "phone"?, "subject", "text", "channels"?, "ttl",
    "username"?}``; errors name the field at fault."""
    key = string_field(data, "key")
    if not KEY.match(key):
        raise bad_request("key: must be 16-64 URL-safe characters (A-Z a-z 0-9 _ -)")
    purpose = string_field(data, "purpose")
    if purpose not in PURPOSES:
        raise bad_request(f"purpose: must be one of {', '.join(PURPOSES)}")
    email = _optional_string(data, "email") or None
    phone = _optional_string(data, "phone") or None
    if email is None and phone is None:
        raise bad_request("email, phone: at least one recipient is needed")
    if email is not None and (why := check_email(email)) is not None:
        raise bad_request(f"email: {why}")
    if phone is not None and (why := check_phone(phone)) is not None:
        raise bad_request(f"phone: {why}")
    subject = string_field(data, "subject")
    if len(subject) > MAX_SUBJECT:
        raise bad_request(f"subject: longer than {MAX_SUBJECT} characters")
    if _CONTROL.search(subject):
        raise bad_request("subject: contains line breaks or control characters")
    text = string_field(data, "text")
    if not text:
        raise bad_request("text: empty")
    if len(text) > MAX_TEXT:
        raise bad_request(f"text: longer than {MAX_TEXT} characters")
    channels = _channels(data.get("channels"))
    ttl = data.get("ttl")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
        raise bad_request(f"ttl: must be a whole number of seconds, 1-{MAX_TTL}")
    username = _optional_string(data, "username")
    if username is not None and len(username) > MAX_USERNAME:
        raise bad_request(f"username: longer than {MAX_USERNAME} characters")
    return SubmitRequest(
        key=key,
        purpose=purpose,  # type: ignore[arg-type]  # checked against PURPOSES above
        email=email,
        phone=phone,
        subject=subject,
        text=text,
        channels=channels,
        ttl=ttl,
        username=username,
    )


def _channels(value: object) -> list[ChannelKind] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise bad_request(f"channels: must be null or a non-empty list of {CHANNEL_KINDS}")
    kinds: list[ChannelKind] = []
    for item in value:
        if item not in CHANNEL_KINDS:
            raise bad_request(f"channels: {str(item)[:32]!r} is not one of email, sms")
        if item in kinds:
            raise bad_request(f"channels: {item} given twice")
        kinds.append(item)
    return kinds


def render_submit(request: SubmitRequest) -> dict[str, object]:
    return {
        "key": request.key,
        "purpose": request.purpose,
        "email": request.email,
        "phone": request.phone,
        "subject": request.subject,
        "text": request.text,
        "channels": list(request.channels) if request.channels is not None else None,
        "ttl": request.ttl,
        "username": request.username,
    }


@dataclass(frozen=True, slots=True)
class SubmitAnswer:
    """The accepted message's id and its status now (``accepted``, or where an earlier
    submission with the same key has got to)."""

    id: str
    status: Status


def _status(value: object) -> Status:
    if value not in STATUSES:
        raise ValueError(f"status: unknown {value!r}")
    return value  # type: ignore[return-value]  # checked against STATUSES


def parse_submit_answer(data: dict[str, Any]) -> SubmitAnswer:
    message_id = data.get("id")
    if not isinstance(message_id, str) or not MESSAGE_ID.match(message_id):
        raise ValueError("id: must be a message id")
    return SubmitAnswer(message_id, _status(data.get("status")))


# --- GET /internal/v1/messages/{id} ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageStatus:
    id: str
    status: Status
    #: The name of the channel that delivered it (when ``sent``).
    channel: str | None
    #: Delivery attempts so far (one per channel tried).
    attempts: int
    #: Masked recipients: ``j***@example.org`` / ``+49******12``.
    recipient_hint: str
    #: The last channel's failure, short and without the text or credentials.
    error: str | None = None


def parse_message_status(data: dict[str, Any]) -> MessageStatus:
    message_id = data.get("id")
    if not isinstance(message_id, str):
        raise ValueError("id: must be a string")
    channel = data.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise ValueError("channel: must be null or a string")
    attempts = data.get("attempts")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        raise ValueError("attempts: must be a count")
    hint = data.get("recipient_hint")
    if not isinstance(hint, str):
        raise ValueError("recipient_hint: must be a string")
    error = data.get("error")
    if error is not None and not isinstance(error, str):
        raise ValueError("error: must be null or a string")
    return MessageStatus(message_id, _status(data.get("status")), channel, attempts, hint, error)


def render_message_status(status: MessageStatus) -> dict[str, object]:
    return {
        "id": status.id,
        "status": status.status,
        "channel": status.channel,
        "attempts": status.attempts,
        "recipient_hint": status.recipient_hint,
        "error": status.error,
    }


SUBMIT_REQUEST = json_codec(
    parse_submit,
    render_submit,
    '`{"key", "purpose", "email"?, "phone"?, "subject", "text", "channels"?, "ttl", "username"?}`',
    MAX_BODY,
)
SUBMIT_ANSWER = json_codec(
    parse_submit_answer,
    lambda answer: {"id": answer.id, "status": answer.status},
    '`{"id", "status"}`',
)
STATUS_ANSWER = json_codec(
    parse_message_status,
    render_message_status,
    '`{"id", "status", "channel", "attempts", "recipient_hint", "error"}`',
)


# --- the declarations --------------------------------------------------------------------------

HEALTH = health_call(SERVICE)
SUBMIT = Call(
    SERVICE,
    "submit_message",
    "POST",
    "/internal/v1/messages",
    SUBMIT_REQUEST,
    SUBMIT_ANSWER,
    roles=frozenset({POLICY, AUTHENTICATION}),
    # Idempotent by key: a retry on the other Distribution service (sharing the outbox DB)
    # answers the message the first one committed.
    retry_safe=True,
    summary="accept a message (committed to the outbox before the answer) for delivery",
    max_body=MAX_BODY,
)
STATUS = Call(
    SERVICE,
    "message_status",
    "GET",
    "/internal/v1/messages/{id}",
    EMPTY,
    STATUS_ANSWER,
    roles=frozenset({POLICY, AUTHENTICATION}),
    retry_safe=True,
    summary="a message's delivery status (accepted, sent via a channel, failed, expired)",
)

ALL: tuple[Call[Any, Any], ...] = (HEALTH, SUBMIT, STATUS)

"""The Policy service's internal calls, each declared once (:class:`gatehouse.internal.calls.Call`):
its routes (policy/app.py) and its callers (the Access Point's decisions and event stream, the
operator's ``gatehouse users`` ending sessions) are made from these declarations.

A leaf module: the Access Point imports it, so it holds the wire formats and nothing of the
service (no database, no Starlette app).

Roles: decisions, events and the portal are for Access Points only; the session admin calls
for the operator's command line and the Administration service (the bearer token stays a
second factor); health for every role.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, TypedDict

import orjson

from gatehouse.internal.calls import EMPTY, Call, Codec, health_call, json_codec
from gatehouse.internal.endpoint import bad_request, parse_json_object
from gatehouse.trust.identity import ACCESS_POINT, ADMINISTRATION, OPERATOR

__all__ = [
    "ALL",
    "DECIDE",
    "DECISION",
    "DECISION_REQUEST",
    "END_SESSIONS",
    "EVENTS",
    "HEALTH",
    "MAX_DECISION_BODY",
    "PORTAL",
    "REVOKE_SESSION",
    "SESSIONS",
    "DecisionRequest",
]

SERVICE = "policy"
MAX_DECISION_BODY = 64 * 1024
#: Who may list and end sessions (with the admin bearer token as well).
SESSION_ADMINS = frozenset({OPERATOR, ADMINISTRATION})


# --- the decision call -------------------------------------------------------------------------


class DecisionRequest(TypedDict):
    """``DECISION_REQUEST``: a dictionary, as the Access Point builds it for every decision it
    asks for (a literal, the cheapest thing to build and to encode).

    ``url`` is the original URL (for the login redirect). ``ap`` is the Access Point's id as
    it says it; over mutual TLS the Policy service uses the id of the caller's certificate
    instead and ignores this field.
    """

    session: str | None
    resource: str
    method: str
    path: str
    url: str | None
    client_ip: str
    headers: dict[str, str]
    ap: str


def _required(data: Mapping[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise bad_request(f"{name}: {'missing' if value is None else 'must be a string'}")
    return value


def _optional(data: Mapping[str, object], name: str) -> str | None:
    return None if data.get(name) is None else _required(data, name)


def decode_decision_request(body: bytes) -> DecisionRequest:
    """Parse and check a ``DECISION_REQUEST``; errors name the field at fault. The method is
    upper-cased, header names lower-cased, the client address canonical, ``session`` None
    when empty, ``ap`` "" when absent. The parsed object itself is returned, normalised in
    place (fields the format does not know are left in it, unread)."""
    data = parse_json_object(body, MAX_DECISION_BODY)
    _required(data, "resource")
    method = _required(data, "method")
    path = _required(data, "path")
    client_ip = _required(data, "client_ip")
    if not path.startswith("/"):
        raise bad_request("path: must start with '/'")
    try:
        client_ip = ipaddress.ip_address(client_ip).compressed
    except ValueError:
        raise bad_request(f"client_ip: not an IP address: {client_ip[:64]!r}") from None
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise bad_request("headers: must be an object of strings")
    url = _optional(data, "url")
    if url is not None and not url.startswith(("http://", "https://", "/")):
        raise bad_request("url: must be an absolute http(s) URL")
    data["session"] = _optional(data, "session") or None
    data["method"] = method.upper()
    data["url"] = url
    data["client_ip"] = client_ip
    data["headers"] = {k.lower(): v for k, v in headers.items()} if headers else {}
    data["ap"] = _optional(data, "ap") or ""
    request: DecisionRequest = data  # type: ignore[assignment]  # checked above
    return request


def _decode_object(body: bytes) -> dict[str, Any]:
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    return data


DECISION_REQUEST: Codec[DecisionRequest] = Codec(
    decode_decision_request, orjson.dumps, "`DECISION_REQUEST`"
)
#: ``DECISION`` (the Access Point checks it: ``access_point.decisions.parse_decision``).
DECISION: Codec[dict[str, Any]] = Codec(_decode_object, orjson.dumps, "`DECISION`")


# --- other bodies ------------------------------------------------------------------------------


def _sessions(data: dict[str, Any]) -> list[dict[str, Any]]:
    sessions = data.get("sessions")
    if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
        raise ValueError("sessions: must be a list of objects")
    return sessions


def _revoked(data: dict[str, Any]) -> int:
    revoked = data.get("revoked")
    if not isinstance(revoked, int) or isinstance(revoked, bool) or revoked < 0:
        raise ValueError("revoked: must be a count")
    return revoked


SESSION_LIST = json_codec(
    _sessions, lambda sessions: {"sessions": sessions}, "`{sessions: [SESSION_INFO]}`"
)
REVOKED = json_codec(_revoked, lambda count: {"revoked": count}, "`{revoked: n}`")
#: One line of the event stream.
EVENT = Codec(_decode_object, orjson.dumps, "ndjson events")
#: A portal page or form: HTML and forms, not JSON.
PAGE: Codec[bytes] = Codec(lambda body: body, lambda body: body, "HTML / form")


# --- the declarations --------------------------------------------------------------------------

HEALTH = health_call(SERVICE, "`{status, role, instance, ...}`")
DECIDE = Call(
    SERVICE,
    "decide",
    "POST",
    "/internal/v1/decide",
    DECISION_REQUEST,
    DECISION,
    roles=frozenset({ACCESS_POINT}),
    retry_safe=True,
    summary="an access decision for one request (the AP is its certificate's id over mTLS)",
)
EVENTS = Call(
    SERVICE,
    "events",
    "GET",
    "/internal/v1/events",
    EMPTY,
    EVENT,
    roles=frozenset({ACCESS_POINT}),
    retry_safe=True,
    summary="the never-ending event stream (revocations, policy versions, pings)",
    stream=True,
)
SESSIONS = Call(
    SERVICE,
    "list_sessions",
    "GET",
    "/internal/v1/sessions",
    EMPTY,
    SESSION_LIST,
    roles=SESSION_ADMINS,
    retry_safe=True,
    summary="live sessions (?user=NAME); the admin bearer token as well",
)
END_SESSIONS = Call(
    SERVICE,
    "end_sessions",
    "DELETE",
    "/internal/v1/sessions",
    EMPTY,
    REVOKED,
    roles=SESSION_ADMINS,
    retry_safe=True,
    summary="end a user's sessions (?user=NAME&reason=R&except=HASH); the bearer token too",
)
REVOKE_SESSION = Call(
    SERVICE,
    "revoke_session",
    "DELETE",
    "/internal/v1/sessions/{id_hash}",
    EMPTY,
    REVOKED,
    roles=SESSION_ADMINS,
    retry_safe=True,
    summary="end one session by its id hash; the admin bearer token as well",
)
#: The login portal under ``login.portal_prefix`` (default ``/_gatehouse/``): HTML pages and
#: forms the Access Point relays for browsers, and the identity assertion key set. Guarded
#: (:meth:`Call.guard`) rather than routed: its handlers answer HTML.
PORTAL = Call(
    SERVICE,
    "portal",
    "GET",
    "/_gatehouse/*",
    PAGE,
    PAGE,
    roles=frozenset({ACCESS_POINT}),
    retry_safe=False,
    summary="the login portal, relayed by the Access Point (GET and POST)",
    more_methods=("POST",),
)

ALL: tuple[Call[Any, Any], ...] = (
    HEALTH,
    DECIDE,
    EVENTS,
    SESSIONS,
    END_SESSIONS,
    REVOKE_SESSION,
    PORTAL,
)

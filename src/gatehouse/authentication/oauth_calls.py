"""The Authentication service's OAuth 2.0 / OpenID Connect calls, each declared once
(:class:`gatehouse.internal.calls.Call`), with their wire formats: the service's routes
(:mod:`gatehouse.authentication.oauth_service`) and the Policy service's provider pages
(:mod:`gatehouse.policy.oauth_flow`) are made from them.

A leaf module beside :mod:`gatehouse.authentication.calls` (whose field checks it shares).
Roles: Policy services only. The Policy service is the only browser- and client-facing layer
(relayed by the Access Points); it holds no signing key and no OAuth2 DB access, so every
protocol step is one of these calls.

- ``OAUTH_AUTHORIZE``: an authorization request's parameters as the browser sent them, the
  signed-in user (or none) and the user's answer on the consent page. Answered with what the
  portal does next: ``redirect`` (a code or error response to the client, with ``iss``,
  RFC 9207), ``error_page`` (a bad client or redirect URI: never redirected to), ``login``
  (sign in or step up first: ``prompt=login``, ``max_age``, ``acr_values``) or ``consent``.
  Idempotent by ``attempt`` (made by the Policy service per authorization form): a retry on
  another Authentication service answers the same code.
- ``OAUTH_ENDPOINT``: a client's request to the token, introspection, revocation or UserInfo
  endpoint, relayed as it came (method, ``Authorization`` and ``Content-Type``, body, query);
  answered with the HTTP response to relay. Not retry-safe: a code exchange must not run twice.
- ``OAUTH_SESSION_ENDED``: a Gatehouse session ended (logout, revocation): the refresh tokens
  bound to it (``sid``) are revoked.
- ``OAUTH_ID_TOKEN_HINT``: RP-initiated logout's ``id_token_hint``: whose session it names
  (signature checked, expiry not: OpenID Connect RP-Initiated Logout 1.0 §2).
- ``OAUTH_BEARER``: a bearer token presented to a proxied resource (the rule condition
  ``token_scopes_any``): active or not, its scope, client and user (introspection, RFC 7662).
- ``OAUTH_CONSENTS``: a user's remembered consents; with ``revoke``, that client's consent is
  revoked first.

``sid`` is a session's stable hash (:func:`gatehouse.policy.oauth_flow.oauth_sid`), never a
session id: a copy of the OAuth2 DB cannot be replayed as a cookie.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gatehouse.authentication.calls import _attempt, _username
from gatehouse.internal.calls import Call, json_codec
from gatehouse.internal.endpoint import bad_request, string_field
from gatehouse.trust.identity import POLICY

__all__ = [
    "ALL",
    "ENDPOINTS",
    "OAUTH_AUTHORIZE",
    "OAUTH_BEARER",
    "OAUTH_CONSENTS",
    "OAUTH_ENDPOINT",
    "OAUTH_ID_TOKEN_HINT",
    "OAUTH_SESSION_ENDED",
    "AuthorizeAnswer",
    "AuthorizeRequest",
    "BearerAnswer",
    "BearerRequest",
    "Consent",
    "ConsentsAnswer",
    "ConsentsRequest",
    "EndpointAnswer",
    "EndpointRequest",
    "HintAnswer",
    "HintRequest",
    "OAuthUser",
    "SessionEnded",
    "SessionEndedAnswer",
]

SERVICE = "authentication"
#: A relayed client request (a token request with a long PKCE verifier, a JWT assertion).
MAX_BODY = 64 * 1024
#: Parameters of one authorization request.
MAX_PARAMS = 64
MAX_PARAM = 4096
#: A session's hash as Policy sends it.
SID = re.compile(r"^[0-9a-f]{32,64}\Z")
MAX_TOKEN = 8192
MAX_CLIENT_ID = 128

Endpoint = Literal["token", "introspect", "revoke", "userinfo"]
ENDPOINTS: tuple[str, ...] = get_args(Endpoint)
Kind = Literal["redirect", "error_page", "login", "consent"]
KINDS: tuple[str, ...] = get_args(Kind)
ConsentAnswer = Literal["granted", "denied"]
#: The request headers a relayed endpoint call carries (lower case).
RELAYED_HEADERS = ("authorization", "content-type", "accept", "dpop")


def _strings(data: dict[str, Any], name: str, limit: int = 64) -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list) or len(value) > limit:
        raise bad_request(f"{name}: must be a list of at most {limit} strings")
    if not all(isinstance(item, str) for item in value):
        raise bad_request(f"{name}: must be a list of strings")
    return tuple(value)


def _int(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name}: must be an integer")
    return value


def _sid(data: dict[str, Any]) -> str:
    sid = string_field(data, "sid")
    if not SID.match(sid):
        raise bad_request("sid: must be 32-64 lowercase hex digits (a session's hash)")
    return sid


def _str_map(data: dict[str, Any], name: str, limit: int, each: int) -> dict[str, str]:
    value = data.get(name, {})
    if not isinstance(value, dict) or len(value) > limit:
        raise bad_request(f"{name}: must be an object of at most {limit} strings")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 128 or len(item) > each:
            raise bad_request(f"{name}.{str(key)[:40]}: must be a string of at most {each}")
    return dict(value)


# --- POST /internal/v1/oauth/authorize ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OAuthUser:
    """The signed-in user, as the portal's session says: ``auth_time`` (epoch seconds) is
    when the session signed in, ``amr`` the methods it ran, ``sid`` its stable hash."""

    username: str
    auth_time: int
    amr: tuple[str, ...]
    sid: str


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    query: dict[str, str]
    user: OAuthUser | None
    consent: ConsentAnswer | None
    attempt: str


def parse_user(value: object) -> OAuthUser | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request("user: must be null or an object")
    return OAuthUser(
        _username(value), _int(value, "auth_time"), _strings(value, "amr"), _sid(value)
    )


def parse_authorize(data: dict[str, Any]) -> AuthorizeRequest:
    """``{"query", "user", "consent", "attempt"}``."""
    consent = data.get("consent")
    if consent is not None and consent not in ("granted", "denied"):
        raise bad_request('consent: "granted", "denied" or null')
    return AuthorizeRequest(
        _str_map(data, "query", MAX_PARAMS, MAX_PARAM),
        parse_user(data.get("user")),
        consent,
        _attempt(data),
    )


def render_authorize(request: AuthorizeRequest) -> dict[str, object]:
    user = request.user
    return {
        "query": request.query,
        "user": None
        if user is None
        else {
            "username": user.username,
            "auth_time": user.auth_time,
            "amr": list(user.amr),
            "sid": user.sid,
        },
        "consent": request.consent,
        "attempt": request.attempt,
    }


@dataclass(frozen=True, slots=True)
class AuthorizeAnswer:
    """What the portal does next (see the module docstring); the fields of ``kind`` only."""

    kind: Kind
    #: ``redirect``: where to (the client's redirect URI with the code or error, and ``iss``).
    location: str = ""
    #: ``error_page``: the page's status and the error (RFC 6749 §4.1.2.1 codes).
    status: int = 400
    error: str = ""
    description: str = ""
    #: ``login``: the methods the session must have run (``acr_values``), and whether to
    #: sign in again whatever the session (``prompt=login``, ``max_age`` exceeded).
    methods: tuple[str, ...] = ()
    force: bool = False
    #: ``consent``: what to ask the user.
    client_name: str = ""
    scopes: tuple[str, ...] = ()


def parse_authorize_answer(data: dict[str, Any]) -> AuthorizeAnswer:
    kind = data.get("kind")
    if kind == "redirect":
        return AuthorizeAnswer("redirect", location=string_field(data, "location"))
    if kind == "error_page":
        return AuthorizeAnswer(
            "error_page",
            status=_int(data, "status"),
            error=string_field(data, "error"),
            description=str(data.get("description") or ""),
        )
    if kind == "login":
        return AuthorizeAnswer(
            "login", methods=_strings(data, "methods"), force=data.get("force") is True
        )
    if kind == "consent":
        return AuthorizeAnswer(
            "consent",
            client_name=string_field(data, "client_name"),
            scopes=_strings(data, "scopes"),
        )
    raise ValueError(f"kind: {kind!r}")


def render_authorize_answer(answer: AuthorizeAnswer) -> dict[str, object]:
    if answer.kind == "redirect":
        return {"kind": "redirect", "location": answer.location}
    if answer.kind == "error_page":
        return {
            "kind": "error_page",
            "status": answer.status,
            "error": answer.error,
            "description": answer.description,
        }
    if answer.kind == "login":
        return {"kind": "login", "methods": list(answer.methods), "force": answer.force}
    return {"kind": "consent", "client_name": answer.client_name, "scopes": list(answer.scopes)}


# --- POST /internal/v1/oauth/endpoint ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointRequest:
    """A client's request as it came: ``headers`` has lower-case names
    (:data:`RELAYED_HEADERS` only), ``body`` the form as text, ``query`` the raw query."""

    endpoint: Endpoint
    method: str
    headers: dict[str, str] = field(repr=False)
    body: str = field(repr=False)
    query: str = field(default="", repr=False)


def parse_endpoint(data: dict[str, Any]) -> EndpointRequest:
    endpoint = data.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise bad_request(f"endpoint: one of {', '.join(ENDPOINTS)}")
    method = string_field(data, "method")
    if method not in ("GET", "POST"):
        raise bad_request("method: GET or POST")
    headers = _str_map(data, "headers", len(RELAYED_HEADERS), MAX_TOKEN)
    unknown = set(headers) - set(RELAYED_HEADERS)
    if unknown:
        raise bad_request(f"headers: not relayed: {sorted(unknown)}")
    return EndpointRequest(
        endpoint, method, headers, string_field(data, "body"), str(data.get("query") or "")
    )


def render_endpoint(request: EndpointRequest) -> dict[str, object]:
    return {
        "endpoint": request.endpoint,
        "method": request.method,
        "headers": request.headers,
        "body": request.body,
        "query": request.query,
    }


@dataclass(frozen=True, slots=True)
class EndpointAnswer:
    """The HTTP response to relay to the client."""

    status: int
    headers: dict[str, str]
    body: str = field(repr=False)


def parse_endpoint_answer(data: dict[str, Any]) -> EndpointAnswer:
    status = _int(data, "status")
    if not 200 <= status <= 599:
        raise ValueError(f"status: {status}")
    return EndpointAnswer(
        status, _str_map(data, "headers", 32, MAX_TOKEN), string_field(data, "body")
    )


def render_endpoint_answer(answer: EndpointAnswer) -> dict[str, object]:
    return {"status": answer.status, "headers": answer.headers, "body": answer.body}


# --- POST /internal/v1/oauth/session-ended -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionEnded:
    sid: str


@dataclass(frozen=True, slots=True)
class SessionEndedAnswer:
    """How many refresh tokens (families) were revoked."""

    revoked: int


# --- POST /internal/v1/oauth/id-token-hint -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class HintRequest:
    id_token_hint: str = field(repr=False)
    client_id: str | None = None


def parse_hint(data: dict[str, Any]) -> HintRequest:
    hint = string_field(data, "id_token_hint")
    if len(hint) > MAX_TOKEN:
        raise bad_request(f"id_token_hint: longer than {MAX_TOKEN} characters")
    client_id = data.get("client_id")
    if client_id is not None and (not isinstance(client_id, str) or len(client_id) > 128):
        raise bad_request("client_id: null or a string of at most 128 characters")
    return HintRequest(hint, client_id)


@dataclass(frozen=True, slots=True)
class HintAnswer:
    """``valid``: an ID token this provider signed (for ``client_id`` when given); then whose
    session it names. Not valid: every other field empty."""

    valid: bool
    client_id: str = ""
    sid: str = ""
    username: str = ""


def parse_hint_answer(data: dict[str, Any]) -> HintAnswer:
    if data.get("valid") is not True:
        return HintAnswer(False)
    sid = data.get("sid")
    return HintAnswer(
        True,
        string_field(data, "client_id"),
        sid if isinstance(sid, str) else "",
        string_field(data, "username"),
    )


def render_hint_answer(answer: HintAnswer) -> dict[str, object]:
    if not answer.valid:
        return {"valid": False}
    return {
        "valid": True,
        "client_id": answer.client_id,
        "sid": answer.sid,
        "username": answer.username,
    }


# --- POST /internal/v1/oauth/bearer ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BearerRequest:
    token: str = field(repr=False)


def parse_bearer(data: dict[str, Any]) -> BearerRequest:
    # A token too long is no token of ours: inactive, not a 400 (the rule just does not match).
    return BearerRequest(string_field(data, "token")[: MAX_TOKEN + 1])


@dataclass(frozen=True, slots=True)
class BearerAnswer:
    """RFC 7662's core: inactive, or active with its scope (space-separated), client, user
    (none for ``client_credentials``) and expiry (epoch seconds)."""

    active: bool
    scope: str = ""
    client_id: str = ""
    username: str | None = None
    exp: int = 0

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self.scope.split())


def parse_bearer_answer(data: dict[str, Any]) -> BearerAnswer:
    if data.get("active") is not True:
        return BearerAnswer(False)
    username = data.get("username")
    return BearerAnswer(
        True,
        str(data.get("scope") or ""),
        str(data.get("client_id") or ""),
        username if isinstance(username, str) else None,
        _int(data, "exp"),
    )


def render_bearer_answer(answer: BearerAnswer) -> dict[str, object]:
    if not answer.active:
        return {"active": False}
    return {
        "active": True,
        "scope": answer.scope,
        "client_id": answer.client_id,
        "username": answer.username,
        "exp": answer.exp,
    }


# --- POST /internal/v1/oauth/consents ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConsentsRequest:
    username: str
    #: Revoke this client's consent first.
    revoke: str | None = None


def parse_consents(data: dict[str, Any]) -> ConsentsRequest:
    revoke = data.get("revoke")
    if revoke is not None and (not isinstance(revoke, str) or len(revoke) > MAX_CLIENT_ID):
        raise bad_request(f"revoke: null or a client id of at most {MAX_CLIENT_ID} characters")
    return ConsentsRequest(_username(data), revoke)


@dataclass(frozen=True, slots=True)
class Consent:
    client_id: str
    client_name: str
    scopes: tuple[str, ...]
    granted_at: int


@dataclass(frozen=True, slots=True)
class ConsentsAnswer:
    consents: tuple[Consent, ...]
    #: With ``revoke``: whether a consent was revoked.
    revoked: bool = False


def parse_consents_answer(data: dict[str, Any]) -> ConsentsAnswer:
    items = data.get("consents")
    if not isinstance(items, list):
        raise ValueError("consents: must be a list")
    consents = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("consents: must be objects")
        consents.append(
            Consent(
                string_field(item, "client_id"),
                str(item.get("client_name") or item["client_id"]),
                _strings(item, "scopes"),
                _int(item, "granted_at"),
            )
        )
    return ConsentsAnswer(tuple(consents), data.get("revoked") is True)


def render_consents_answer(answer: ConsentsAnswer) -> dict[str, object]:
    return {
        "consents": [
            {
                "client_id": c.client_id,
                "client_name": c.client_name,
                "scopes": list(c.scopes),
                "granted_at": c.granted_at,
            }
            for c in answer.consents
        ],
        "revoked": answer.revoked,
    }


# --- the declarations --------------------------------------------------------------------------

AUTHORIZE_REQUEST = json_codec(
    parse_authorize,
    render_authorize,
    '`{"query": {..}, "user": {"username", "auth_time", "amr", "sid"}|null, '
    '"consent": "granted"|"denied"|null, "attempt"}`',
    MAX_BODY,
)
AUTHORIZE_ANSWER = json_codec(
    parse_authorize_answer,
    render_authorize_answer,
    '`{"kind": "redirect", "location"}` / `{"kind": "error_page", "status", "error", '
    '"description"}` / `{"kind": "login", "methods", "force"}` / `{"kind": "consent", '
    '"client_name", "scopes"}`',
)
ENDPOINT_REQUEST = json_codec(
    parse_endpoint,
    render_endpoint,
    '`{"endpoint": "token"|"introspect"|"revoke"|"userinfo", "method", "headers", "body", '
    '"query"}`',
    2 * MAX_BODY,
)
ENDPOINT_ANSWER = json_codec(
    parse_endpoint_answer, render_endpoint_answer, '`{"status", "headers", "body"}`', 2 * MAX_BODY
)
SESSION_ENDED_REQUEST = json_codec(
    lambda data: SessionEnded(_sid(data)), lambda r: {"sid": r.sid}, '`{"sid"}`'
)
SESSION_ENDED_ANSWER = json_codec(
    lambda data: SessionEndedAnswer(_int(data, "revoked")),
    lambda a: {"revoked": a.revoked},
    '`{"revoked"}`',
)
HINT_REQUEST = json_codec(
    parse_hint,
    lambda r: {"id_token_hint": r.id_token_hint, "client_id": r.client_id},
    '`{"id_token_hint", "client_id"?}`',
    MAX_BODY,
)
HINT_ANSWER = json_codec(
    parse_hint_answer,
    render_hint_answer,
    '`{"valid": true, "client_id", "sid", "username"}` / `{"valid": false}`',
)
BEARER_REQUEST = json_codec(parse_bearer, lambda r: {"token": r.token}, '`{"token"}`', MAX_BODY)
BEARER_ANSWER = json_codec(
    parse_bearer_answer,
    render_bearer_answer,
    '`{"active": true, "scope", "client_id", "username", "exp"}` / `{"active": false}`',
)
CONSENTS_REQUEST = json_codec(
    parse_consents,
    lambda r: {"username": r.username, "revoke": r.revoke},
    '`{"username", "revoke"?}`',
)
CONSENTS_ANSWER = json_codec(
    parse_consents_answer,
    render_consents_answer,
    '`{"consents": [{"client_id", "client_name", "scopes", "granted_at"}], "revoked"}`',
)

OAUTH_AUTHORIZE = Call(
    SERVICE,
    "oauth_authorize",
    "POST",
    "/internal/v1/oauth/authorize",
    AUTHORIZE_REQUEST,
    AUTHORIZE_ANSWER,
    roles=frozenset({POLICY}),
    # Idempotent by attempt: a retry answers the code the first one issued.
    retry_safe=True,
    summary="an authorization request: a code or error redirect, an error page, login or consent",
    max_body=MAX_BODY,
)
OAUTH_ENDPOINT = Call(
    SERVICE,
    "oauth_endpoint",
    "POST",
    "/internal/v1/oauth/endpoint",
    ENDPOINT_REQUEST,
    ENDPOINT_ANSWER,
    roles=frozenset({POLICY}),
    # A code exchange or a refresh must not run twice (the second would revoke the family).
    retry_safe=False,
    summary="a client's token, introspection, revocation or UserInfo request, relayed as it came",
    max_body=2 * MAX_BODY,
)
OAUTH_SESSION_ENDED = Call(
    SERVICE,
    "oauth_session_ended",
    "POST",
    "/internal/v1/oauth/session-ended",
    SESSION_ENDED_REQUEST,
    SESSION_ENDED_ANSWER,
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="a Gatehouse session ended: revoke the refresh tokens bound to it",
)
OAUTH_ID_TOKEN_HINT = Call(
    SERVICE,
    "oauth_id_token_hint",
    "POST",
    "/internal/v1/oauth/id-token-hint",
    HINT_REQUEST,
    HINT_ANSWER,
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="whose session an end_session request's id_token_hint names",
    max_body=MAX_BODY,
)
OAUTH_BEARER = Call(
    SERVICE,
    "oauth_bearer",
    "POST",
    "/internal/v1/oauth/bearer",
    BEARER_REQUEST,
    BEARER_ANSWER,
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="a bearer token presented to a proxied resource: active, scope, client, user",
    max_body=MAX_BODY,
)
OAUTH_CONSENTS = Call(
    SERVICE,
    "oauth_consents",
    "POST",
    "/internal/v1/oauth/consents",
    CONSENTS_REQUEST,
    CONSENTS_ANSWER,
    roles=frozenset({POLICY}),
    retry_safe=True,
    summary="a user's remembered consents (and revoke one)",
)

ALL: tuple[Call[Any, Any], ...] = (
    OAUTH_AUTHORIZE,
    OAUTH_ENDPOINT,
    OAUTH_SESSION_ENDED,
    OAUTH_ID_TOKEN_HINT,
    OAUTH_BEARER,
    OAUTH_CONSENTS,
)

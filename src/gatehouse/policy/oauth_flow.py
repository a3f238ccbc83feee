"""The OAuth 2.0 / OpenID Connect provider's browser- and client-facing side (issue 17).

The Policy service is the only layer browsers and clients reach (through the Access Points);
it holds no signing key and no OAuth2 DB access: every protocol step is an internal call to
the Authentication services (:mod:`gatehouse.authentication.oauth_calls`), which run Authlib's
grants. What this module adds is the portal's part:

- ``{P}oauth2/authorize``: the browser's session (from the cookie) goes with the request; the
  answer says what next: a redirect to the client (code or error, with ``iss``), an error page
  (a bad client or redirect URI is never redirected to), the portal's sign-in with ``rd`` back
  here (no session, ``prompt=login``, ``max_age`` exceeded, or a step-up for ``acr_values``),
  or the consent page (a CSRF-protected form posting to ``{P}oauth2/consent``).
- ``{P}oauth2/token|introspect|revoke|userinfo``: relayed as they came; Authlib decides.
- ``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server``
  (RFC 8414) from the view; ``{P}oauth2/jwks`` the view's public key set.
- ``{P}oauth2/end_session`` (RP-initiated logout): ends the Gatehouse session like the
  portal's sign-out (every Access Point drops it within a second) and returns only to a
  registered ``post_logout_redirect_uri``. Without a valid ``id_token_hint`` naming this
  browser's session, the user confirms first (a page elsewhere cannot sign anyone out).
- ``{P}oauth2/consents``: the user's remembered consents, each revocable.

Every page carries the portal's headers (``X-Frame-Options: DENY``, CSP
``frame-ancestors 'none'``, ``no-store``). A Gatehouse session that ends (logout, revocation,
a new sign-in; not a step-up or a time-out: :data:`KEEPS_TOKENS`) revokes the refresh tokens
bound to it (``OAUTH_SESSION_ENDED``), in the background so a sign-out never waits for it.

``sid``: a session's id changes when it steps up (:meth:`SessionStore.rotate`), so tokens are
bound to :func:`oauth_sid`, a hash of the user and the session's creation time, which a
rotation keeps. It is never the session id nor its stored hash.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.authentication.oauth_calls import (
    OAUTH_AUTHORIZE,
    OAUTH_CONSENTS,
    OAUTH_ENDPOINT,
    OAUTH_ID_TOKEN_HINT,
    OAUTH_SESSION_ENDED,
    RELAYED_HEADERS,
    AuthorizeAnswer,
    AuthorizeRequest,
    ConsentAnswer,
    ConsentsRequest,
    EndpointRequest,
    HintAnswer,
    HintRequest,
    OAuthUser,
    SessionEnded,
)
from gatehouse.config.oauth import PolicyOAuth, PublicClient
from gatehouse.internal.calls import CallRefused, read_body
from gatehouse.internal.client import FailoverClient, InternalCallError
from gatehouse.internal.errors import ServiceError
from gatehouse.oauth2.discovery import metadata
from gatehouse.oauth2.settings import ProviderSettings
from gatehouse.policy.csrf import COOKIE_NAME as CSRF_COOKIE
from gatehouse.policy.csrf import FIELD_NAME as CSRF_FIELD
from gatehouse.policy.portal import Origin, Portal, page_headers
from gatehouse.policy.sessions import SessionRecord, session_cookie

log = logging.getLogger(__name__)

__all__ = [
    "ENDPOINT_PATHS",
    "WELL_KNOWN",
    "OAuthFlow",
    "SessionEndNotifier",
    "discovery",
    "oauth_sid",
]

#: The discovery documents the Access Points relay to the portal (exact paths).
WELL_KNOWN = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")
#: Relayed client endpoints under ``{P}oauth2/``.
ENDPOINT_PATHS = ("token", "introspect", "revoke", "userinfo")
#: The biggest relayed client request body.
MAX_BODY = 64 * 1024
#: Session ends that keep the refresh tokens: the session goes on under a new id (step-up),
#: a sign-in under way finished (it never had tokens), or the session timed out (refreshing
#: a token does not use the browser's session, so an idle browser must not end the client's
#: access; the refresh token's own lifetime bounds it). Everything else (sign-out,
#: end_session, revocation, account changes, a new sign-in in that browser) revokes them.
KEEPS_TOKENS = frozenset({"rotated", "step_up", "signed_in", "expired"})
#: Response headers a relayed endpoint answer may carry.
ANSWER_HEADERS = frozenset({"content-type", "cache-control", "pragma", "www-authenticate"})
#: The methods acr_values may ask for, as the portal's ``step`` marker names them.
STEPS = ("otp", "email_otp", "sms_otp")
#: What the consent page says of well-known scopes.
SCOPE_TEXT = {
    "openid": "Know who you are (your user name)",
    "profile": "See your name",
    "email": "See your e-mail address",
    "offline_access": "Stay signed in to it after you sign out of this browser",
}
JWKS_MAX_AGE = 300
DISCOVERY_MAX_AGE = 300
JSON_NO_STORE = {
    "Content-Type": "application/json",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}
#: The answers to a relayed request that never reached an Authentication service (shared:
#: read, never changed).
TOO_LARGE = (
    413,
    JSON_NO_STORE,
    orjson.dumps({"error": "invalid_request", "error_description": "body too large"}),
)
UNAVAILABLE = (
    503,
    {**JSON_NO_STORE, "Retry-After": "5"},
    orjson.dumps({"error": "temporarily_unavailable", "error_description": "try again later"}),
)


def oauth_sid(record: SessionRecord) -> str:
    """The session's stable hash for the OAuth2 DB (see the module docstring)."""
    material = f"gatehouse-oauth-sid\0{record.username}\0{record.created_at.isoformat()}"
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def oauth_user(record: SessionRecord) -> OAuthUser:
    return OAuthUser(
        record.username,
        int(record.created_at.timestamp()),
        tuple(record.methods),
        oauth_sid(record),
    )


def discovery(settings: PolicyOAuth, prefix: str) -> dict[str, Any]:
    """The provider metadata (OIDC Discovery 1.0 §3 and RFC 8414: one document) for the
    issuer and portal prefix of this view."""
    provider = ProviderSettings(issuer=settings.issuer, portal_prefix=prefix)
    return metadata(provider, settings.algorithms)


def client_origins(settings: PolicyOAuth) -> frozenset[str]:
    """The web origins (``scheme://host[:port]``) of the clients' redirect URIs."""
    origins = set()
    for client in settings.clients:
        for uri in client.redirect_uris:
            parts = urlsplit(uri)
            if parts.scheme in ("http", "https") and parts.netloc:
                origins.add(f"{parts.scheme}://{parts.netloc}".lower())
    return frozenset(origins)


def _see_other(location: str) -> Response:
    return Response(status_code=303, headers={**page_headers(), "Location": location})


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _single(pairs: Sequence[tuple[str, str]]) -> dict[str, str] | str:
    """The parameters, each once; the name of one sent twice (RFC 6749 §3.1: an error)."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            return name
        params[name] = value
    return params


class Caller(Protocol):
    """The Authentication services' client of a configuration version, held while in use
    (:class:`gatehouse.policy.service.AuthServiceChecker`)."""

    client: FailoverClient

    def in_use(self) -> AbstractContextManager[None]: ...


class SessionEndNotifier:
    """Tells the Authentication services that sessions ended, in the background. Not
    durable: with every Authentication service down the revocation is logged as not done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def ended(self, caller: Caller, records: Sequence[SessionRecord], reason: str) -> None:
        if reason in KEEPS_TOKENS:
            return
        sids = {oauth_sid(r) for r in records if r.pending is None}
        for sid in sids:
            task = asyncio.create_task(self._send(caller, sid))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, caller: Caller, sid: str) -> None:
        try:
            # Held, so a new configuration closes this client only once the call is done.
            with caller.in_use():
                answer = await OAUTH_SESSION_ENDED.invoke(caller.client, SessionEnded(sid))
        except (InternalCallError, CallRefused, ValueError) as exc:
            log.warning("refresh tokens of an ended session not revoked: %s", exc)
        except Exception:
            log.exception("telling the Authentication services that a session ended failed")
        else:
            if answer.revoked:
                log.info("a session ended: %d refresh token(s) bound to it revoked", answer.revoked)

    async def drain(self, timeout: float = 2.0) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


@dataclass
class OAuthFlow:
    """The provider's pages and relays for one configuration version."""

    portal: Portal
    client: FailoverClient
    settings: PolicyOAuth

    @property
    def prefix(self) -> str:
        return self.portal.settings.prefix

    # helpers -----------------------------------------------------------------------------

    async def _session(self, request: Request, origin: Origin) -> SessionRecord | None:
        portal = self.portal
        cookie = session_cookie(request.headers, origin.cookie(portal.settings.cookie_name))
        if cookie is None:
            return None
        return await portal.sessions.lookup(cookie, portal.clock(), cached=False)

    def _error(self, status: int, error: str, description: str) -> Response:
        text = f"{description} ({error})" if description else error
        return self.portal.pages.error(status, "Sign-in request refused", text)

    def _unavailable(self) -> Response:
        return self.portal.pages.error(
            503,
            "Sign-in unavailable",
            "Signing in to this application is not possible right now. Please try again in a "
            "few minutes.",
        )

    def _form_page(
        self, request: Request, origin: Origin, template: str, heading: str, **context: object
    ) -> Response:
        portal = self.portal
        token = portal.csrf.token_for(request.cookies.get(origin.cookie(CSRF_COOKIE)))
        response = portal.pages.render(
            template, heading, 200, csrf=portal.csrf.form_value(token, origin.client_ip), **context
        )
        portal._csrf_cookie(response, token, origin)
        return response

    async def _authorize_call(self, request: AuthorizeRequest) -> AuthorizeAnswer | Response:
        try:
            return await OAUTH_AUTHORIZE.invoke(self.client, request)
        except InternalCallError as exc:
            log.warning("authorization request: no Authentication service answered: %s", exc)
            return self._unavailable()
        except CallRefused as exc:
            log.warning("authorization request refused by Authentication: %s", exc.message)
            return self._error(400, "invalid_request", exc.message)

    # {P}oauth2/authorize ------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        """GET or POST (form-encoded parameters, OIDC Core §3.1.2.1) ``{P}oauth2/authorize``."""
        origin = self.portal.origin(request)
        if request.method == "POST":
            form = await self.portal._form(request)
            if form is None:
                return self._error(400, "invalid_request", "send the parameters as a form")
            pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        else:
            pairs = list(request.query_params.multi_items())
        params = _single(pairs)
        if isinstance(params, str):
            return self._error(400, "invalid_request", f"parameter {params[:40]!r} sent twice")
        record = await self._session(request, origin)
        user = oauth_user(record) if record is not None else None
        answer = await self._authorize_call(
            AuthorizeRequest(params, user, None, secrets.token_urlsafe(24))
        )
        if isinstance(answer, Response):
            return answer
        return self._answer(request, origin, params, answer, record)

    def _answer(
        self,
        request: Request,
        origin: Origin,
        params: dict[str, str],
        answer: AuthorizeAnswer,
        record: SessionRecord | None,
    ) -> Response:
        if answer.kind == "redirect":
            return _see_other(answer.location)
        if answer.kind == "error_page":
            return self._error(answer.status, answer.error, answer.description)
        if answer.kind == "login":
            return _see_other(self._login_url(params, answer, record))
        scopes = [(scope, SCOPE_TEXT.get(scope, scope)) for scope in answer.scopes]
        return self._form_page(
            request,
            origin,
            "oauth_consent.html",
            "Allow access?",
            client_name=answer.client_name,
            scopes=scopes,
            params_text=urlencode(params),
            attempt=secrets.token_urlsafe(24),
            username=(record.display_name or record.username) if record else "",
        )

    def _login_url(
        self, params: dict[str, str], answer: AuthorizeAnswer, record: SessionRecord | None
    ) -> str:
        """The portal's sign-in, back to this authorization request. After a forced sign-in
        (``prompt=login``, ``max_age``) the request comes back without ``prompt=login`` and
        ``max_age``, so the fresh session answers it instead of asking again (``max_age=0``
        would ask forever). That takes nothing from the client: anyone at the browser can edit
        the URL as well, which is why OIDC Core §3.1.2.1 has the client check ``auth_time``
        in the ID token, and the ID token carries the fresh sign-in's ``auth_time``."""
        back = dict(params)
        if answer.force:
            prompts = [p for p in back.get("prompt", "").split() if p != "login"]
            if prompts:
                back["prompt"] = " ".join(prompts)
            else:
                back.pop("prompt", None)
            back.pop("max_age", None)
        rd = f"{self.prefix}oauth2/authorize?{urlencode(back)}"
        url = f"{self.prefix}login?rd={quote(rd, safe='')}"
        if answer.force:
            # The sign-in form whatever the session; a second factor the request asks for
            # comes next as a step-up of the fresh session.
            return url
        step = next((m for m in answer.methods if m in STEPS), None)
        return f"{url}&step={step}" if step else url

    async def consent(self, request: Request) -> Response:
        """POST ``{P}oauth2/consent``: the user's answer on the consent page."""
        portal = self.portal
        origin = portal.origin(request)
        form = await portal._form(request)
        if form is None:
            return portal._forbidden(f"{self.prefix}login")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        params = _single(parse_qsl(fields.get("request", ""), keep_blank_values=True))
        if isinstance(params, str) or not params:
            return self._error(400, "invalid_request", "the consent form was altered")
        back = f"{self.prefix}oauth2/authorize?{urlencode(params)}"
        if not portal._csrf_ok(request, fields.get(CSRF_FIELD), origin):
            return portal._forbidden(back)
        record = await self._session(request, origin)
        if record is None:
            return _see_other(back)  # signed out meanwhile: start again (sign-in first)
        decision: ConsentAnswer = "granted" if fields.get("decision") == "allow" else "denied"
        attempt = fields.get("attempt") or secrets.token_urlsafe(24)
        if not 16 <= len(attempt) <= 64:
            attempt = secrets.token_urlsafe(24)
        answer = await self._authorize_call(
            AuthorizeRequest(params, oauth_user(record), decision, attempt)
        )
        if isinstance(answer, Response):
            return answer
        return self._answer(request, origin, params, answer, record)

    # client endpoints ---------------------------------------------------------------------

    def _cors(self, request: Request) -> dict[str, str]:
        return self.cors(request.headers.get("origin"))

    def cors(self, origin: str | None) -> dict[str, str]:
        """CORS for a browser-based client (a public client's single-page app): its origin is
        allowed when it is the origin of one of a registered client's redirect URIs."""
        if not origin or origin not in self.origins:
            return {"Vary": "Origin"}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": "WWW-Authenticate",
            "Vary": "Origin",
        }

    @functools.cached_property
    def origins(self) -> frozenset[str]:
        return client_origins(self.settings)

    def preflight_headers(self, origin: str | None, endpoint: str) -> dict[str, str]:
        """``OPTIONS`` for a client endpoint (CORS preflight, answered 204): allowed origins
        only."""
        headers = self.cors(origin)
        if "Access-Control-Allow-Origin" in headers:
            methods = "GET, POST" if endpoint == "userinfo" else "POST"
            headers |= {
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": "Authorization, Content-Type, DPoP",
                "Access-Control-Max-Age": "600",
            }
        return headers

    async def preflight(self, request: Request, endpoint: str) -> Response:
        headers = self.preflight_headers(request.headers.get("origin"), endpoint)
        return Response(status_code=204, headers=headers)

    async def relay(self, request: Request, endpoint: str) -> Response:
        """A client's request to ``{P}oauth2/<endpoint>``, relayed as it came (the Policy
        service serves these before its router: :mod:`gatehouse.policy.oauth_relay`; this is
        the same relay as a Starlette endpoint)."""
        if request.method == "OPTIONS":
            return await self.preflight(request, endpoint)
        try:
            body = await read_body(request, MAX_BODY)
        except ServiceError:
            status, headers, data = TOO_LARGE
        else:
            relayed = {n: v for n in RELAYED_HEADERS if (v := request.headers.get(n))}
            status, headers, data = await self.relay_call(
                endpoint, request.method, relayed, body, request.url.query
            )
        response = Response(data, status_code=status, headers=headers)
        response.headers.update(self._cors(request))
        return response

    async def relay_call(
        self, endpoint: str, method: str, headers: dict[str, str], body: bytes, query: str
    ) -> tuple[int, dict[str, str], bytes]:
        """The answer to relay for a client's request (``headers``: the
        :data:`RELAYED_HEADERS` it had): status, headers and body."""
        relayed = EndpointRequest(
            endpoint,  # type: ignore[arg-type]
            method,
            headers,
            body.decode("utf-8", "replace"),
            query,
        )
        try:
            answer = await OAUTH_ENDPOINT.invoke(self.client, relayed)
        except InternalCallError as exc:
            log.warning("%s request: no Authentication service answered: %s", endpoint, exc)
            return UNAVAILABLE
        except CallRefused as exc:
            error = {"error": "invalid_request", "error_description": exc.message}
            return 400, dict(JSON_NO_STORE), orjson.dumps(error)
        out = {k: v for k, v in answer.headers.items() if k.lower() in ANSWER_HEADERS}
        out.setdefault("Cache-Control", "no-store")
        return answer.status, out, answer.body.encode()

    async def jwks(self, request: Request) -> Response:
        return Response(
            orjson.dumps(self.settings.jwks),
            media_type="application/json",
            # Public data a browser-based client may fetch from its own origin.
            headers={
                "Cache-Control": f"public, max-age={JWKS_MAX_AGE}",
                "Access-Control-Allow-Origin": "*",
            },
        )

    async def well_known(self, request: Request) -> Response:
        return Response(
            orjson.dumps(discovery(self.settings, self.prefix)),
            media_type="application/json",
            headers={
                "Cache-Control": f"public, max-age={DISCOVERY_MAX_AGE}",
                "Access-Control-Allow-Origin": "*",
            },
        )

    # {P}oauth2/end_session ----------------------------------------------------------------

    async def end_session(self, request: Request) -> Response:
        """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0)."""
        portal = self.portal
        origin = portal.origin(request)
        confirmed = False
        if request.method == "POST":
            form = await portal._form(request)
            if form is None:
                return self._error(400, "invalid_request", "send the parameters as a form")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            if CSRF_FIELD in fields:
                if not portal._csrf_ok(request, fields.get(CSRF_FIELD), origin):
                    return portal._forbidden(f"{self.prefix}logout")
                confirmed = fields.get("confirm") == "yes"
        else:
            fields = dict(request.query_params)
        hint_text = fields.get("id_token_hint") or ""
        client_id = fields.get("client_id") or None
        hint: HintAnswer | None = None
        if hint_text:
            try:
                hint = await OAUTH_ID_TOKEN_HINT.invoke(
                    self.client, HintRequest(hint_text, client_id)
                )
            except InternalCallError as exc:
                log.warning("end_session: no Authentication service answered: %s", exc)
                return self._unavailable()
            except CallRefused as exc:
                return self._error(400, "invalid_request", exc.message)
            if not hint.valid:
                return self._error(400, "invalid_request", "the id_token_hint is not valid")
            if client_id is not None and client_id != hint.client_id:
                return self._error(400, "invalid_request", "client_id does not match the hint")
            client_id = hint.client_id
        client = self.settings.client(client_id) if client_id else None
        target = fields.get("post_logout_redirect_uri") or ""
        if target:
            if client is None:
                return self._error(
                    400,
                    "invalid_request",
                    "post_logout_redirect_uri needs an id_token_hint or client_id",
                )
            if target not in client.post_logout_redirect_uris:
                return self._error(
                    400, "invalid_request", "post_logout_redirect_uri is not registered"
                )
            state = fields.get("state")
            target = _with_query(target, {"state": state} if state else {})
        record = await self._session(request, origin)
        ours = record is not None and hint is not None and hint.sid == oauth_sid(record)
        if record is not None and not (ours or confirmed):
            return self._confirm_page(request, origin, record, client, fields)
        cookie = session_cookie(request.headers, origin.cookie(portal.settings.cookie_name))
        ended = await portal.sessions.end(cookie, "logout") if record is not None else None
        if ended is not None:
            await portal._audit(
                "logout",
                ended.username,
                origin,
                {"session": ended.id_hash, "client_id": client_id or ""},
            )
        if hint is not None and hint.sid and hint.username:
            await self._end_named(hint)
        response = (
            _see_other(target)
            if target
            else portal.pages.render(
                "signed_out.html", "Signed out", login_url=f"{self.prefix}login"
            )
        )
        if origin.cookie(portal.settings.cookie_name) in request.cookies:
            portal._session_cookie(response, "", origin)
        return response

    async def _end_named(self, hint: HintAnswer) -> None:
        """End the hint's session wherever it is (another browser of the same user)."""
        sessions = self.portal.sessions
        live = await sessions.live(self.portal.clock(), hint.username)
        hashes = [r.id_hash for r in live if oauth_sid(r) == hint.sid]
        if hashes:
            await sessions.revoke_hashes(hashes, "logout")

    def _confirm_page(
        self,
        request: Request,
        origin: Origin,
        record: SessionRecord,
        client: PublicClient | None,
        fields: dict[str, str],
    ) -> Response:
        keep = {
            k: v
            for k, v in fields.items()
            if k in ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")
        }
        return self._form_page(
            request,
            origin,
            "oauth_logout.html",
            "Sign out",
            username=record.display_name or record.username,
            client_name=client.display_name if client else "",
            fields=sorted(keep.items()),
        )

    # {P}oauth2/consents -------------------------------------------------------------------

    async def consents(self, request: Request) -> Response:
        """GET: the user's remembered consents; POST: revoke one."""
        portal = self.portal
        origin = portal.origin(request)
        record = await self._session(request, origin)
        if record is None:
            rd = quote(f"{self.prefix}oauth2/consents", safe="")
            return _see_other(f"{self.prefix}login?rd={rd}")
        revoke: str | None = None
        if request.method == "POST":
            form = await portal._form(request)
            fields = {k: v for k, v in (form or {}).items() if isinstance(v, str)}
            if not portal._csrf_ok(request, fields.get(CSRF_FIELD), origin):
                return portal._forbidden(f"{self.prefix}oauth2/consents")
            revoke = fields.get("client_id") or None
        try:
            answer = await OAUTH_CONSENTS.invoke(
                self.client, ConsentsRequest(record.username, revoke)
            )
        except (InternalCallError, CallRefused) as exc:
            log.warning("consents of %r: %s", record.username, exc)
            return self._unavailable()
        if revoke is not None:
            await portal._audit(
                "oauth_consent_revoked", record.username, origin, {"client_id": revoke}
            )
            return _see_other(f"{self.prefix}oauth2/consents")
        items: list[dict[str, Any]] = [
            {
                "client_id": c.client_id,
                "client_name": c.client_name,
                "scopes": list(c.scopes),
                "granted_at": datetime.fromtimestamp(c.granted_at, UTC).strftime(
                    "%Y-%m-%d %H:%M UTC"
                ),
            }
            for c in answer.consents
        ]
        return self._form_page(
            request, origin, "oauth_consents.html", "Applications you allowed", consents=items
        )

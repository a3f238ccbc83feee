"""The provider's entry points, as the Authentication service calls them (contract of
issue 17): :meth:`Provider.authorize`, :meth:`Provider.endpoint`,
:meth:`Provider.session_ended`, :meth:`Provider.check_id_token_hint`, :meth:`Provider.bearer`
and the consents.

Each request is load → decide → commit (see :mod:`gatehouse.oauth2.adapter`): what Authlib
may ask for is read first, Authlib answers from it, and its recorded effects are stored
with one atomic statement each. A code or refresh token that a concurrent request used
first turns this answer into ``invalid_grant`` and revokes the family it produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import OAuth2Error

from gatehouse.oauth2.adapter import (
    NO_STORE,
    HttpAnswer,
    Request,
    Work,
    dumps,
    error_answer,
    parse_form,
    parse_query,
    unprintable,
)
from gatehouse.oauth2.authorize import (
    AuthorizeOutcome,
    Consent,
    ConsentAnswer,
    ErrorPage,
    Login,
    Redirect,
    Refusal,
    consent_need,
    login_need,
)
from gatehouse.oauth2.jwt import ACCESS_TOKEN_TYP, LEEWAY, InvalidJWT, check_claims, verify
from gatehouse.oauth2.models import ATTEMPT_LENGTH
from gatehouse.oauth2.server import ProviderConfig, Server, epoch
from gatehouse.oauth2.settings import acr_of
from gatehouse.oauth2.store import ConsentRow, OAuth2Store, TokenRow, secret_hash
from gatehouse.oauth2.subject import Subject
from gatehouse.oauth2.userinfo import UserSource, claims_for
from gatehouse.oauth2.verified import Verified, VerifiedTokens

ENDPOINTS = ("token", "introspect", "revoke", "userinfo")
AUTHLIB_ENDPOINTS = {"introspect": "introspection", "revoke": "revocation"}


@dataclass(frozen=True, slots=True)
class IdTokenHint:
    """An ID token of ours presented at end_session (expired ones too)."""

    client_id: str
    sid: str | None
    username: str


@dataclass(frozen=True, slots=True)
class BearerInfo:
    """An access token as the bearer rule condition sees it (``active`` False: refuse)."""

    active: bool
    scope: str = ""
    client_id: str = ""
    username: str | None = None
    exp: int = 0


@dataclass(frozen=True, slots=True)
class _Access:
    claims: dict[str, Any]
    row: TokenRow


class Provider:
    def __init__(
        self,
        store: OAuth2Store,
        config: ProviderConfig,
        users: UserSource,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.users = users
        self.clock = clock
        self.server = Server(config)
        self._public = config.keys.public()
        self._verified = VerifiedTokens()

    @property
    def config(self) -> ProviderConfig:
        config: ProviderConfig = self.server.config
        return config

    def configure(self, config: ProviderConfig) -> None:
        """A new configuration version (clients, keys, lifetimes)."""
        self.server.config = config
        self._public = config.keys.public()
        self._verified.clear()

    def jwks(self) -> dict[str, Any]:
        return self.config.keys.jwks()

    def _now(self) -> int:
        return int(self.clock())

    # -- authorization endpoint ------------------------------------------------------------

    async def authorize(
        self,
        query: Mapping[str, str],
        user: Subject | None,
        consent: ConsentAnswer,
        attempt: str,
        *,
        fresh: bool = False,
    ) -> AuthorizeOutcome:
        """Answer an authorization request (its parameters as received) for the signed-in
        ``user`` (None: no session). ``consent`` is the user's answer on the consent page;
        ``fresh`` says the user signed in just now because a ``login`` answer forced it.
        A retry with the same ``attempt`` replaces the code the lost answer carried."""
        if not 0 < len(attempt) <= ATTEMPT_LENGTH:
            raise ValueError(f"attempt: 1 to {ATTEMPT_LENGTH} characters")
        now = self._now()
        settings = self.config.settings
        work = Work(now, extra={"attempt": attempt})
        work.extra["code_expires_at"] = epoch(now + settings.code_lifetime)
        pairs = parse_query(query)
        if (name := unprintable(pairs)) is not None:
            return ErrorPage(400, "invalid_request", f"{name}: not printable ASCII")
        request = Request("GET", settings.url("authorize"), {}, pairs, [], work)
        try:
            grant = self.server.get_consent_grant(request, end_user=user)
        except OAuth2Error as error:
            return self._refused(error)
        except ValueError:  # Authlib refusing to quote a value into an error description
            return ErrorPage(400, "invalid_request", "The request is not valid")
        client, params = request.client, dict(request.payload.data)
        redirect_uri: str = grant.redirect_uri or client.get_default_redirect_uri()
        need = login_need(params, user, now, fresh)
        if need is None and user is not None:
            scopes = tuple(str(request.scope or "").split())
            standing = None
            if client.spec.consent and consent is None:
                standing = await self.store.consent(user.username, client.client_id)
            need = consent_need(
                params, client.spec.display_name, client.spec.consent, scopes, standing, consent
            )
            if need is None and consent == "granted":
                await self.store.grant_consent(user.username, client.client_id, scopes, epoch(now))
        if isinstance(need, Login | Consent):
            return need
        if isinstance(need, Refusal):
            pairs = [("error", need.error), ("error_description", need.description)]
            return self._redirect(redirect_uri, pairs, params.get("state"))
        work.extra["acr"] = acr_of(() if user is None else user.amr)
        answer = _run(
            lambda: self.server.create_authorization_response(request, grant_user=user, grant=grant)
        )
        location = answer.headers.get("Location", "")
        if answer.status != 302 or not location:
            return ErrorPage(answer.status, "server_error", "The request could not be answered")
        if work.new_code is not None:
            await self.store.add_code(work.new_code, epoch(now))
        return Redirect(add_params_to_uri(location, [("iss", settings.issuer)]))

    def _refused(self, error: OAuth2Error) -> AuthorizeOutcome:
        """Authlib refused the request: back to the client only once its redirect URI is
        known to be registered for it (:rfc:`6749#section-4.1.2.1`), else an error page."""
        if error.redirect_uri:
            location = add_params_to_uri(
                error.redirect_uri, [*error.get_body(), ("iss", self.config.settings.issuer)]
            )
            return Redirect(location)
        return ErrorPage(400, str(error.error), str(error.description or error.error))

    def _redirect(
        self, redirect_uri: str, pairs: list[tuple[str, str]], state: str | None
    ) -> Redirect:
        if state:
            pairs.append(("state", state))
        pairs.append(("iss", self.config.settings.issuer))
        return Redirect(add_params_to_uri(redirect_uri, pairs))

    # -- token, introspection, revocation, userinfo ---------------------------------------

    async def endpoint(
        self, name: str, method: str, headers: Mapping[str, str], body: str, query: str = ""
    ) -> HttpAnswer:
        """Answer a client's request to ``token``, ``introspect``, ``revoke`` or
        ``userinfo`` as it came (form ``body``; ``headers`` with Authorization and
        Content-Type)."""
        if name not in ENDPOINTS:
            return error_answer(404, "invalid_request", f"no endpoint {name!r}")
        if name == "userinfo":
            return await self._userinfo(method, headers, body)
        if method.upper() != "POST":
            return error_answer(405, "invalid_request", "Use POST", {"Allow": "POST"})
        work = Work(self._now())
        url = self.config.settings.url(name)
        form = parse_form(headers, body)
        if (bad := unprintable(form)) is not None:
            return error_answer(400, "invalid_request", f"{bad}: not printable ASCII")
        request = Request("POST", url, headers, parse_query(query), form, work)
        if repeated := request.repeated():
            return error_answer(400, "invalid_request", f"'{repeated}' is given more than once")
        if name == "token":
            await self._load_grant(request)
            answer = _run(lambda: self.server.create_token_response(request))
            return await self._commit_grant(work, answer)
        await self._load_presented(request)
        endpoint = AUTHLIB_ENDPOINTS[name]
        answer = _run(lambda: self.server.create_endpoint_response(endpoint, request))
        if name == "revoke" and answer.status == 200 and work.revoke_family:
            await self.store.revoke_family(work.revoke_family, epoch(work.now))
        return answer

    async def _load_grant(self, request: Request) -> None:
        form, work = request.form, request.work
        if form.get("grant_type") == "authorization_code" and form.get("code"):
            work.code = await self.store.find_code(secret_hash(form["code"]))
        elif form.get("grant_type") == "refresh_token" and form.get("refresh_token"):
            work.refresh = await self.store.find_by_refresh(secret_hash(form["refresh_token"]))

    async def _commit_grant(self, work: Work, answer: HttpAnswer) -> HttpAnswer:
        moment = epoch(work.now)
        if answer.status != 200 or work.issued is None:
            if work.revoke_family:  # a code or refresh token presented after its use
                await self.store.revoke_family(work.revoke_family, moment)
            return answer
        if work.consume_code is not None:
            if not await self.store.exchange_code(work.consume_code, work.issued, moment):
                await self.store.revoke_family(work.consume_code, moment)
                return error_answer(400, "invalid_grant", "Invalid 'code' in request.")
        elif work.rotate_from is not None:
            if not await self.store.rotate_refresh(work.rotate_from, work.issued, moment):
                await self.store.revoke_family(work.issued.family_id, moment)
                return error_answer(400, "invalid_grant", "The refresh token was used already.")
        else:
            await self.store.add_tokens(work.issued, moment)
        return answer

    async def _load_presented(self, request: Request) -> None:
        token = request.form.get("token")
        if not token:
            return
        work = request.work
        if token.count(".") == 2:
            access = await self._access(token, check_exp=False)
            if access is not None:
                work.token, work.access_claims = access.row, access.claims
            return
        row = await self.store.find_by_refresh(secret_hash(token))
        if row is not None:
            work.token = row

    async def _access(self, token: str, check_exp: bool = True) -> _Access | None:
        """A JWT access token of ours with its row (revoked ones too), or None. The
        signature is checked once per token (:mod:`gatehouse.oauth2.verified`); the row's
        revocation is read from the DB every time."""
        issuer, now = self.config.settings.issuer, self._now()
        key = secret_hash(token)
        known = self._verified.get(key, now)
        if known is not None:
            try:
                check_claims(known.claims, issuer, issuer, now, check_exp)
            except InvalidJWT:
                return None
            found, revoked_at = await self.store.revocation(known.row.id)
            if not found:
                self._verified.drop(key)
                return None
            cached = known.row
            if cached.revoked_at != revoked_at:  # the cached row is the one read when verified
                cached = replace(cached, revoked_at=revoked_at)
            return _Access(known.claims, cached)
        try:
            claims = verify(
                token,
                self._public,
                typ=ACCESS_TOKEN_TYP,
                issuer=issuer,
                audience=issuer,
                now=now,
                check_exp=check_exp,
            )
        except InvalidJWT:
            return None
        row = await self.store.find_by_jti(str(claims.get("jti", "")))
        if row is None:
            return None
        self._verified.put(key, Verified(claims, row, int(claims["exp"]) + LEEWAY), now)
        return _Access(claims, row)

    async def _active(self, token: str) -> _Access | None:
        access = await self._access(token)
        if access is None or access.row.revoked_at is not None:
            return None
        if access.row.access_expires_at.timestamp() <= self._now():
            return None
        return access

    async def _userinfo(self, method: str, headers: Mapping[str, str], body: str) -> HttpAnswer:
        """:rfc:`6750` bearer errors: 401 ``invalid_token`` (or a bare challenge when no
        token was sent), 403 ``insufficient_scope`` without ``openid``."""
        if method.upper() not in ("GET", "POST"):
            return error_answer(405, "invalid_request", "Use GET or POST", {"Allow": "GET, POST"})
        token = bearer_token(headers, body if method.upper() == "POST" else "")
        if not token:
            return HttpAnswer(401, {"WWW-Authenticate": "Bearer", **NO_STORE}, "")
        access = await self._active(token)
        if access is None or access.row.username is None:
            return _bearer_error(401, "invalid_token", "The access token is not valid")
        scopes = set(access.row.scope.split())
        if "openid" not in scopes:
            return _bearer_error(403, "insufficient_scope", "The token lacks openid", "openid")
        user = await self.users.claims(access.row.username)
        if user is None:
            return _bearer_error(401, "invalid_token", "The user no longer exists")
        claims = claims_for(access.row.username, user, scopes)
        return HttpAnswer(200, {"Content-Type": "application/json", **NO_STORE}, dumps(claims))

    # -- sessions, logout, bearer tokens ---------------------------------------------------

    async def session_ended(self, sid: str) -> int:
        """A Gatehouse session (its hash) ended: revoke the tokens bound to it."""
        return await self.store.revoke_session(sid, epoch(self._now()))

    async def check_id_token_hint(
        self, id_token_hint: str, client_id: str | None = None
    ) -> IdTokenHint | None:
        """An ID token we issued (expired is fine, as for RP-initiated logout), for
        ``client_id`` if given; None if it is not one."""
        try:
            claims = verify(
                id_token_hint,
                self._public,
                typ=None,
                issuer=self.config.settings.issuer,
                audience=client_id,
                now=self._now(),
                check_exp=False,
            )
        except InvalidJWT:
            return None
        aud = claims.get("aud")
        audience = aud[0] if isinstance(aud, list) and aud else aud
        azp = str(claims.get("azp") or audience or "")
        if not azp or (client_id is not None and azp != client_id) or "sub" not in claims:
            return None
        sid = claims.get("sid")
        return IdTokenHint(azp, str(sid) if sid else None, str(claims["sub"]))

    async def bearer(self, token: str) -> BearerInfo:
        """An access token presented to a resource behind an Access Point."""
        access = await self._active(token)
        if access is None:
            return BearerInfo(False)
        row = access.row
        exp = int(row.access_expires_at.timestamp())
        return BearerInfo(True, row.scope, row.client_id, row.username, exp)

    # -- consents --------------------------------------------------------------------------

    async def consents(self, username: str) -> list[ConsentRow]:
        return await self.store.consents(username)

    async def revoke_consent(self, username: str, client_id: str) -> bool:
        """Withdraw the consent (the client's tokens for the user are revoked too)."""
        return await self.store.revoke_consent(username, client_id, epoch(self._now()))


def _run(call: Callable[[], HttpAnswer]) -> HttpAnswer:
    """Authlib's answer; its ValueError (refusing to quote a request's value into an error
    description) becomes ``invalid_request``."""
    try:
        return call()
    except ValueError:
        return error_answer(400, "invalid_request", "The request is not valid")


def bearer_token(headers: Mapping[str, str], body: str) -> str | None:
    """The access token of an ``Authorization: Bearer`` header or a form body."""
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    for name, value in parse_form(headers, body):
        if name == "access_token":
            return value
    return None


def _bearer_error(status: int, error: str, description: str, scope: str = "") -> HttpAnswer:
    challenge = f'Bearer error="{error}", error_description="{description}"'
    if scope:
        challenge += f', scope="{scope}"'
    return error_answer(status, error, description, {"WWW-Authenticate": challenge})


__all__ = ["BearerInfo", "IdTokenHint", "Provider", "bearer_token"]

"""The Authentication service's OAuth 2.0 / OpenID Connect provider: the OAuth2 DB, the
signing keys and the routes of :mod:`gatehouse.authentication.oauth_calls`, each calling the
protocol core's entry point (:class:`gatehouse.oauth2.provider.Provider`).

The OAuth2 DB is migrated on start (branch ``oauth2``) like the OATH DB; until it is
reachable every OAuth call answers 503 so the Policy service fails over. ``oauth`` (issuer,
lifetimes, clients) applies live: :meth:`OAuthService.apply` hands the provider a new
configuration in one assignment.

Signing keys: the Administration service makes and rotates them; a view names the ones to
sign with (``oauth.keys``: the public key set and the kid per algorithm, never a private key)
and the service gets their private halves from Admin over mutual TLS
(:mod:`gatehouse.authentication.oauth_keys_client`), keeping them in its state directory
(``oauth-signing-keys.json``, 0600) so it restarts, and signs, while Admin is down. A service
started from a file keeps a key file of its own in its home
(``HOME/oauth-signing-keys.json``, made with a key per ``oauth.signing.algorithms`` on first
start); every Authentication service behind the same Policy services must then sign with keys
the Policy services publish (``oauth.jwks`` of their view).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.routing import Route

from gatehouse.authentication.oauth_calls import (
    OAUTH_AUTHORIZE,
    OAUTH_BEARER,
    OAUTH_CONSENTS,
    OAUTH_ENDPOINT,
    OAUTH_ID_TOKEN_HINT,
    OAUTH_SESSION_ENDED,
    AuthorizeAnswer,
    AuthorizeRequest,
    BearerAnswer,
    BearerRequest,
    Consent,
    ConsentsAnswer,
    ConsentsRequest,
    EndpointAnswer,
    EndpointRequest,
    HintAnswer,
    HintRequest,
    SessionEnded,
    SessionEndedAnswer,
)
from gatehouse.authentication.oauth_keys_client import Fetch, KeyFollower, KeysUnavailable
from gatehouse.config.oauth import ClientSettings, OAuthSettings, SigningKeyView
from gatehouse.internal.calls import Call, Handler
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.oauth2.authorize import Consent as ConsentOutcome
from gatehouse.oauth2.authorize import ErrorPage, Login, Redirect
from gatehouse.oauth2.clients import ClientSpec
from gatehouse.oauth2.keys import SigningKeys, generate_key
from gatehouse.oauth2.provider import Provider
from gatehouse.oauth2.server import ProviderConfig
from gatehouse.oauth2.settings import ProviderSettings
from gatehouse.oauth2.store import OAuth2Store
from gatehouse.oauth2.subject import Subject
from gatehouse.oauth2.userinfo import UserClaims
from gatehouse.storage.engine import Database, warm_when_ready
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import start_migrations
from gatehouse.trust.identity import Peer

if TYPE_CHECKING:
    from gatehouse.storage.directory import UserInfo

log = logging.getLogger("gatehouse.authentication.oauth")

__all__ = [
    "KEYS_FILE",
    "OAuthService",
    "client_spec",
    "direct_calls",
    "keys_of",
    "load_or_create_keys",
    "provider_config",
    "routes",
]

#: The signing key set in the service's home (private keys: 0600).
KEYS_FILE = "oauth-signing-keys.json"
#: The longest wait between two attempts to fetch the signing keys from Admin, seconds.
KEYS_RETRY_MAX = 30.0


# --- configuration -----------------------------------------------------------------------------


def client_spec(client: ClientSettings) -> ClientSpec:
    """The protocol core's client of a configured one (the configuration is the source)."""
    return ClientSpec(
        client_id=client.client_id,
        name=client.name,
        public=client.public,
        secret_hash=client.secret_hash or "",
        redirect_uris=tuple(client.redirect_uris),
        post_logout_redirect_uris=tuple(client.post_logout_redirect_uris),
        grant_types=tuple(client.grant_types),
        scopes=tuple(client.scopes),
        token_endpoint_auth_method=client.token_endpoint_auth_method,
        consent=client.consent,
    )


def provider_config(oauth: OAuthSettings, portal_prefix: str, keys: SigningKeys) -> ProviderConfig:
    settings = ProviderSettings(
        issuer=oauth.issuer,
        portal_prefix=portal_prefix,
        access_token_lifetime=int(oauth.access_token_lifetime),
        id_token_lifetime=int(oauth.id_token_lifetime),
        code_lifetime=int(oauth.code_lifetime),
        refresh_token_lifetime=int(oauth.refresh_token_lifetime),
    )
    clients = {c.client_id: client_spec(c) for c in oauth.clients}
    return ProviderConfig(settings, clients, keys)


def _key_document(keys: list[dict[str, Any]]) -> dict[str, Any]:
    return {"keys": keys, "current": {jwk["alg"]: jwk["kid"] for jwk in keys}}


def _write_private(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` as JSON, 0600, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def keys_of(document: dict[str, Any]) -> SigningKeys:
    """The key set of a key document (see :func:`load_or_create_keys`).

    Raises:
        ValueError: not a usable key set.
    """
    try:
        return SigningKeys.from_jwks(
            document["keys"], document["current"], document.get("published", ())
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a signing key set ({exc})") from None


def load_or_create_keys(path: Path, algorithms: list[str]) -> SigningKeys:
    """The key set in ``path`` (``{"keys": [private JWK], "current": {alg: kid},
    "published"?: [public JWK]}``), made (0600, one key per algorithm) if missing.

    Raises:
        ValueError: the file cannot be read as a key set.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        document = _key_document([generate_key(alg) for alg in algorithms if alg != "EdDSA"])
        path.parent.mkdir(parents=True, exist_ok=True)
        # Linked, not replaced: two first starts at once keep one key set.
        temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out)
        try:
            os.link(temp, path)  # atomic: two first starts keep one key set
        except FileExistsError:
            pass
        finally:
            temp.unlink()
        text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not a signing key set ({exc})") from None
    try:
        return keys_of(document)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


class DirectoryUsers:
    """UserInfo's claims from the user DB (a disabled or deleted user has none)."""

    def __init__(self, lookup: Callable[[str], Any]) -> None:
        self._lookup = lookup

    async def claims(self, username: str) -> UserClaims | None:
        user: UserInfo | None = await self._lookup(username)
        if user is None or not user.enabled:
            return None
        return UserClaims(user.display_name, user.email or "", tuple(user.groups))


class OAuthService:
    """The provider of one Authentication service process.

    Signing keys: with ``oauth.keys`` (a view from the Administration service) the private
    keys it names come from ``keys_path`` (the state directory's file) or, when missing, from
    Admin (``fetch``, :class:`~gatehouse.authentication.oauth_keys_client.KeyFollower`);
    until they are here the OAuth calls answer 503 and the fetch is retried. A new version
    naming other keys keeps signing with the old ones (still published) until the new ones
    are here. Without ``oauth.keys`` (a configuration file) the service keeps its own key
    file (:func:`load_or_create_keys`, :meth:`use_keys`).
    """

    def __init__(
        self,
        url: str,
        oauth: OAuthSettings,
        portal_prefix: str,
        keys_path: Path,
        users: DirectoryUsers,
        db: Database | None = None,
        fetch: Fetch | None = None,
        failover_wait: float = 0.0,
    ) -> None:
        self.url = url
        self.db = db if db is not None else Database(url, failover_wait=failover_wait)
        self._own_db = db is None
        self.ready = asyncio.Event()
        self.keys_path = keys_path
        self.follower = KeyFollower(keys_path, fetch)
        self.oauth = oauth
        self.portal_prefix = portal_prefix
        self.users = users
        # Codes and tokens wait for the OAuth2 DB through a failover, as sign-ins do.
        self.store = OAuth2Store(self.db.engine, self.db.waiting)
        view = _key_view(oauth)
        keys = (
            load_or_create_keys(keys_path, list(oauth.signing.algorithms))
            if view is None
            else self.follower.cached(view)
        )
        self.keys: SigningKeys | None = keys
        self.provider: Provider | None = None
        if keys is not None:
            self.provider = Provider(self.store, provider_config(oauth, portal_prefix, keys), users)
        self._tasks: list[asyncio.Task[None]] = []
        self._following: asyncio.Task[None] | None = None
        self._wanted = view

    async def start(self) -> None:
        migrating = await start_migrations(self.url, "oauth2", self.ready)
        if migrating is not None:
            self._tasks.append(migrating)
        if self._own_db:
            self._tasks.append(asyncio.create_task(warm_when_ready(self.ready, self.db)))
        if self._wanted is not None and self.keys is None:
            self._follow(self._wanted)

    def apply(self, oauth: OAuthSettings, portal_prefix: str) -> None:
        """A new version's ``oauth`` from now on; new signing keys once they are here."""
        self.oauth, self.portal_prefix = oauth, portal_prefix
        view = _key_view(oauth)
        if view is not None and view != self._wanted:
            self._wanted = view
            cached = self.follower.cached(view)
            if cached is not None:
                self.keys = cached
            else:
                self._follow(view)
        self._configure()

    def _configure(self) -> None:
        if self.keys is None:
            return
        config = provider_config(self.oauth, self.portal_prefix, self.keys)
        if self.provider is None:
            self.provider = Provider(self.store, config, self.users)
        else:
            self.provider.configure(config)

    def _follow(self, view: SigningKeyView) -> None:
        """Fetch ``view``'s keys in the background (retrying), then sign with them."""
        if self._following is not None:
            self._following.cancel()
        self._following = asyncio.create_task(self._fetch_forever(view))
        self._tasks.append(self._following)

    async def _fetch_forever(self, view: SigningKeyView) -> None:
        delay = 1.0
        while True:
            try:
                keys = await self.follower.keys_for(view)
            except KeysUnavailable as exc:
                log.warning("OAuth signing keys not available yet: %s", exc)
            except Exception:
                log.exception("fetching the OAuth signing keys failed")
            else:
                if view == self._wanted:
                    self.keys = keys
                    self._configure()
                    log.info("signing OAuth tokens with keys %s", sorted(view.current.values()))
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, KEYS_RETRY_MAX)

    def use_keys(self, document: dict[str, Any]) -> None:
        """Sign with the key set ``document`` from now on (``{"keys": [private JWK],
        "current": {alg: kid}, "published"?: [JWK]}``), kept in the key file for the next
        start. Blocking file I/O.

        Raises:
            ValueError: not a usable key set (the running one stays).
        """
        keys = keys_of(document)
        _write_private(self.keys_path, document)
        self.keys = keys
        self._configure()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.store.close()
        if self._own_db:
            await self.db.dispose()

    def require(self) -> Provider:
        if not self.ready.is_set():
            raise DatabaseUnavailable("database unavailable: OAuth2 DB not reachable yet")
        if self.provider is None:
            raise ServiceError(
                Code.UNAVAILABLE, "the OAuth signing keys are not here yet (asked of Admin)", 503
            )
        return self.provider


def _key_view(oauth: OAuthSettings) -> SigningKeyView | None:
    view = getattr(oauth, "keys", None)
    return view if isinstance(view, SigningKeyView) else None


# --- the routes ------------------------------------------------------------------------------


def _provider(request: Request) -> Provider:
    oauth: OAuthService | None = getattr(request.app.state.service, "oauth", None)
    if oauth is None:
        raise ServiceError(
            Code.UNAVAILABLE, "the OAuth provider is not configured on this service", 503
        )
    return oauth.require()


async def authorize(request: Request, peer: Peer | None, body: AuthorizeRequest) -> AuthorizeAnswer:
    provider = _provider(request)
    user = body.user
    subject = None if user is None else Subject(user.username, user.auth_time, user.amr, user.sid)
    outcome = await provider.authorize(body.query, subject, body.consent, body.attempt)
    if isinstance(outcome, Redirect):
        return AuthorizeAnswer("redirect", location=outcome.location)
    if isinstance(outcome, ErrorPage):
        return AuthorizeAnswer(
            "error_page",
            status=outcome.status,
            error=outcome.error,
            description=outcome.description,
        )
    if isinstance(outcome, Login):
        return AuthorizeAnswer("login", methods=outcome.methods, force=outcome.force)
    assert isinstance(outcome, ConsentOutcome)
    return AuthorizeAnswer("consent", client_name=outcome.client_name, scopes=outcome.scopes)


async def endpoint(request: Request, peer: Peer | None, body: EndpointRequest) -> EndpointAnswer:
    provider = _provider(request)
    answer = await provider.endpoint(
        body.endpoint, body.method, body.headers, body.body, body.query
    )
    return EndpointAnswer(answer.status, dict(answer.headers), answer.body)


async def session_ended(
    request: Request, peer: Peer | None, body: SessionEnded
) -> SessionEndedAnswer:
    return SessionEndedAnswer(await _provider(request).session_ended(body.sid))


async def id_token_hint(request: Request, peer: Peer | None, body: HintRequest) -> HintAnswer:
    hint = await _provider(request).check_id_token_hint(body.id_token_hint, body.client_id)
    if hint is None:
        return HintAnswer(False)
    return HintAnswer(True, hint.client_id, hint.sid or "", hint.username)


async def bearer(request: Request, peer: Peer | None, body: BearerRequest) -> BearerAnswer:
    info = await _provider(request).bearer(body.token)
    if not info.active:
        return BearerAnswer(False)
    return BearerAnswer(True, info.scope, info.client_id, info.username, info.exp)


async def consents(request: Request, peer: Peer | None, body: ConsentsRequest) -> ConsentsAnswer:
    provider = _provider(request)
    revoked = False
    if body.revoke is not None:
        revoked = await provider.revoke_consent(body.username, body.revoke)
    clients = provider.config.clients
    rows = await provider.consents(body.username)
    return ConsentsAnswer(
        tuple(
            Consent(
                row.client_id,
                clients[row.client_id].display_name if row.client_id in clients else row.client_id,
                tuple(row.scopes),
                int(row.granted_at.timestamp()),
            )
            for row in rows
        ),
        revoked,
    )


def direct_calls() -> list[tuple[Call[Any, Any], Handler[Any, Any]]]:
    """The calls on every client request's path (token, introspection, UserInfo; a bearer
    token shown to a proxied resource), served before Starlette's router
    (:class:`gatehouse.internal.direct.DirectCalls`)."""
    return [(OAUTH_ENDPOINT, endpoint), (OAUTH_BEARER, bearer)]


def routes() -> list[Route]:
    return [
        OAUTH_AUTHORIZE.route(authorize),
        OAUTH_ENDPOINT.route(endpoint),
        OAUTH_SESSION_ENDED.route(session_ended),
        OAUTH_ID_TOKEN_HINT.route(id_token_hint),
        OAUTH_BEARER.route(bearer),
        OAUTH_CONSENTS.route(consents),
    ]

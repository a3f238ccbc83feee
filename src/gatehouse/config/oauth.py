"""The ``oauth`` section: Gatehouse as an OAuth 2.0 / OpenID Connect provider (issue 17).

Shared models, a leaf module (nothing of the services): the Administration model, the
Authentication service's settings and the Policy service's view are all made of them.

::

    oauth:
      issuer: http://127.0.0.1:8080          # default: the single node's AP URL
      access_token_lifetime: 10m
      id_token_lifetime: 10m
      code_lifetime: 60s
      refresh_token_lifetime: 720h
      signing: {algorithms: [ES256, RS256], rotate_every: 720h, publish_before: 24h,
                keep_after: 24h}
      clients:
        - client_id: app1
          name: App One
          public: false                      # confidential: secret_hash only, never a secret
          secret_hash: "sha256:<64 hex>"      # of a 32-byte random secret (oauth2.clients)
          redirect_uris: [https://app1.example/cb]   # exact match only
          post_logout_redirect_uris: []
          grant_types: [authorization_code, refresh_token]   # client_credentials allowed
          scopes: [openid, profile, email]
          token_endpoint_auth_method: client_secret_basic   # client_secret_post; none (public)
          consent: true

:class:`OAuthSettings` is the whole section (Administration, Authentication services: the
clients with their secret hashes, never private keys). :class:`PolicyOAuth` is what a Policy
service sees: no secret hashes, the clients' public facts, and the public key set it publishes
(``jwks``) for discovery, ``{P}oauth2/jwks`` and ``end_session``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, JsonValue, field_validator, model_validator

from gatehouse.config.base import Strict
from gatehouse.config.units import Seconds

__all__ = [
    "ALGORITHMS",
    "AUTH_METHODS",
    "GRANT_TYPES",
    "AuthenticationOAuth",
    "ClientSettings",
    "OAuthSettings",
    "PolicyOAuth",
    "PublicClient",
    "SigningKeyView",
    "SigningSettings",
    "policy_oauth",
    "public_client",
]

Algorithm = Literal["ES256", "RS256", "EdDSA"]
GrantType = Literal["authorization_code", "refresh_token", "client_credentials"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]
ALGORITHMS: tuple[str, ...] = ("ES256", "RS256", "EdDSA")
GRANT_TYPES: tuple[str, ...] = ("authorization_code", "refresh_token", "client_credentials")
AUTH_METHODS: tuple[str, ...] = ("client_secret_basic", "client_secret_post", "none")

DAY = 86400.0


def _algorithms() -> list[Algorithm]:
    return ["ES256", "RS256"]


def _grants() -> list[GrantType]:
    return ["authorization_code", "refresh_token"]


def _no_keys() -> dict[str, JsonValue]:
    return {"keys": []}


#: RFC 6749 §A.1 client_id characters, kept to a safe subset (it appears in URLs and logs).
_CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$")
#: RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _redirect_uri(value: str) -> str:
    """An exact redirect URI (RFC 9700 §4.1.3: compared as strings, no patterns)."""
    if len(value) > 2048 or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"not a redirect URI: {value[:80]!r}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a redirect URI: {value[:80]!r} ({exc})") from None
    if parts.fragment or "#" in value:
        raise ValueError(f"a redirect URI has no fragment (RFC 6749 §3.1.2): {value[:80]!r}")
    if "*" in value:
        raise ValueError(f"no wildcards: redirect URIs are matched exactly: {value[:80]!r}")
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname in _LOOPBACK:
        return value  # RFC 8252 §7.3: native apps on loopback
    if parts.scheme not in ("http", "https", "javascript", "data", "file", "") and (
        "." in parts.scheme
    ):
        return value  # RFC 8252 §7.1: a private-use scheme (reverse domain name)
    raise ValueError(
        f"not an allowed redirect URI: {value[:80]!r} (https://..., http://127.0.0.1..., or a "
        "reverse-domain private scheme such as com.example.app:/cb)"
    )


def _issuer(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018
    except ValueError as exc:
        raise ValueError(f"not an issuer URL: {value!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an issuer URL: {value!r} (http(s)://host[:port][/path])")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"an issuer has no query, fragment or credentials: {value!r}")
    return value.rstrip("/")


RedirectURI = Annotated[str, AfterValidator(_redirect_uri)]
IssuerURL = Annotated[str, AfterValidator(_issuer)]


class SigningSettings(Strict):
    """Signing keys made and rotated by the Administration service."""

    #: The first signs ID tokens and access tokens; each gets a key of its own.
    algorithms: list[Algorithm] = Field(default_factory=_algorithms, min_length=1)
    rotate_every: Seconds = Field(default=30 * DAY, ge=3600.0)
    #: A new key is in the published key set this long before it signs.
    publish_before: Seconds = Field(default=DAY, ge=0.0)
    #: An old key stays published this long after the longest token it signed expired.
    keep_after: Seconds = Field(default=DAY, ge=0.0)

    @field_validator("algorithms")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an algorithm is listed twice")
        return value


class PublicClient(Strict):
    """What any service may know of a client: no secret."""

    client_id: str
    name: str = ""
    public: bool = False
    redirect_uris: list[RedirectURI] = Field(default_factory=list)
    post_logout_redirect_uris: list[RedirectURI] = Field(default_factory=list)

    @field_validator("client_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _CLIENT_ID.match(value):
            raise ValueError(
                f"not a client id: {value[:80]!r} (letters, digits, '.', '_', '~', '-'; "
                "at most 128)"
            )
        return value

    @property
    def display_name(self) -> str:
        return self.name or self.client_id


class ClientSettings(PublicClient):
    """One registered client (the CLI and the Admin API make these)."""

    #: ``sha256:<hex>`` of the secret (32 random bytes, :func:`gatehouse.oauth2.clients.
    #: new_secret`); required for a confidential client, absent for a public one. The secret
    #: itself is shown once and never stored.
    secret_hash: str | None = Field(default=None, repr=False)
    grant_types: list[GrantType] = Field(default_factory=_grants, min_length=1)
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    token_endpoint_auth_method: AuthMethod = "client_secret_basic"
    #: Ask the user before the first authorization of each scope (remembered, revocable).
    consent: bool = True

    @field_validator("scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not _SCOPE.match(scope):
                raise ValueError(f"not a scope: {scope[:80]!r} (RFC 6749 §3.3 characters)")
        return list(dict.fromkeys(value))

    @field_validator("secret_hash")
    @classmethod
    def _check_hash(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value):
            raise ValueError("not a secret hash (sha256:<64 hex digits>)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClientSettings:
        if self.public:
            if self.secret_hash is not None:
                raise ValueError("a public client has no secret_hash")
            if self.token_endpoint_auth_method != "none":
                raise ValueError("a public client's token_endpoint_auth_method is none")
            if "client_credentials" in self.grant_types:
                raise ValueError("a public client cannot use client_credentials")
        else:
            if self.secret_hash is None:
                raise ValueError("a confidential client needs secret_hash (public: true if not)")
            if self.token_endpoint_auth_method == "none":
                raise ValueError(
                    "a confidential client authenticates: client_secret_basic or client_secret_post"
                )
        if "authorization_code" in self.grant_types and not self.redirect_uris:
            raise ValueError("authorization_code needs at least one redirect_uris entry")
        if "refresh_token" in self.grant_types and "authorization_code" not in self.grant_types:
            raise ValueError("refresh_token comes with authorization_code")
        return self


class OAuthSettings(Strict):
    """The provider: issuer, lifetimes, signing and clients."""

    issuer: IssuerURL = "http://127.0.0.1:8080"
    access_token_lifetime: Seconds = Field(default=600.0, ge=30.0, le=DAY)
    id_token_lifetime: Seconds = Field(default=600.0, ge=30.0, le=DAY)
    code_lifetime: Seconds = Field(default=60.0, ge=5.0, le=600.0)
    refresh_token_lifetime: Seconds = Field(default=30 * DAY, ge=60.0, le=365 * DAY)
    signing: SigningSettings = Field(default_factory=SigningSettings)
    clients: list[ClientSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_clients(self) -> OAuthSettings:
        seen: set[str] = set()
        for client in self.clients:
            if client.client_id in seen:
                raise ValueError(f"client_id {client.client_id!r} is registered twice")
            seen.add(client.client_id)
        return self

    def client(self, client_id: str) -> ClientSettings | None:
        return next((c for c in self.clients if c.client_id == client_id), None)


def _check_public_jwks(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    keys = value.get("keys")
    if not isinstance(keys, list):
        raise ValueError('expected {"keys": [JWK, ...]}')
    for index, key in enumerate(keys):
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            raise ValueError(f"keys[{index}]: a JWK with a kid")
        private = {"d", "p", "q", "dp", "dq", "qi", "k"} & set(key)
        if private:
            raise ValueError(f"keys[{index}]: private key members {sorted(private)}")
    return value


class SigningKeyView(Strict):
    """The signing keys as an Authentication service's view names them (set by the
    Administration service, never by hand): the public key set to publish and verify with,
    and the ``kid`` that signs for each algorithm. The private keys are fetched from the
    Administration service over mutual TLS (:mod:`gatehouse.authentication.oauth_keys_client`)."""

    jwks: dict[str, JsonValue] = Field(default_factory=_no_keys)
    #: algorithm -> kid of the key that signs now (each kid is in ``jwks``).
    current: dict[Algorithm, str] = Field(default_factory=dict)

    @field_validator("jwks")
    @classmethod
    def _public(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return _check_public_jwks(value)

    @model_validator(mode="after")
    def _current_published(self) -> SigningKeyView:
        kids = {k.get("kid") for k in self.jwks.get("keys") or [] if isinstance(k, dict)}  # type: ignore[union-attr]
        for alg, kid in self.current.items():
            if kid not in kids:
                raise ValueError(f"current {alg} key {kid!r} is not in jwks")
        return self


class AuthenticationOAuth(OAuthSettings):
    """An Authentication service's ``oauth``: the section, and the signing keys its view
    names (None: a service configured from a file, which keeps its own key file)."""

    keys: SigningKeyView | None = None


class PolicyOAuth(Strict):
    """A Policy service's part: what discovery, the pages and ``end_session`` need."""

    issuer: IssuerURL = "http://127.0.0.1:8080"
    algorithms: list[Algorithm] = Field(default_factory=_algorithms, min_length=1)
    clients: list[PublicClient] = Field(default_factory=list)
    #: Scopes any client may be given (discovery's ``scopes_supported``).
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    #: The published key set (public keys only): ``{"keys": [JWK, ...]}``.
    jwks: dict[str, JsonValue] = Field(default_factory=_no_keys)

    @field_validator("jwks")
    @classmethod
    def _public_keys(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return _check_public_jwks(value)

    def client(self, client_id: str) -> PublicClient | None:
        return next((c for c in self.clients if c.client_id == client_id), None)


def public_client(client: ClientSettings) -> PublicClient:
    """``client`` without its secret hash and protocol settings."""
    return PublicClient(
        client_id=client.client_id,
        name=client.name,
        public=client.public,
        redirect_uris=client.redirect_uris,
        post_logout_redirect_uris=client.post_logout_redirect_uris,
    )


def policy_oauth(settings: OAuthSettings, jwks: dict[str, JsonValue]) -> PolicyOAuth:
    """The Policy view's ``oauth`` of ``settings`` and the public key set."""
    scopes = list(dict.fromkeys(s for c in settings.clients for s in c.scopes))
    return PolicyOAuth(
        issuer=settings.issuer,
        algorithms=settings.signing.algorithms,
        clients=[public_client(c) for c in settings.clients],
        scopes=scopes or ["openid", "profile", "email"],
        jwks=jwks,
    )

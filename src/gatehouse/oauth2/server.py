"""Authlib's authorization server with our grants and endpoints, clients from the
configuration, and tokens made here: JWT access tokens (:rfc:`9068`), opaque refresh tokens
(stored hashed) and ID tokens, all signed with the current key (``kid`` in every header).

It answers data (:class:`~gatehouse.oauth2.adapter.HttpAnswer`) and does no I/O: the tokens
it makes are recorded in the request's :class:`~gatehouse.oauth2.adapter.Work` for the
provider to store.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer

from gatehouse.oauth2.adapter import HttpAnswer, Request, to_answer
from gatehouse.oauth2.clients import ClientSpec
from gatehouse.oauth2.endpoints import Introspection, Revocation
from gatehouse.oauth2.grants import (
    AuthlibClient,
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    OpenIDCodeExtension,
    RefreshTokenGrant,
    S256CodeChallenge,
    at_hash,
)
from gatehouse.oauth2.jwt import (
    ACCESS_TOKEN_TYP,
    ID_TOKEN_TYP,
    access_token_claims,
    id_token_claims,
    sign,
)
from gatehouse.oauth2.keys import SigningKeys
from gatehouse.oauth2.settings import ProviderSettings
from gatehouse.oauth2.store import CodeRow, TokenRow, new_id, secret_hash
from gatehouse.oauth2.subject import Subject

REFRESH_TOKEN_BYTES = 32
#: ID tokens use the algorithm every OpenID relying party accepts without registering one:
#: OpenID Connect Registration makes RS256 the default of ``id_token_signed_response_alg``,
#: and a client that registered nothing must be able to verify them. An RSA-2048 signature
#: costs about ten times an ES256 one (the largest single cost of a code exchange); clients
#: cannot register another algorithm yet (no ``id_token_signed_response_alg`` in the
#: client configuration), so RS256 stays the default for all. Access tokens are ES256
#: (the first current algorithm): only Gatehouse verifies them, and once per token.
ID_TOKEN_ALG = "RS256"


def epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass
class ProviderConfig:
    """What the configuration gives the provider; replaced as a whole on a new version."""

    settings: ProviderSettings
    clients: Mapping[str, ClientSpec]
    keys: SigningKeys


class Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, config: ProviderConfig) -> None:
        super().__init__()
        self.config = config
        openid = OpenIDCodeExtension(self.sign_id_token)
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), openid])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(ClientCredentialsGrant)
        self.register_endpoint(Introspection)
        self.register_endpoint(Revocation)

    # -- Authlib's framework hooks ---------------------------------------------------------

    def query_client(self, client_id: str) -> AuthlibClient | None:
        spec = self.config.clients.get(client_id)
        return None if spec is None else AuthlibClient(spec)

    def save_token(self, token: dict[str, Any], request: Request) -> None:
        """Nothing to do: :meth:`issue` recorded the row in ``request.work``."""

    def create_oauth2_request(self, request: Request) -> Request:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> HttpAnswer:
        return to_answer(status, body, headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    # -- tokens ----------------------------------------------------------------------------

    def issue(
        self, request: Request, user: Subject | None, scope: str | None, with_refresh: bool
    ) -> dict[str, Any]:
        """An access token (and a refresh token): the token response's fields; the row to
        store goes to ``request.work.issued``. A refresh keeps the family and session of the
        token it replaces; a code's tokens take the code's id as their family."""
        work, settings = request.work, self.config.settings
        scope = scope or work.extra.get("scope") or ""
        family, parent, sid, auth_time = new_id(), None, None, None
        if work.code is not None:
            family, sid, auth_time = work.code.id, work.code.sid, work.code.auth_time
        elif work.refresh is not None:
            family, parent, sid = work.refresh.family_id, work.refresh.id, work.refresh.sid
        jti = new_id()
        lifetime = settings.access_token_lifetime
        claims = access_token_claims(
            issuer=settings.issuer,
            client_id=request.client.client_id,
            subject=None if user is None else user.username,
            scope=scope,
            jti=jti,
            issued_at=work.now,
            lifetime=lifetime,
            auth_time=auth_time,
        )
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": sign(self.config.keys, claims, ACCESS_TOKEN_TYP),
            "expires_in": lifetime,
            "scope": scope,
        }
        refresh_hash, refresh_expires = None, None
        if with_refresh and user is not None:
            token["refresh_token"] = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
            refresh_hash = secret_hash(token["refresh_token"])
            refresh_expires = epoch(work.now + settings.refresh_token_lifetime)
        work.issued = TokenRow(
            id=new_id(),
            family_id=family,
            parent_id=parent,
            client_id=request.client.client_id,
            username=None if user is None else user.username,
            scope=scope,
            sid=sid,
            access_jti=jti,
            access_expires_at=epoch(work.now + lifetime),
            refresh_hash=refresh_hash,
            refresh_expires_at=refresh_expires,
        )
        return token

    def sign_id_token(self, request: Request, code: CodeRow, access_token: str | None) -> str:
        keys, settings = self.config.keys, self.config.settings
        alg = ID_TOKEN_ALG if ID_TOKEN_ALG in keys.current else keys.default_algorithm
        claims = id_token_claims(
            issuer=settings.issuer,
            subject=code.username,
            client_id=code.client_id,
            issued_at=request.work.now,
            lifetime=settings.id_token_lifetime,
            auth_time=code.auth_time,
            nonce=code.nonce,
            amr=list(code.amr),
            acr=code.acr,
            sid=code.sid,
            at_hash=at_hash(access_token, alg) if access_token else None,
        )
        return sign(keys, claims, ID_TOKEN_TYP, alg)


__all__ = ["ProviderConfig", "Server", "epoch"]

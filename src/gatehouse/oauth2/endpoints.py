"""Token introspection (:rfc:`7662`) and revocation (:rfc:`7009`) on Authlib's endpoints,
reading the presented token from ``request.work`` (loaded by the provider).

Any confidential client that authenticates may introspect (resource servers are registered
as confidential clients); public clients may revoke their own tokens. Revoking an access or
a refresh token revokes its whole family (the tokens from the same grant, RFC 7009 §2.1).
"""

from __future__ import annotations

from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import InvalidGrantError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from gatehouse.oauth2.adapter import Request, Work
from gatehouse.oauth2.grants import SECRET_METHODS, AuthlibClient
from gatehouse.oauth2.store import TokenRow


class TokenView:
    """A presented token: its row, its kind, and (access tokens) its verified claims."""

    def __init__(self, row: TokenRow, kind: str, claims: dict[str, Any] | None, now: int) -> None:
        self.row, self.kind, self.claims, self.now = row, kind, claims, now

    def check_client(self, client: AuthlibClient) -> bool:
        return client.client_id == self.row.client_id

    def expires_at(self) -> int:
        if self.kind == "access_token":
            return int(self.row.access_expires_at.timestamp())
        expires = self.row.refresh_expires_at
        return 0 if expires is None else int(expires.timestamp())

    def is_expired(self) -> bool:
        return self.expires_at() <= self.now

    def is_revoked(self) -> bool:
        if self.row.revoked_at is not None:
            return True
        return self.kind == "refresh_token" and self.row.rotated_at is not None


def presented(work: Work) -> TokenView | None:
    if work.token is None:
        return None
    kind = "access_token" if work.access_claims is not None else "refresh_token"
    return TokenView(work.token, kind, work.access_claims, work.now)


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = SECRET_METHODS

    def authenticate_token(self, request: Request, client: AuthlibClient) -> TokenView | None:
        self.check_params(request, client)
        return presented(request.work)

    def check_permission(self, token: TokenView, client: AuthlibClient, request: Request) -> bool:
        return not client.spec.public

    def introspect_token(self, token: TokenView) -> dict[str, Any]:
        row = token.row
        claims = token.claims or {}
        payload: dict[str, Any] = {
            "active": True,
            "scope": row.scope,
            "client_id": row.client_id,
            "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
            "exp": token.expires_at(),
            "iat": int(claims.get("iat", int(row.access_expires_at.timestamp()))),
            "sub": row.username or row.client_id,
            "iss": claims.get("iss"),
        }
        if row.username:
            payload["username"] = row.username
        if token.kind == "access_token":
            payload["aud"] = claims.get("aud")
            payload["jti"] = row.access_jti
        return {key: value for key, value in payload.items() if value is not None}


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS: ClassVar[list[str]] = [*SECRET_METHODS, "none"]

    def authenticate_token(self, request: Request, client: AuthlibClient) -> TokenView | None:
        self.check_params(request, client)
        token = presented(request.work)
        if token is not None and not token.check_client(client):
            raise InvalidGrantError()
        return token

    def revoke_token(self, token: TokenView, request: Request) -> None:
        request.work.revoke_family = token.row.family_id


__all__ = ["Introspection", "Revocation", "TokenView", "presented"]

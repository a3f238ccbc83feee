"""Authlib's grants (:rfc:`6749` §4.1, §4.4, §6; :rfc:`7636`; OpenID Connect Core §3.1) on
the data :mod:`gatehouse.oauth2.adapter` loaded: each hook reads ``request.work`` and records
its effect there; nothing here does I/O.

PKCE is S256 only (``plain`` is refused, and a challenge without a method is refused rather
than taken as ``plain``); a public client must send a challenge. A code or refresh token
presented again after its use makes the family of tokens it produced revoked.
"""

from __future__ import annotations

from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import InvalidRequestError, InvalidScopeError, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oidc.core import OpenIDCode
from authlib.oidc.core.util import create_half_hash

from gatehouse.oauth2.adapter import Request
from gatehouse.oauth2.clients import ClientSpec
from gatehouse.oauth2.store import CodeRow, NewCode, TokenRow, secret_hash
from gatehouse.oauth2.subject import Subject

SECRET_METHODS = ["client_secret_basic", "client_secret_post"]


class AuthlibClient:
    """A :class:`ClientSpec` as Authlib's ``ClientMixin`` asks questions of it."""

    def __init__(self, spec: ClientSpec) -> None:
        self.spec = spec
        self.client_id = spec.client_id

    def get_client_id(self) -> str:
        return self.spec.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.spec.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The scope asked for (all the client's scopes when none is), or None when it asks
        for one it is not allowed (``invalid_scope``)."""
        if not scope:
            return " ".join(self.spec.scopes)
        asked = scope.split()
        if not set(asked) <= set(self.spec.scopes):
            return None
        return " ".join(dict.fromkeys(asked))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.spec.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return self.spec.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.spec.public:
            return method == "none"
        if endpoint == "token":
            return method == self.spec.token_endpoint_auth_method
        return method in SECRET_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.spec.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.spec.grant_types


class CodeView:
    """A stored code as Authlib's ``AuthorizationCodeMixin`` (and PKCE) read it."""

    def __init__(self, row: CodeRow) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return self.row.auth_time

    def get_acr(self) -> str | None:
        return self.row.acr

    def get_amr(self) -> list[str]:
        return list(self.row.amr)


class RefreshView:
    """A stored token row as Authlib's refresh grant reads it."""

    def __init__(self, row: TokenRow) -> None:
        self.row = row

    def get_scope(self) -> str:
        return self.row.scope

    def check_client(self, client: AuthlibClient) -> bool:
        return client.client_id == self.row.client_id


def _work(grant: Any) -> Any:
    request: Request = grant.request
    return request.work


class Issues:
    """Makes a grant's tokens through the server with the request at hand (Authlib's server
    hook alone does not see the request, which holds the code or refresh token)."""

    request: Any
    server: Any

    def generate_token(
        self,
        user: Subject | None = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        return dict(self.server.issue(self.request, user, scope, include_refresh_token))


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """:rfc:`7636` with S256 only; required of public clients already at authorization."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    CODE_CHALLENGE_METHODS: ClassVar[dict[str, Any]] = {"S256": compare_s256_code_challenge}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if challenge and method != "S256":
            raise InvalidRequestError(
                "'code_challenge_method' must be 'S256' ('plain' is not accepted)"
            )
        super().validate_code_challenge(grant, redirect_uri)
        if not challenge and grant.request.client.spec.public:
            raise InvalidRequestError("Missing 'code_challenge': public clients must use PKCE")


class AuthorizationCodeGrant(Issues, grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [*SECRET_METHODS, "none"]

    def save_authorization_code(self, code: str, request: Request) -> None:
        user: Subject = request.user
        data = request.payload.data
        work = request.work
        work.new_code = NewCode(
            code_hash=secret_hash(code),
            client_id=request.client.client_id,
            username=user.username,
            redirect_uri=data.get("redirect_uri") or "",
            scope=request.scope or "",
            auth_time=user.auth_time,
            expires_at=work.extra["code_expires_at"],
            attempt=work.extra["attempt"],
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            amr=user.amr,
            acr=work.extra.get("acr"),
            sid=user.sid,
        )

    def query_authorization_code(self, code: str, client: AuthlibClient) -> CodeView | None:
        work = _work(self)
        row: CodeRow | None = work.code
        if row is None or row.client_id != client.client_id:
            return None
        if row.used_at is not None:
            work.revoke_family = row.id  # a second use: the first use's tokens go too
            return None
        if row.expires_at.timestamp() <= work.now:
            return None
        return CodeView(row)

    def delete_authorization_code(self, authorization_code: CodeView) -> None:
        _work(self).consume_code = authorization_code.row.id

    def authenticate_user(self, authorization_code: CodeView) -> Subject:
        row = authorization_code.row
        return Subject(row.username, row.auth_time, row.amr, row.sid)


class RefreshTokenGrant(Issues, grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [*SECRET_METHODS, "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshView | None:
        work = _work(self)
        row: TokenRow | None = work.refresh
        if row is None or row.refresh_hash != secret_hash(refresh_token):
            return None
        if row.client_id != self.request.client.client_id:
            return None
        if row.rotated_at is not None:
            work.revoke_family = row.family_id  # reuse of a rotated token: revoke them all
            return None
        expires = row.refresh_expires_at
        if row.revoked_at is not None or expires is None or expires.timestamp() <= work.now:
            return None
        return RefreshView(row)

    def authenticate_user(self, refresh_token: RefreshView) -> Subject | None:
        row = refresh_token.row
        if row.username is None:
            return None
        return Subject(row.username, 0, (), row.sid)

    def revoke_old_credential(self, refresh_token: RefreshView) -> None:
        _work(self).rotate_from = refresh_token.row.id


class ClientCredentialsGrant(Issues, grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = SECRET_METHODS

    def validate_requested_scope(self) -> None:
        scope = self.request.client.get_allowed_scope(self.request.payload.scope)
        if scope is None:
            raise InvalidScopeError()
        _work(self).extra["scope"] = scope


class OpenIDCodeExtension(OpenIDCode):  # type: ignore[misc]
    """ID tokens signed by :mod:`gatehouse.oauth2.jwt` (``kid``, ``sid``, ``amr``, ...).
    Nonces are not remembered: replay of a nonce is the relying party's check."""

    def __init__(self, sign_id_token: Any) -> None:
        super().__init__(require_nonce=False)
        self.sign_id_token = sign_id_token

    def exists_nonce(self, nonce: str, request: Request) -> bool:
        return False

    def encode_id_token(self, token: dict[str, Any], request: Request) -> str:
        code: CodeView = request.authorization_code
        return str(self.sign_id_token(request, code.row, token.get("access_token")))


def at_hash(access_token: str, alg: str) -> str:
    half = create_half_hash(access_token, alg)
    return "" if half is None else half.decode()


__all__ = [
    "AuthlibClient",
    "AuthorizationCodeGrant",
    "ClientCredentialsGrant",
    "Issues",
    "OpenIDCodeExtension",
    "RefreshTokenGrant",
    "S256CodeChallenge",
    "at_hash",
]

"""JWTs the provider signs and checks: ID tokens (OpenID Connect Core §2) and access tokens
(:rfc:`9068`, ``typ: at+jwt``), with ``kid`` in every header.

Verification accepts only ES256 and RS256 signatures by a key of the JWKS named by the
token's ``kid``: ``alg: none``, HMAC algorithms (HS256 "signed" with a public key as the
secret), an unknown or missing ``kid`` and a key of another type are refused before any
signature check, as are a wrong ``typ``, ``iss`` or ``aud`` and an expired token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from joserfc import jws
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gatehouse.oauth2.keys import ALGORITHMS, SigningKeys

ACCESS_TOKEN_TYP: Final = "at+jwt"
ID_TOKEN_TYP: Final = "JWT"
#: Seconds of clock difference tolerated on ``exp``/``iat`` between instances.
LEEWAY: Final = 30


class InvalidJWT(ValueError):
    """A JWT that is refused; the message says why (never the token)."""


def sign(keys: SigningKeys, claims: Mapping[str, Any], typ: str, alg: str | None = None) -> str:
    key = keys.signing_key(alg)
    header = {"alg": key.alg, "kid": key.kid, "typ": typ}
    return str(jose_jwt.encode(header, dict(claims), key, algorithms=[str(key.alg)]))


def header_of(token: str) -> dict[str, Any]:
    try:
        return dict(jws.extract_compact(token.encode()).headers())
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidJWT("not a compact JWS") from error


def verify(
    token: str,
    public: KeySet,
    *,
    typ: str | None,
    issuer: str,
    audience: str | None,
    now: int | None = None,
    check_exp: bool = True,
) -> dict[str, Any]:
    """The claims of a JWT signed by one of ``public``'s keys, or :class:`InvalidJWT`."""
    header = header_of(token)
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in ALGORITHMS:
        raise InvalidJWT(f"algorithm {alg!r} is not accepted")
    if not isinstance(kid, str) or not kid:
        raise InvalidJWT("no kid")
    key = next((k for k in public.keys if k.kid == kid), None)
    if key is None:
        raise InvalidJWT("unknown kid")
    if key.alg and key.alg != alg:
        raise InvalidJWT("the kid's key is not for this algorithm")
    if typ is not None and str(header.get("typ", "")).lower() != typ.lower():
        raise InvalidJWT(f"typ is not {typ}")
    try:
        decoded = jose_jwt.decode(token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidJWT("bad signature") from error
    claims = dict(decoded.claims)
    check_claims(claims, issuer, audience, now, check_exp)
    return claims


def check_claims(
    claims: dict[str, Any], issuer: str, audience: str | None, now: int | None, check_exp: bool
) -> None:
    """The checks of :func:`verify` after the signature (``iss``, ``aud``, ``exp``, ``iat``):
    also run on every use of claims verified earlier (:mod:`gatehouse.oauth2.verified`)."""
    if claims.get("iss") != issuer:
        raise InvalidJWT("wrong iss")
    if audience is not None:
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if audience not in audiences:
            raise InvalidJWT("wrong aud")
    moment = int(time.time()) if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise InvalidJWT("no exp")
    if check_exp and exp + LEEWAY < moment:
        raise InvalidJWT("expired")
    iat = claims.get("iat")
    if isinstance(iat, int) and iat - LEEWAY > moment:
        raise InvalidJWT("issued in the future")


def access_token_claims(
    *,
    issuer: str,
    client_id: str,
    subject: str | None,
    scope: str,
    jti: str,
    issued_at: int,
    lifetime: int,
    auth_time: int | None = None,
    sid: str | None = None,
) -> dict[str, Any]:
    """:rfc:`9068` claims. The audience is the issuer: resources behind Gatehouse's Access
    Points are the resource server (no resource indicators yet). Without a user (client
    credentials) the subject is the client."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject or client_id,
        "aud": issuer,
        "client_id": client_id,
        "scope": scope,
        "jti": jti,
        "iat": issued_at,
        "exp": issued_at + lifetime,
    }
    if auth_time is not None:
        claims["auth_time"] = auth_time
    if sid:
        claims["sid"] = sid
    return claims


def id_token_claims(
    *,
    issuer: str,
    subject: str,
    client_id: str,
    issued_at: int,
    lifetime: int,
    auth_time: int,
    nonce: str | None,
    amr: list[str],
    acr: str | None,
    sid: str | None,
    at_hash: str | None,
) -> dict[str, Any]:
    """OpenID Connect Core §2 claims (``sid`` from Front-/Back-Channel Logout)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": [client_id],
        "azp": client_id,
        "iat": issued_at,
        "exp": issued_at + lifetime,
        "auth_time": auth_time,
    }
    optional = {"nonce": nonce, "acr": acr, "sid": sid, "at_hash": at_hash}
    claims.update({name: value for name, value in optional.items() if value})
    if amr:
        claims["amr"] = amr
    return claims


__all__ = [
    "ACCESS_TOKEN_TYP",
    "ID_TOKEN_TYP",
    "InvalidJWT",
    "access_token_claims",
    "check_claims",
    "header_of",
    "id_token_claims",
    "sign",
    "verify",
]

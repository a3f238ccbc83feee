"""Signed identity assertions: ES256 compact JWS (RFC 7515/7518/7519), made and checked with
``cryptography`` alone. Pure: no files, no database, no clock of its own.

A Policy service signs, for a resource that asks for it, a short-lived token naming the user
(:func:`sign`); the Access Point only forwards it; a backend checks it against the key set
the Policy services publish (:func:`verify`), so an Access Point that was taken over cannot
make one up. Only ``ES256`` is accepted: the algorithm is fixed by the verifier, never taken
from the token (``none``, ``HS256`` with the public key as secret and the like are refused).

Keys are P-256; a key's ``kid`` is its RFC 7638 JWK thumbprint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ALGORITHM = "ES256"
#: Clock skew tolerated between the Policy service and a backend, seconds.
LEEWAY = 5.0
#: Tokens longer than this are refused before any parsing.
MAX_TOKEN = 16 * 1024
_COORDINATE = 32  # bytes of a P-256 coordinate, and of r and s

JWK = Mapping[str, Any]
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class AssertionInvalid(ValueError):
    """The token is not a valid assertion for this audience now; the message says why."""


class UnknownKey(AssertionInvalid):
    """The token names a key the key set does not hold (fetch the key set again)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not text or any(c not in _B64URL for c in text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK of a P-256 key, with its ``kid``, ``alg`` and ``use``."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("identity assertion keys are P-256")
    numbers = key.public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(_COORDINATE, "big")),
        "y": b64url(numbers.y.to_bytes(_COORDINATE, "big")),
    }
    return {**jwk, "kid": thumbprint(jwk), "alg": ALGORITHM, "use": "sig"}


def thumbprint(jwk: JWK) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order, base64url."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private P-256 key with its public JWK (and so its ``kid``)."""

    private: ec.EllipticCurvePrivateKey
    jwk: Mapping[str, str]

    @classmethod
    def of(cls, private: ec.EllipticCurvePrivateKey) -> SigningKey:
        return cls(private, public_jwk(private.public_key()))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.of(ec.generate_private_key(ec.SECP256R1()))

    @property
    def kid(self) -> str:
        return self.jwk["kid"]


def _json_part(document: Mapping[str, Any]) -> str:
    return b64url(json.dumps(document, separators=(",", ":")).encode())


def sign(claims: Mapping[str, Any], key: SigningKey) -> str:
    """The compact JWS of ``claims`` under ``key`` (header ``ES256``, ``JWT``, its kid)."""
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": key.kid}
    signing_input = f"{_json_part(header)}.{_json_part(claims)}"
    der = key.private.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")
    return f"{signing_input}.{b64url(raw)}"


def _keys(jwks: Mapping[str, Any] | Sequence[JWK]) -> Sequence[JWK]:
    keys = jwks.get("keys", []) if isinstance(jwks, Mapping) else jwks
    return [k for k in keys if isinstance(k, Mapping)] if isinstance(keys, list) else []


def _public_key(jwk: JWK) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise AssertionInvalid("the key is not a P-256 key")
    if jwk.get("alg", ALGORITHM) != ALGORITHM:
        raise AssertionInvalid("the key is not for ES256")
    try:
        x = int.from_bytes(b64url_decode(str(jwk["x"])), "big")
        y = int.from_bytes(b64url_decode(str(jwk["y"])), "big")
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
    except (KeyError, ValueError) as exc:
        raise AssertionInvalid(f"the key is malformed: {exc}") from None


def _decode_json(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(part))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise AssertionInvalid(f"the {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise AssertionInvalid(f"the {what} is not a JSON object")
    return value


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AssertionInvalid(f"claim {name!r} is missing or not a number")
    return float(value)


def verify(
    token: str,
    jwks: Mapping[str, Any] | Sequence[JWK],
    audience: str,
    now: float,
    *,
    issuer: str | None = None,
    leeway: float = LEEWAY,
) -> dict[str, Any]:
    """The claims of ``token`` if it is a valid ES256 assertion for ``audience`` at ``now``
    (Unix seconds), signed by a key of ``jwks`` (a key set document or a list of JWKs).

    Raises:
        UnknownKey: no key of ``jwks`` has the token's ``kid``.
        AssertionInvalid: anything else wrong, the message says what.
    """
    if len(token) > MAX_TOKEN:
        raise AssertionInvalid("the token is too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise AssertionInvalid("not a compact JWS (three parts)")
    header = _decode_json(parts[0], "header")
    if header.get("alg") != ALGORITHM:
        raise AssertionInvalid(f"algorithm {header.get('alg')!r} refused (only {ALGORITHM})")
    if header.get("crit") is not None:
        raise AssertionInvalid("critical header parameters are not supported")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise UnknownKey("the token names no key (kid)")
    jwk = next((k for k in _keys(jwks) if k.get("kid") == kid), None)
    if jwk is None:
        raise UnknownKey(f"unknown key {kid[:64]!r}")
    try:
        raw = b64url_decode(parts[2])
    except (ValueError, binascii.Error):
        raise AssertionInvalid("the signature is not base64url") from None
    if len(raw) != 2 * _COORDINATE:
        raise AssertionInvalid("the signature is not a 64-byte ES256 signature")
    der = encode_dss_signature(
        int.from_bytes(raw[:_COORDINATE], "big"), int.from_bytes(raw[_COORDINATE:], "big")
    )
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    try:
        _public_key(jwk).verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AssertionInvalid("bad signature") from None
    claims = _decode_json(parts[1], "payload")
    expires = _number(claims, "exp", required=True)
    assert expires is not None
    if now >= expires + leeway:
        raise AssertionInvalid("expired")
    not_before = _number(claims, "nbf", required=False)
    if not_before is not None and now + leeway < not_before:
        raise AssertionInvalid("not valid yet")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise AssertionInvalid(f"wrong audience (for {aud!r}, not {audience!r})")
    if issuer is not None and claims.get("iss") != issuer:
        raise AssertionInvalid(f"wrong issuer {claims.get('iss')!r}")
    return claims

"""Signing keys (ES256 and RS256) with their ``kid``s, the key to sign with per algorithm,
and the JWKS of the public keys.

The Administration service makes and rotates the keys; an Authentication service receives
the private keys as JWK dicts (never in a view) and builds :class:`SigningKeys` from them.
Verification (:mod:`gatehouse.oauth2.jwt`) only ever uses :meth:`SigningKeys.public`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from joserfc.jwk import ECKey, KeyParameters, KeySet, KeySetSerialization, RSAKey

ALGORITHMS: Final = ("ES256", "RS256")
RSA_BITS: Final = 2048

AnyKey = ECKey | RSAKey


class SigningKeyError(ValueError):
    """A JWK that cannot be used: wrong type or curve, no ``kid``, no private part."""


def generate_key(alg: str, kid: str | None = None) -> dict[str, Any]:
    """A new private key as a JWK dict (``kid``, ``alg``, ``use: sig`` set)."""
    params = cast(
        KeyParameters, {"kid": kid or secrets.token_urlsafe(12), "alg": alg, "use": "sig"}
    )
    key: AnyKey
    if alg == "ES256":
        key = ECKey.generate_key("P-256", params, private=True)
    elif alg == "RS256":
        key = RSAKey.generate_key(RSA_BITS, params, private=True)
    else:
        raise SigningKeyError(f"unsupported signing algorithm {alg!r}")
    return dict(key.as_dict(private=True))


def _import(jwk: Mapping[str, Any]) -> AnyKey:
    alg, kid = jwk.get("alg"), jwk.get("kid")
    if not kid:
        raise SigningKeyError("a signing key needs a kid")
    if alg == "ES256" and jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return ECKey.import_key(dict(jwk))
    if alg == "RS256" and jwk.get("kty") == "RSA":
        return RSAKey.import_key(dict(jwk))
    raise SigningKeyError(f"key {kid}: not an ES256 (P-256) or RS256 key")


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """Private keys by ``kid``, and which one signs for each algorithm.

    ``published`` are public JWKs announced before their key signs (or kept after it stopped)
    without a private part here; they verify and appear in the JWKS."""

    keys: Mapping[str, AnyKey]
    current: Mapping[str, str]
    published: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_jwks(
        cls,
        private: Iterable[Mapping[str, Any]],
        current: Mapping[str, str],
        published: Sequence[Mapping[str, Any]] = (),
    ) -> SigningKeys:
        keys: dict[str, AnyKey] = {}
        for jwk in private:
            key = _import(jwk)
            if not key.is_private:
                raise SigningKeyError(f"key {key.kid}: no private part")
            keys[str(key.kid)] = key
        for alg, kid in current.items():
            if kid not in keys or keys[kid].alg != alg:
                raise SigningKeyError(f"current {alg} key {kid!r} is not among the private keys")
        return cls(keys, dict(current), tuple(dict(j) for j in published))

    @classmethod
    def generate(cls, algorithms: Sequence[str] = ALGORITHMS) -> SigningKeys:
        """Fresh keys, one per algorithm (tests, and a first start)."""
        made = [generate_key(alg) for alg in algorithms]
        return cls.from_jwks(made, {jwk["alg"]: jwk["kid"] for jwk in made})

    @property
    def algorithms(self) -> list[str]:
        return [alg for alg in ALGORITHMS if alg in self.current]

    @property
    def default_algorithm(self) -> str:
        return self.algorithms[0]

    def signing_key(self, alg: str | None = None) -> AnyKey:
        """The key that signs for ``alg`` now (the default algorithm's if None)."""
        kid = self.current.get(alg or self.default_algorithm)
        if kid is None:
            raise SigningKeyError(f"no current key for {alg}")
        return self.keys[kid]

    def jwks(self) -> dict[str, Any]:
        """The public keys, for the JWKS endpoint and for verification."""
        seen: dict[str, dict[str, Any]] = {}
        for kid, key in self.keys.items():
            seen[kid] = dict(key.as_dict(private=False))
        for jwk in self.published:
            public = {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
            seen.setdefault(str(jwk.get("kid")), public)
        return {"keys": list(seen.values())}

    def public(self) -> KeySet:
        return KeySet.import_key_set(cast(KeySetSerialization, self.jwks()))


__all__ = ["ALGORITHMS", "SigningKeyError", "SigningKeys", "generate_key"]

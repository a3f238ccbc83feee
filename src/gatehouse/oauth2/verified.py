"""Access tokens whose JWS was verified already, by the SHA-256 of the token, until they
expire: a token presented again (introspection, userinfo, the bearer rule condition) skips
the header checks, the key lookup and the signature check.

What is kept is what cannot change while the token lives: its verified claims and its row's
fixed fields. Revocation can change, so the provider still reads the row's ``revoked_at``
from the OAuth2 DB on every use (one primary-key SELECT): a revocation by any instance
counts at once everywhere. ``iss``, ``aud``, ``exp`` and ``iat`` are re-checked on every use
(:func:`gatehouse.oauth2.jwt.check_claims`). The cache is emptied on a new configuration
(keys withdrawn from the JWKS must stop verifying), and holds at most ``capacity`` tokens
(expired ones go first, then the oldest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gatehouse.oauth2.store import TokenRow

CAPACITY: Final = 10_000


@dataclass(frozen=True, slots=True)
class Verified:
    claims: dict[str, Any]
    row: TokenRow
    #: Epoch seconds after which the entry is dropped (the token's ``exp`` plus leeway).
    until: int


class VerifiedTokens:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._entries: dict[bytes, Verified] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token_hash: bytes, now: int) -> Verified | None:
        entry = self._entries.get(token_hash)
        if entry is not None and entry.until < now:
            del self._entries[token_hash]
            return None
        return entry

    def put(self, token_hash: bytes, entry: Verified, now: int) -> None:
        if token_hash not in self._entries and len(self._entries) >= self.capacity:
            for key in [k for k, v in self._entries.items() if v.until < now]:
                del self._entries[key]
            if len(self._entries) >= self.capacity:
                del self._entries[next(iter(self._entries))]
        self._entries[token_hash] = entry

    def drop(self, token_hash: bytes) -> None:
        self._entries.pop(token_hash, None)

    def clear(self) -> None:
        self._entries.clear()


__all__ = ["CAPACITY", "Verified", "VerifiedTokens"]

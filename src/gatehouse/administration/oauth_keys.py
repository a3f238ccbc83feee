"""The OAuth 2.0 / OpenID Connect signing keys: made, published and rotated by Admin.

Each key has a ``kid``, an algorithm (ES256 on P-256, RS256 with 2048 bits) and the moment
it starts signing (``signs_from``). Everything else follows from those and the settings
(``oauth.signing``), so the key set a view names at any moment is a pure function of the
keys and the clock (:func:`key_view`):

- a key is in the views' JWKS from when it is made: a scheduled key is made
  ``publish_before`` ahead of ``signs_from``, so relying parties have it before it signs;
- it signs (it is ``current`` for its algorithm) from ``signs_from`` until a newer key of
  its algorithm starts signing (its ``retired_at``);
- it stays in the JWKS for the longest token lifetime plus ``keep_after`` after that
  (``drop_at``), so every token it signed still verifies until it expires, then it goes;
- an algorithm taken out of ``oauth.signing.algorithms`` takes its keys with it at once.

A new key is due ``publish_before`` before the current one has signed for ``rotate_every``
(:func:`due`). The very first key of an algorithm signs at once: nothing was signed before.

The private keys are stored only as AES-256-GCM ciphertext under the key file in Admin's
home (``HOME/oauth-keys.key``, :class:`~gatehouse.oath.seeds.Keyring`), bound to their kid.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from gatehouse.config.oauth import OAuthSettings, SigningKeyView
from gatehouse.oath.seeds import Keyring
from gatehouse.oauth2.keys import generate_key

#: The key file in Admin's home that the private keys are encrypted under.
KEYRING_FILE: Final = "oauth-keys.key"
#: The algorithms Admin makes keys for (``EdDSA`` is accepted by the model but not made).
MADE: Final = ("ES256", "RS256")
_PRIVATE: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A signing key as Admin keeps it (without its private part)."""

    kid: str
    alg: str
    public: dict[str, Any]
    created_at: datetime
    signs_from: datetime


@dataclass(frozen=True, slots=True)
class Timeline:
    """``oauth.signing`` and the longest lifetime of a signed token, as durations."""

    rotate_every: timedelta
    publish_before: timedelta
    keep_after: timedelta
    longest_token: timedelta
    algorithms: tuple[str, ...]

    @classmethod
    def of(cls, oauth: OAuthSettings) -> Timeline:
        signing = oauth.signing
        return cls(
            timedelta(seconds=signing.rotate_every),
            timedelta(seconds=signing.publish_before),
            timedelta(seconds=signing.keep_after),
            timedelta(seconds=max(oauth.access_token_lifetime, oauth.id_token_lifetime)),
            tuple(alg for alg in signing.algorithms if alg in MADE),
        )


def public_of(jwk: dict[str, Any]) -> dict[str, Any]:
    """A JWK without its private members."""
    return {k: v for k, v in jwk.items() if k not in _PRIVATE}


def _of(records: Iterable[KeyRecord], alg: str) -> list[KeyRecord]:
    return sorted((r for r in records if r.alg == alg), key=lambda r: (r.signs_from, r.kid))


def current(records: Iterable[KeyRecord], alg: str, now: datetime) -> KeyRecord | None:
    """The key that signs for ``alg`` at ``now``: the latest to have started."""
    started = [r for r in _of(records, alg) if r.signs_from <= now]
    return started[-1] if started else None


def retired_at(record: KeyRecord, records: Iterable[KeyRecord]) -> datetime | None:
    """When ``record`` stops signing: the start of the next key of its algorithm."""
    later = [
        r
        for r in _of(records, record.alg)
        if (r.signs_from, r.kid) > (record.signs_from, record.kid)
    ]
    return later[0].signs_from if later else None


def drop_at(record: KeyRecord, records: Iterable[KeyRecord], timeline: Timeline) -> datetime | None:
    """When ``record`` leaves the JWKS: what it signed last has expired, plus keep_after."""
    retired = retired_at(record, records)
    if retired is None:
        return None
    return retired + timeline.longest_token + timeline.keep_after


def published(records: Sequence[KeyRecord], now: datetime, timeline: Timeline) -> list[KeyRecord]:
    """The keys in the JWKS at ``now``: every key not dropped yet (upcoming ones too) of an
    algorithm in ``oauth.signing.algorithms`` (taking one out drops its keys at once)."""
    kept = []
    for record in records:
        if record.alg not in timeline.algorithms:
            continue
        gone = drop_at(record, records, timeline)
        if gone is None or now < gone:
            kept.append(record)
    return sorted(kept, key=lambda r: (r.alg, r.signs_from, r.kid))


def dropped(records: Sequence[KeyRecord], now: datetime, timeline: Timeline) -> list[str]:
    """The kids that left the JWKS for good (their rows can go)."""
    kept = {r.kid for r in published(records, now, timeline)}
    return [r.kid for r in records if r.kid not in kept]


def key_view(records: Sequence[KeyRecord], now: datetime, timeline: Timeline) -> SigningKeyView:
    """What the views name at ``now``: the public keys and the kid signing per algorithm."""
    keys = published(records, now, timeline)
    signing = {}
    for alg in timeline.algorithms:
        record = current(keys, alg, now)
        if record is not None:
            signing[alg] = record.kid
    return SigningKeyView.model_validate(
        {"jwks": {"keys": [dict(r.public) for r in keys]}, "current": signing}
    )


def due(records: Sequence[KeyRecord], now: datetime, timeline: Timeline) -> dict[str, datetime]:
    """The keys to make now: algorithm -> when the new key starts signing."""
    made: dict[str, datetime] = {}
    for alg in timeline.algorithms:
        signing = current(records, alg, now)
        upcoming = [r for r in _of(records, alg) if r.signs_from > now]
        if upcoming:
            continue
        if signing is None:
            made[alg] = now  # the first key: nothing was signed before it
        elif now >= signing.signs_from + timeline.rotate_every - timeline.publish_before:
            made[alg] = now + timeline.publish_before
    return made


def next_change(records: Sequence[KeyRecord], now: datetime, timeline: Timeline) -> datetime | None:
    """The next moment the view or the due keys change after ``now`` (None: never)."""
    moments: list[datetime] = []
    for record in records:
        if record.signs_from > now:
            moments.append(record.signs_from)
        gone = drop_at(record, records, timeline)
        if gone is not None and gone > now:
            moments.append(gone)
    for alg in timeline.algorithms:
        signing = current(records, alg, now)
        if signing is not None:
            rotation = signing.signs_from + timeline.rotate_every - timeline.publish_before
            if rotation > now:
                moments.append(rotation)
    return min(moments) if moments else None


# --- the private keys at rest --------------------------------------------------------------


def _aad(kid: str) -> bytes:
    return f"gatehouse oauth signing key {kid}".encode()


@dataclass(frozen=True, slots=True)
class SealedKey:
    """A new key: its record, and its private JWK sealed under the key file."""

    record: KeyRecord
    keyring_id: str
    ciphertext: bytes


def make_key(alg: str, keyring: Keyring, now: datetime, signs_from: datetime) -> SealedKey:
    """A new private key for ``alg``, sealed; the clear key is not kept."""
    jwk = generate_key(alg)
    kid = str(jwk["kid"])
    keyring_id, blob = keyring.encrypt(json.dumps(jwk).encode(), _aad(kid))
    record = KeyRecord(kid, alg, public_of(jwk), now, signs_from)
    return SealedKey(record, keyring_id, blob)


def open_key(kid: str, keyring: Keyring, keyring_id: str, ciphertext: bytes) -> dict[str, Any]:
    """The private JWK of a sealed key (raises KeyringError if it does not authenticate)."""
    jwk: dict[str, Any] = json.loads(keyring.decrypt(keyring_id, ciphertext, _aad(kid)))
    return jwk


__all__ = [
    "KEYRING_FILE",
    "KeyRecord",
    "SealedKey",
    "Timeline",
    "current",
    "drop_at",
    "dropped",
    "due",
    "key_view",
    "make_key",
    "next_change",
    "open_key",
    "public_of",
    "published",
    "retired_at",
]

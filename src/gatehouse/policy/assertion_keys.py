"""The Policy services' identity assertion keys: one private key per service, in its home;
the public keys of all of them, in the shared session DB, published as one key set.

Each Policy service makes its own P-256 key the first time it starts
(``HOME/policy-assertion-key.pem``, mode 0600) and never shares it. It registers the public
JWK in ``assertion_keys`` and, while it runs, keeps moving the row's ``not_after`` forward
(:data:`PUBLISHED_FOR` ahead, every purge round); the key set (``GET {portal}jwks.json``)
is every row not past ``not_after``, from whichever Policy service answers. So any Policy
service can sign, and a backend checking against the key set accepts them all; a service
that stopped for good drops out of the set a day later (its tokens lived a minute).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from gatehouse.policy.assertions import SigningKey
from gatehouse.storage.engine import Database
from gatehouse.storage.models import AssertionKey
from gatehouse.storage.permissions import tighten

KEY_FILE = "policy-assertion-key.pem"
#: How far ahead a running service keeps its key published.
PUBLISHED_FOR = timedelta(days=1)
#: How long a key set read from the DB is answered again (the endpoint is public).
JWKS_CACHE_SECONDS = 5.0


def load_or_create_signing_key(path: Path) -> SigningKey:
    """Read the PEM private key at ``path``, creating it (P-256, mode 0600) the first time;
    an existing file others may read is made owner-only.

    Raises:
        OSError: the file cannot be read or written.
        ValueError: the file holds no P-256 private key.
    """
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        pem = _create(path)
    else:
        tighten(path)  # a private key others can read: made owner-only, logged
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{path}: not a P-256 private key")
    return SigningKey.of(key)


def _create(path: Path) -> bytes:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    try:
        os.link(temp, path)  # atomic: a concurrent first start keeps one key
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return path.read_bytes()


class KeyRegistry:
    """This service's key in the session DB, and the key set of every service."""

    def __init__(self, db: Database, key: SigningKey) -> None:
        self.db = db
        self.key = key
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def register(self, now: datetime) -> None:
        """Publish this service's key until ``now`` + :data:`PUBLISHED_FOR` (an upsert)."""
        not_after = now + PUBLISHED_FOR
        async with self.db.connect() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            statement = (
                insert(AssertionKey)
                .values(
                    kid=self.key.kid,
                    public_jwk=json.dumps(dict(self.key.jwk), sort_keys=True),
                    created_at=now,
                    not_after=not_after,
                )
                .on_conflict_do_update(
                    index_elements=[AssertionKey.kid], set_={"not_after": not_after}
                )
            )
            await conn.execute(statement)
        self._cached = None

    async def purge(self, now: datetime) -> int:
        """Delete the keys past ``not_after``; how many."""
        async with self.db.connect() as conn:
            result = await conn.execute(delete(AssertionKey).where(AssertionKey.not_after <= now))
        return int(result.rowcount or 0)

    async def jwks(self, now: datetime) -> dict[str, Any]:
        """The key set: ``{"keys": [JWK, ...]}``, every key not past ``not_after``."""
        cached, clock = self._cached, time.monotonic()
        if cached is not None and clock - cached[0] < JWKS_CACHE_SECONDS:
            return cached[1]
        async with self.db.connect() as conn:
            rows = await conn.execute(
                select(AssertionKey.public_jwk)
                .where(AssertionKey.not_after > now)
                .order_by(AssertionKey.created_at, AssertionKey.kid)
            )
            keys = [json.loads(text) for (text,) in rows]
        document = {"keys": keys}
        self._cached = (clock, document)
        return document

"""The published key set: every Policy service's key in the session DB, until ``not_after``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatehouse.policy import assertion_keys
from gatehouse.policy.assertion_keys import PUBLISHED_FOR, KeyRegistry
from gatehouse.policy.assertions import SigningKey
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_every_service_key_is_published_until_not_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assertion_keys, "JWKS_CACHE_SECONDS", 0.0)
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"

    async def scenario() -> None:
        await upgrade(url, "session")
        db = Database(url)
        try:
            first, second = (
                KeyRegistry(db, SigningKey.generate()),
                KeyRegistry(db, SigningKey.generate()),
            )
            await first.register(T0)
            await second.register(T0 + timedelta(hours=1))
            kids = [k["kid"] for k in (await first.jwks(T0))["keys"]]
            assert kids == [first.key.kid, second.key.kid]
            assert (await second.jwks(T0))["keys"][0] == dict(first.key.jwk)
            # The first service stopped refreshing: it drops out once past not_after...
            after = T0 + PUBLISHED_FOR + timedelta(minutes=1)
            assert [k["kid"] for k in (await second.jwks(after))["keys"]] == [second.key.kid]
            # ...and is purged; registering again is an upsert that moves not_after.
            assert await second.purge(after) == 1
            await second.register(after)
            await second.register(after)
            assert [k["kid"] for k in (await first.jwks(after))["keys"]] == [second.key.kid]
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_the_key_set_is_cached_briefly(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"

    async def scenario() -> None:
        await upgrade(url, "session")
        db = Database(url)
        try:
            one, two, three = (KeyRegistry(db, SigningKey.generate()) for _ in range(3))
            await one.register(T0)
            assert len((await two.jwks(T0))["keys"]) == 1
            await three.register(T0)
            assert len((await two.jwks(T0))["keys"]) == 1  # answered from the cache
            await two.register(T0)  # its own registration drops its cache
            assert len((await two.jwks(T0))["keys"]) == 3
        finally:
            await db.dispose()

    asyncio.run(scenario())

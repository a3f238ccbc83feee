"""Access tokens verified once (gatehouse.oauth2.verified): revocation by another instance
still counts at once, expiry and a key withdrawn by a new configuration too."""

from __future__ import annotations

import sqlite3

from gatehouse.oauth2.keys import SigningKeys
from gatehouse.oauth2.provider import Provider
from gatehouse.oauth2.server import ProviderConfig
from gatehouse.oauth2.store import OAuth2Store, secret_hash
from gatehouse.oauth2.verified import Verified, VerifiedTokens
from gatehouse.storage.engine import Database
from tests.oauth2.harness import (
    CLIENTS,
    KEYS,
    SETTINGS,
    Env,
    Users,
    basic,
    code_for,
    exchange,
    post,
    with_env,
)


async def _active(p: Provider, token: str) -> bool:
    answer = await post(p, "introspect", {"token": token}, basic("app1"))
    assert answer.status == 200, answer.body
    return bool(answer.json()["active"])


def test_a_cached_token_revoked_by_another_instance_is_inactive_at_once(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        token = (await exchange(p, await code_for(p))).json()["access_token"]
        other_db = Database(oauth2_db)
        try:
            other = Provider(
                OAuth2Store(other_db.engine),
                ProviderConfig(SETTINGS, CLIENTS, KEYS),
                Users(),
                env.clock,
            )
            assert await _active(p, token)
            assert await _active(p, token)
            assert len(p._verified) == 1
            assert (await p.bearer(token)).active
            assert (await post(other, "revoke", {"token": token}, basic("app1"))).status == 200
            assert not await _active(p, token)
            assert not (await p.bearer(token)).active
        finally:
            await other_db.dispose()

    with_env(oauth2_db, go)


def test_a_cached_token_expires_and_a_withdrawn_key_stops_verifying(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        token = (await exchange(p, await code_for(p))).json()["access_token"]
        assert (await p.bearer(token)).active
        env.clock.now += 3600
        assert not (await p.bearer(token)).active
        assert not await _active(p, token)
        env.clock.now -= 3600
        assert (await p.bearer(token)).active
        p.configure(ProviderConfig(SETTINGS, CLIENTS, SigningKeys.generate()))
        assert not (await p.bearer(token)).active
        assert not await _active(p, token)

    with_env(oauth2_db, go)


def test_the_cache_is_bounded_and_drops_expired_entries_first() -> None:
    cache = VerifiedTokens(capacity=2)
    row = object()
    cache.put(b"a", Verified({}, row, 10), 0)  # type: ignore[arg-type]
    cache.put(b"b", Verified({}, row, 100), 0)  # type: ignore[arg-type]
    cache.put(b"c", Verified({}, row, 100), 50)  # type: ignore[arg-type]
    assert cache.get(b"a", 50) is None
    assert cache.get(b"b", 50)
    assert cache.get(b"c", 50)
    cache.put(b"d", Verified({}, row, 100), 50)  # type: ignore[arg-type]
    assert cache.get(b"b", 50) is None
    assert len(cache) == 2
    assert cache.get(b"c", 101) is None


def test_the_revocation_check_reads_sqlite_synchronously_and_agrees(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p, store = env.provider, env.store
        token = (await exchange(p, await code_for(p))).json()["access_token"]
        assert await _active(p, token)
        assert await _active(p, token)
        assert store._reader is not None
        row_id = next(iter(p._verified._entries.values())).row.id
        assert await store.revocation(row_id) == (True, None)
        assert await store.revocation("no-such-row") == (False, None)
        assert (await post(p, "revoke", {"token": token}, basic("app1"))).status == 200
        found, revoked_at = await store.revocation(row_id)
        assert found
        assert revoked_at is not None
        assert revoked_at.utcoffset() is not None
        store.close()
        assert await store.revocation(row_id) == (found, revoked_at)  # reopened
        store._reader_path = None  # the async way says the same
        assert await store.revocation(row_id) == (found, revoked_at)

    with_env(oauth2_db, go)


def test_a_code_read_synchronously_equals_the_async_read(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p, store = env.provider, env.store
        code = await code_for(p)
        fresh = await store.find_code(secret_hash(code))
        assert store._reader is not None
        assert fresh is not None
        assert fresh.amr == ("password",)
        assert fresh.used_at is None
        assert (await exchange(p, code)).status == 200
        used = await store.find_code(secret_hash(code))
        store._reader_path = None
        assert used == await store.find_code(secret_hash(code))
        assert used is not None
        assert used.used_at is not None
        assert used.expires_at == fresh.expires_at
        assert (await exchange(p, code)).status == 400

    with_env(oauth2_db, go)


def test_the_synchronous_exchange_writes_what_the_async_one_writes(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p, store = env.provider, env.store
        fast = (await exchange(p, await code_for(p, attempt="s1"))).json()
        assert store._sync_writer is not None
        store._reader_path = None  # the SQLAlchemy way
        slow = (await exchange(p, await code_for(p, attempt="s2"))).json()
        path = oauth2_db.removeprefix("sqlite+aiosqlite:///")
        with sqlite3.connect(path) as db:
            rows = db.execute(
                "SELECT access_expires_at, refresh_expires_at, created_at, typeof(refresh_hash)"
                " FROM oauth2_tokens ORDER BY created_at"
            ).fetchall()
            used = db.execute("SELECT used_at FROM oauth2_codes ORDER BY used_at").fetchall()
        assert len(rows) == 2
        assert rows[0] == rows[1]  # same clock, same text
        assert used[0] == used[1]
        for token in (fast, slow):
            assert (
                await post(p, "introspect", {"token": token["access_token"]}, basic("app1"))
            ).json()["active"]
            refreshed = await post(
                p,
                "token",
                {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
                basic("app1"),
            )
            assert refreshed.status == 200, refreshed.body
        store._reader_path = oauth2_db.removeprefix("sqlite+aiosqlite:///")
        again = await post(
            p,
            "token",
            {"grant_type": "refresh_token", "refresh_token": fast["refresh_token"]},
            basic("app1"),
        )
        assert again.status == 400  # a rotated refresh token is refused, and its family revoked
        assert not (await p.bearer(fast["access_token"])).active

    with_env(oauth2_db, go)

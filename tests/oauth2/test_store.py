"""The OAuth2 DB: its migration, and the races the store decides with one statement."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from gatehouse.oauth2.models import OAuth2Base
from gatehouse.oauth2.store import NewCode, OAuth2Store, TokenRow, new_id, secret_hash
from gatehouse.storage.engine import Database
from tests.oauth2.harness import Env, basic, body, code_for, exchange, make_provider, post

NOW = datetime(2033, 5, 18, 3, 33, 20, tzinfo=UTC)


def new_code(attempt: str) -> NewCode:
    return NewCode(
        code_hash=secret_hash(new_id()),
        client_id="app1",
        username="alice",
        redirect_uri="https://app1.example/cb",
        scope="openid",
        auth_time=0,
        expires_at=NOW + timedelta(seconds=60),
        attempt=attempt,
    )


def tokens_for(family: str) -> TokenRow:
    return TokenRow(
        id=new_id(),
        family_id=family,
        client_id="app1",
        username="alice",
        scope="openid",
        sid="s",
        access_jti=new_id(),
        access_expires_at=NOW + timedelta(minutes=10),
        refresh_hash=secret_hash(new_id()),
        refresh_expires_at=NOW + timedelta(days=1),
    )


def store_race(url: str, rounds: int) -> None:
    """Two engines (two services' pools) exchange the same code at once: one wins."""

    async def go() -> None:
        one, two = Database(url), Database(url)
        try:
            a, b = OAuth2Store(one.engine), OAuth2Store(two.engine)
            for n in range(rounds):
                code = new_code(f"race-{n}")
                await a.add_code(code, NOW)
                results = await asyncio.gather(
                    a.exchange_code(code.id, tokens_for(code.id), NOW),
                    b.exchange_code(code.id, tokens_for(code.id), NOW),
                )
                assert sorted(results) == [False, True], (n, results)
                assert len(await a.family(code.id)) == 1
                # the refresh token of the winner is rotated once, too
                row = (await a.family(code.id))[0]
                rotated = await asyncio.gather(
                    a.rotate_refresh(row.id, tokens_for(code.id), NOW),
                    b.rotate_refresh(row.id, tokens_for(code.id), NOW),
                )
                assert sorted(rotated) == [False, True], (n, rotated)
        finally:
            await one.dispose()
            await two.dispose()

    asyncio.run(go())


def provider_race(url: str, rounds: int) -> None:
    """Two providers on two engines answer the same token request: one 200, one
    invalid_grant (and the code's tokens are revoked: it was used twice)."""

    async def go() -> None:
        one, two = Database(url), Database(url)
        try:
            first, second = make_provider(one), make_provider(two)
            for n in range(rounds):
                code = await code_for(first.provider, attempt=f"p-{n}")
                answers = await asyncio.gather(
                    exchange(first.provider, code), exchange(second.provider, code)
                )
                assert sorted(a.status for a in answers) == [200, 400], n
                loser = next(a for a in answers if a.status == 400)
                assert body(loser)["error"] == "invalid_grant"
        finally:
            await one.dispose()
            await two.dispose()

    asyncio.run(go())


def test_two_engines_race_on_postgresql(oauth2_pg: str) -> None:
    store_race(oauth2_pg, 200)
    provider_race(oauth2_pg, 50)


def test_two_engines_race_on_sqlite(oauth2_db: str) -> None:
    store_race(oauth2_db, 30)
    provider_race(oauth2_db, 10)


def test_refresh_rotation_works_on_postgresql(oauth2_pg: str) -> None:
    async def go() -> None:
        db = Database(oauth2_pg)
        try:
            env: Env = make_provider(db)
            p = env.provider
            tokens = body(await exchange(p, await code_for(p)))
            for _ in range(3):
                form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
                answer = await post(p, "token", form, basic("app1"))
                assert answer.status == 200
                tokens = body(answer)
            assert await p.session_ended("sid-alice") == 4
        finally:
            await db.dispose()

    asyncio.run(go())


def test_a_retried_attempt_replaces_only_its_unused_code(oauth2_db: str) -> None:
    async def go() -> None:
        db = Database(oauth2_db)
        try:
            store = OAuth2Store(db.engine)
            first, other = new_code("same"), new_code("other")
            await store.add_code(first, NOW)
            await store.add_code(other, NOW)
            second = new_code("same")
            await store.add_code(second, NOW)
            assert await store.find_code(first.code_hash) is None
            assert await store.find_code(second.code_hash) is not None
            assert await store.find_code(other.code_hash) is not None
        finally:
            await db.dispose()

    asyncio.run(go())


def test_prune_deletes_only_what_can_no_longer_be_presented(oauth2_db: str) -> None:
    async def go() -> None:
        db = Database(oauth2_db)
        try:
            store = OAuth2Store(db.engine)
            code = new_code("c")
            await store.add_code(code, NOW)
            live = tokens_for("f1")
            no_refresh = replace(
                live, id=new_id(), access_jti=new_id(), refresh_hash=None, refresh_expires_at=None
            )
            await store.add_tokens(live, NOW)
            await store.add_tokens(no_refresh, NOW)
            assert await store.prune(NOW + timedelta(seconds=30)) == 0
            # code expired (60 s) and the access-only row (10 min); the refresh lives a day
            assert await store.prune(NOW + timedelta(hours=1)) == 2
            assert await store.find_code(code.code_hash) is None
            assert await store.find_by_jti(live.access_jti) is not None
            assert await store.prune(NOW + timedelta(days=2)) == 1
            assert await store.find_by_jti(live.access_jti) is None
        finally:
            await db.dispose()

    asyncio.run(go())


def test_the_migration_matches_the_model(oauth2_db: str) -> None:
    def compare(conn: Connection) -> tuple[list[object], set[str]]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
        return list(compare_metadata(context, OAuth2Base.metadata)), tables

    async def go() -> tuple[list[object], set[str]]:
        db = Database(oauth2_db)
        try:
            async with db.engine.connect() as conn:
                return await conn.run_sync(compare)
        finally:
            await db.dispose()

    diff, tables = asyncio.run(go())
    assert diff == []
    assert tables == set(OAuth2Base.metadata.tables)


def test_db_upgrade_which_oauth2_makes_home_oauth2_db(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gatehouse",
            "db",
            "upgrade",
            "--which",
            "oauth2",
            "--home",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"OAuth2 DB: sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}" in result.stdout
    assert "user DB" not in result.stdout
    assert (tmp_path / "oauth2.db").exists()
    assert not (tmp_path / "gatehouse.db").exists()

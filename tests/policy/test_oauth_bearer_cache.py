"""The Policy service's cache of bearer-token introspections (``token_scopes_any``), against a
real HTTP server answering ``OAUTH_BEARER`` as declared (the declaration's own route): keyed
by the token's hash, kept until min(the token's expiry, 30 s), one call for concurrent
decisions, a 503 (never a cached deny) while no Authentication service answers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

from gatehouse.authentication.oauth_calls import OAUTH_BEARER, BearerAnswer, BearerRequest
from gatehouse.internal.client import FailoverClient
from gatehouse.internal.errors import ServiceError
from gatehouse.policy.bearer_tokens import BearerCache, bearer_token
from gatehouse.trust.identity import Peer
from tests.support.asgi_server import serving
from tests.support.processes import free_port

NOW = datetime.now(UTC).replace(microsecond=0)
EXP = int(NOW.timestamp()) + 100


@contextlib.asynccontextmanager
async def _introspection(seen: list[str], delay: float = 0.0) -> AsyncIterator[str]:
    async def bearer(request: Request, peer: Peer | None, body: BearerRequest) -> BearerAnswer:
        seen.append(body.token)
        await asyncio.sleep(delay)
        if body.token.startswith("good"):
            return BearerAnswer(True, "api.read", "app1", "alice", EXP)
        return BearerAnswer(False)

    app = Starlette(routes=[OAUTH_BEARER.route(bearer)])
    async with serving(uvicorn.Config(app, "127.0.0.1", free_port(), log_level="warning")) as url:
        yield url


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """An async test on its own event loop, bounded in time."""

    @functools.wraps(test)
    def wrapped() -> None:
        async def bounded() -> None:
            async with asyncio.timeout(30):
                await test()

        asyncio.run(bounded())

    return wrapped


def _client(url: str) -> FailoverClient:
    return FailoverClient([url], connect_timeout=1, timeout=2)


@pytest.mark.parametrize(
    ("field", "token"),
    [
        ("Bearer abc.def-ghi_jkl~", "abc.def-ghi_jkl~"),
        ("bearer  abc==", "abc=="),
        ("Basic YWJj", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("Bearer ab\u00e9", None),
        ("", None),
        (None, None),
    ],
)
def test_the_bearer_token_of_an_authorization_field(field: str | None, token: str | None) -> None:
    assert bearer_token(field) == token


@run
async def test_answers_are_cached_by_hash_until_the_sooner_of_30_s_and_expiry() -> None:
    seen: list[str] = []
    async with _introspection(seen) as url, _client(url) as client:
        cache = BearerCache()
        found = await cache.lookup(client, "Bearer good1", NOW)
        assert found is not None
        answer, until = found
        assert answer.active
        assert answer.scopes == {"api.read"}
        assert until == NOW + timedelta(seconds=30)
        assert await cache.lookup(client, "Bearer good1", NOW + timedelta(seconds=29)) == found
        assert seen == ["good1"]
        assert all("good1" not in repr(key) for key in cache._entries)  # hashes only
        later = await cache.lookup(client, "Bearer good1", NOW + timedelta(seconds=80))
        assert later is not None
        assert later[1] == datetime.fromtimestamp(EXP, UTC)  # the token's expiry comes first
        assert seen == ["good1", "good1"]
        inactive = await cache.lookup(client, "Bearer bad", NOW)
        assert inactive is not None
        assert not inactive[0].active
        assert await cache.lookup(client, "Basic x", NOW) is None
        assert seen == ["good1", "good1", "bad"]


@run
async def test_concurrent_decisions_share_one_call() -> None:
    seen: list[str] = []
    async with _introspection(seen, delay=0.2) as url, _client(url) as client:
        cache = BearerCache()
        answers: list[Any] = await asyncio.gather(
            *(cache.lookup(client, "Bearer good2", NOW) for _ in range(10))
        )
        assert {a[0].active for a in answers} == {True}
        assert seen == ["good2"]


@run
async def test_no_authentication_service_is_a_503_not_a_deny() -> None:
    async with _client(f"http://127.0.0.1:{free_port()}") as client:
        cache = BearerCache()
        with pytest.raises(ServiceError) as caught:
            await cache.lookup(client, "Bearer good3", NOW)
        assert caught.value.status == 503
        assert not cache._entries

"""The demo backend's assertion check: the key set is fetched once, again on an unknown key,
but never more than once per 10 s (forged kids cannot make it hammer the Policy services)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gatehouse.demo_backend import assertion_check
from gatehouse.demo_backend.assertion_check import AssertionCheck, KeySetUnavailable
from gatehouse.policy.assertions import AssertionInvalid, SigningKey, UnknownKey, sign

HEADER = b"gatehouse-assertion"


def token(key: SigningKey, audience: str = "wiki") -> bytes:
    now = int(time.time())
    claims = {"sub": "alice", "aud": audience, "iat": now, "exp": now + 60}
    return sign(claims, key).encode()


class KeySet:
    def __init__(self, *keys: SigningKey) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.down = False

    def __call__(self, url: str) -> dict[str, Any]:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return {"keys": [dict(k.jwk) for k in self.keys]}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(assertion_check.time, "monotonic", lambda: now[0])
    return now


def test_unknown_keys_refetch_at_most_every_10s(
    monkeypatch: pytest.MonkeyPatch, clock: list[float]
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    keys = KeySet(old)
    monkeypatch.setattr(assertion_check, "_fetch", keys)
    check = AssertionCheck("http://ap/_gatehouse/jwks.json", "wiki")

    async def scenario() -> None:
        assert (await check.claims([(HEADER, token(old))]))["sub"] == "alice"
        assert keys.fetches == 1
        keys.keys.append(new)  # a new Policy service
        clock[0] += 3
        with pytest.raises(UnknownKey):
            await check.claims([(HEADER, token(new))])
        assert keys.fetches == 1  # fetched 3 s ago: not again
        clock[0] += 8
        assert (await check.claims([(HEADER, token(new))]))["sub"] == "alice"
        assert keys.fetches == 2
        for _ in range(5):
            with pytest.raises(UnknownKey):
                await check.claims([(HEADER, token(SigningKey.generate()))])
        assert keys.fetches == 2
        with pytest.raises(AssertionInvalid, match="wrong audience"):
            await check.claims([(HEADER, token(old, "blog"))])
        with pytest.raises(AssertionInvalid, match="no identity assertion"):
            await check.claims([(b"remote-user", b"alice")])
        with pytest.raises(AssertionInvalid, match="more than one"):
            await check.claims([(HEADER, token(old)), (HEADER, token(old))])
        # Down: the cached key set keeps working.
        keys.down = True
        clock[0] += 400
        assert (await check.claims([(HEADER, token(old))]))["sub"] == "alice"

    asyncio.run(scenario())


def test_no_key_set_at_all_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = KeySet()
    keys.down = True
    monkeypatch.setattr(assertion_check, "_fetch", keys)
    check = AssertionCheck("http://ap/_gatehouse/jwks.json", "wiki")
    with pytest.raises(KeySetUnavailable, match="connection refused"):
        asyncio.run(check.claims([(HEADER, token(SigningKey.generate()))]))

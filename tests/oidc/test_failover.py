"""Any Authentication service can serve any step: two Authentication services on one OAuth2
DB on PostgreSQL (the HA setup) behind the Policy service and the Access Point. The first
issues an authorization code (it is the only one running then); the second is started and the
first is killed with SIGKILL before the code is exchanged; Authlib's client exchanges the code
through the Access Point (served by the second), the ID token verifies, UserInfo and a refresh
work, and the code cannot be used a second time."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.oidc.support import CONFIDENTIAL, P, Pair, sign_in, start_pair
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str) -> Iterator[Pair]:
    started = start_pair(tmp_path, postgres_url)
    try:
        yield started
    finally:
        started.stop()


async def exchange_after_kill(pair: Pair) -> None:
    provider = pair.provider
    user = provider.new_user("failover-user")
    async with AsyncOAuth2Client(
        client_id=CONFIDENTIAL,
        client_secret=provider.secret,
        scope="openid profile offline_access",
        redirect_uri=provider.redirect_uri,
        code_challenge_method="S256",
        timeout=10,
    ) as client:
        meta = (
            await client.request(
                "GET", f"{provider.issuer}/.well-known/openid-configuration", withhold_token=True
            )
        ).json()
        verifier, nonce = generate_token(48), generate_token(16)
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        # Only the first Authentication service runs: it issues the code.
        callback = await asyncio.to_thread(sign_in, provider, provider.browser(), url, user)
        code = parse_qs(urlsplit(callback).query)["code"][0]

        pair.start_second()
        first = provider.gateway.auth
        first.signal(signal.SIGKILL)
        first.proc.wait(10)

        # The second exchanges it (a moment may pass until the Policy service has it up).
        deadline = time.monotonic() + 10
        token: dict[str, Any] | None = None
        while token is None:
            try:
                token = dict(
                    await client.fetch_token(
                        meta["token_endpoint"],
                        authorization_response=callback,
                        code_verifier=verifier,
                    )
                )
            except OAuthError as exc:
                # Only "no service answered" may be retried: the code was not presented.
                if exc.error != "temporarily_unavailable" or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        keys = KeySet.import_key_set(
            (await client.request("GET", meta["jwks_uri"], withhold_token=True)).json()
        )
        claims = jwt.decode(token["id_token"], keys).claims
        assert claims["sub"] == user
        assert claims["nonce"] == nonce
        assert claims["iss"] == provider.issuer

        info = await client.get(meta["userinfo_endpoint"])
        assert info.status_code == 200
        assert info.json()["sub"] == user
        refreshed = await client.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != token["refresh_token"]

        # The code is spent, whichever instance is asked.
        with pytest.raises(OAuthError) as again:
            await client.fetch_token(
                meta["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                redirect_uri=provider.redirect_uri,
            )
        assert again.value.error == "invalid_grant"
        assert meta["token_endpoint"].startswith(provider.issuer + P)


def test_another_authentication_service_exchanges_the_code_of_a_killed_one(pair: Pair) -> None:
    asyncio.run(exchange_after_kill(pair))

"""Authlib's OAuth 2.0 client (``AsyncOAuth2Client`` on httpx2) as an independent relying
party of a running single node, through the Access Point: discovery, authorization code with
PKCE (S256) for the confidential and the public client, the authorization response's ``iss``
(RFC 9207), the ID token checked against the published JWKS with joserfc (signature, ``kid``,
``iss``, ``aud``, ``nonce``, ``at_hash``, ``auth_time``, ``amr``), UserInfo, introspection,
refresh (rotated; the old one refused, and that reuse revokes the family), and RP-initiated
logout that ends the Gatehouse session (a protected page asks for sign-in again) and the
refresh tokens bound to it. The user's browser is played by following the portal's forms."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.oidc.support import CONFIDENTIAL, PUBLIC, P, Provider, path_of, sign_in


def at_hash(access_token: str, alg: str) -> str:
    digest = hashlib.sha256(access_token.encode()).digest()  # ES256 and RS256: SHA-256
    assert alg in ("ES256", "RS256")
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def check_id_token(
    provider: Provider, meta: dict[str, Any], keys: KeySet, token: dict[str, Any], client: str
) -> dict[str, Any]:
    """The ID token validated as OIDC Core §3.1.3.7 asks; its claims."""
    raw = token["id_token"]
    algorithms = meta["id_token_signing_alg_values_supported"]
    decoded = jwt.decode(raw, keys, algorithms=algorithms)
    assert decoded.header["kid"] in {k["kid"] for k in provider.jwks["keys"]}
    claims = dict(decoded.claims)
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": provider.issuer},
        sub={"essential": True},
        aud={"essential": True, "value": client},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True},
    )
    registry.validate(claims)
    assert claims.get("azp", client) == client
    assert claims["at_hash"] == at_hash(token["access_token"], decoded.header["alg"])
    assert claims["auth_time"] <= time.time() + 5
    assert "password" in claims["amr"]
    return claims


async def discover(client: AsyncOAuth2Client, provider: Provider) -> dict[str, Any]:
    found = await client.request(
        "GET", f"{provider.issuer}/.well-known/openid-configuration", withhold_token=True
    )
    assert found.status_code == 200, found.text
    meta: dict[str, Any] = found.json()
    assert meta["issuer"] == provider.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        assert meta[name].startswith(provider.issuer + P), (name, meta[name])
    rfc8414 = await client.request(
        "GET", f"{provider.issuer}/.well-known/oauth-authorization-server", withhold_token=True
    )
    assert rfc8414.status_code == 200
    assert rfc8414.json()["issuer"] == provider.issuer
    return meta


async def authorize(
    client: AsyncOAuth2Client, provider: Provider, meta: dict[str, Any], browser: Any, user: str
) -> tuple[dict[str, Any], str]:
    """Code + PKCE: the token response and the nonce sent."""
    verifier, nonce = generate_token(48), generate_token(16)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    sent = parse_qs(urlsplit(url).query)
    assert sent["code_challenge_method"] == ["S256"]
    assert sent["code_challenge"][0] != verifier
    callback = await asyncio.to_thread(sign_in, provider, browser, url, user)
    answer = parse_qs(urlsplit(callback).query)
    assert answer["state"] == [state]
    assert answer["iss"] == [provider.issuer]  # RFC 9207
    token = await client.fetch_token(
        meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
    )
    assert token["token_type"].lower() == "bearer"
    assert {"access_token", "id_token", "refresh_token", "expires_in"} <= set(token)
    return dict(token), nonce


async def the_confidential_flow(provider: Provider) -> None:
    user = provider.new_user("authlib-conf")
    browser = provider.browser()
    async with AsyncOAuth2Client(
        client_id=CONFIDENTIAL,
        client_secret=provider.secret,
        token_endpoint_auth_method="client_secret_basic",
        scope="openid profile email offline_access",
        redirect_uri=provider.redirect_uri,
        code_challenge_method="S256",
        timeout=10,
    ) as client:
        meta = await discover(client, provider)
        jwks = await client.request("GET", meta["jwks_uri"], withhold_token=True)
        assert jwks.status_code == 200
        assert jwks.json() == provider.jwks
        keys = KeySet.import_key_set(jwks.json())

        token, nonce = await authorize(client, provider, meta, browser, user)
        claims = check_id_token(provider, meta, keys, token, CONFIDENTIAL)
        assert claims["nonce"] == nonce
        assert claims["sub"] == user
        assert claims["sid"]

        info = await client.get(meta["userinfo_endpoint"])
        assert info.status_code == 200, info.text
        assert info.json()["sub"] == user

        seen = await client.introspect_token(
            meta["introspection_endpoint"], token=token["access_token"]
        )
        assert seen.status_code == 200, seen.text
        assert seen.json()["active"] is True
        assert seen.json()["client_id"] == CONFIDENTIAL

        # Refresh: a new refresh token every time; the ID token's subject stays.
        first_refresh = token["refresh_token"]
        refreshed = await client.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != first_refresh
        assert refreshed["access_token"] != token["access_token"]
        again = await client.get(meta["userinfo_endpoint"])  # with the new access token
        assert again.status_code == 200
        assert again.json()["sub"] == user

        # A protected page works with the Gatehouse session the sign-in made.
        assert browser.get("/").status == 200

        # RP-initiated logout: back to the registered URI with the state; the session is over.
        end = (
            meta["end_session_endpoint"]
            + "?"
            + urlencode(
                {
                    "id_token_hint": token["id_token"],
                    "post_logout_redirect_uri": provider.callback.post_logout_uri,
                    "state": "bye-state",
                }
            )
        )
        ended = browser.get(path_of(end))
        assert ended.status in (302, 303), ended.body[:300]
        assert ended.location == provider.callback.post_logout_uri + "?state=bye-state"
        deadline = time.monotonic() + 3
        while browser.get("/").status == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        page = browser.get("/")
        assert page.status in (302, 303)
        assert urlsplit(page.location).path == f"{P}login"

        # The refresh token bound to the ended session is refused (revoked in the background).
        deadline = time.monotonic() + 3
        error = None
        while error is None:
            try:
                await client.refresh_token(meta["token_endpoint"])
            except OAuthError as exc:
                error = exc.error
            else:
                assert time.monotonic() < deadline, "the session's refresh token still works"
                await asyncio.sleep(0.2)
        assert error == "invalid_grant"


async def the_public_flow(provider: Provider) -> None:
    user = provider.new_user("authlib-pub")
    browser = provider.browser()
    async with AsyncOAuth2Client(
        client_id=PUBLIC,
        token_endpoint_auth_method="none",
        scope="openid profile offline_access",
        redirect_uri=provider.redirect_uri,
        code_challenge_method="S256",
        timeout=10,
    ) as client:
        meta = await discover(client, provider)
        keys = KeySet.import_key_set(
            (await client.request("GET", meta["jwks_uri"], withhold_token=True)).json()
        )
        token, nonce = await authorize(client, provider, meta, browser, user)
        claims = check_id_token(provider, meta, keys, token, PUBLIC)
        assert claims["nonce"] == nonce
        assert claims["sub"] == user
        info = await client.get(meta["userinfo_endpoint"])
        assert info.status_code == 200
        assert info.json()["sub"] == user

        # Rotation, and reuse of the old refresh token revokes the whole family.
        old = token["refresh_token"]
        refreshed = await client.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != old
        with pytest.raises(OAuthError) as reused:
            await client.refresh_token(meta["token_endpoint"], refresh_token=old)
        assert reused.value.error == "invalid_grant"
        with pytest.raises(OAuthError) as family:
            await client.refresh_token(
                meta["token_endpoint"], refresh_token=refreshed["refresh_token"]
            )
        assert family.value.error == "invalid_grant"


def test_authlib_confidential_client(provider: Provider) -> None:
    asyncio.run(the_confidential_flow(provider))


def test_authlib_public_client(provider: Provider) -> None:
    asyncio.run(the_public_flow(provider))


def test_authlib_sees_a_wrong_secret_refused(provider: Provider) -> None:
    async def run() -> None:
        user = provider.new_user("authlib-bad")
        async with AsyncOAuth2Client(
            client_id=CONFIDENTIAL,
            client_secret="not-the-secret",
            scope="openid",
            redirect_uri=provider.redirect_uri,
            code_challenge_method="S256",
            timeout=10,
        ) as client:
            meta = await discover(client, provider)
            verifier = generate_token(48)
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], code_verifier=verifier, nonce="n"
            )
            callback = await asyncio.to_thread(sign_in, provider, provider.browser(), url, user)
            with pytest.raises(OAuthError) as refused:
                await client.fetch_token(
                    meta["token_endpoint"], authorization_response=callback, code_verifier=verifier
                )
            assert refused.value.error == "invalid_client"

    asyncio.run(run())

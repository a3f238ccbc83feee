"""The provider out of the box: ``gatehouse up`` (a single node with its Administration
service), a confidential client registered with ``gatehouse oauth clients add`` (its secret
printed once, on a line of its own; the client published to the services), then Authlib's
client through the node's Access Point: discovery at the AP's URL, code + PKCE, the ID token
checked with the JWKS, UserInfo, refresh; then panva's openid-client with the same client.

Marked as an expected failure (strict) while the Authentication service of ``gatehouse up``
signs with keys the node does not publish; remove the mark when it passes."""

from __future__ import annotations

import asyncio
import re
import time
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.oidc.support import PASSWORD, Callback, P, sign_in
from tests.oidc.test_openid_client import NodeRP, check_result
from tests.support.gateway import Browser
from tests.support.node import Node, node

__all__ = ["node"]


def test_gatehouse_up_with_a_client_added_by_the_cli(node: Node) -> None:
    node.wait_for("Gatehouse is up")
    issuer = f"http://127.0.0.1:{node.port}"
    callback = Callback()
    try:
        added = node.cli(
            "oauth",
            "clients",
            "add",
            "node-rp",
            *("--redirect-uri", callback.redirect_uri),
            *("--scope", "openid profile email offline_access"),
            *("--name", "Node RP"),
        )
        assert added.returncode == 0, added.stderr
        secrets_printed = [
            line.strip()
            for line in added.stdout.splitlines()
            if re.fullmatch(r"[A-Za-z0-9_\-]{32,}", line.strip())
        ]
        assert len(secrets_printed) == 1, added.stdout
        secret = secrets_printed[0]
        listed = node.cli("oauth", "clients", "list")
        assert "node-rp" in listed.stdout
        assert secret not in listed.stdout  # shown once, never again
        user = node.cli("users", "add", "olivia", "--password-stdin", stdin=PASSWORD + "\n")
        assert user.returncode == 0, user.stderr
        asyncio.run(flow(issuer, secret, callback))
        with_openid_client(issuer, secret, callback)
    finally:
        callback.close()


def with_openid_client(issuer: str, secret: str, callback: Callback) -> None:
    """panva's openid-client with the same client (the consent is remembered by now)."""
    browser = Browser("127.0.0.1", int(urlsplit(issuer).port or 80))
    jwks = browser.get(f"{P}oauth2/jwks").json()
    target = SimpleNamespace(
        issuer=issuer, redirect_uri=callback.redirect_uri, callback=callback, jwks=jwks
    )
    rp = NodeRP(target, "node-rp", secret)  # type: ignore[arg-type]
    try:
        first = rp.read()
        rp.send(sign_in(target, browser, first["authorize_url"], "olivia"))  # type: ignore[arg-type]
        check_result(target, rp.read(), "node-rp", "olivia")  # type: ignore[arg-type]
    finally:
        rp.close()


async def flow(issuer: str, secret: str, callback: Callback) -> None:
    target = SimpleNamespace(issuer=issuer, redirect_uri=callback.redirect_uri)
    browser = Browser("127.0.0.1", int(urlsplit(issuer).port or 80))
    async with AsyncOAuth2Client(
        client_id="node-rp",
        client_secret=secret,
        scope="openid profile email offline_access",
        redirect_uri=callback.redirect_uri,
        code_challenge_method="S256",
        timeout=10,
    ) as client:
        meta: dict[str, Any] = (
            await client.request(
                "GET", f"{issuer}/.well-known/openid-configuration", withhold_token=True
            )
        ).json()
        assert meta["issuer"] == issuer  # the AP's URL, out of the box
        assert meta["authorization_endpoint"] == f"{issuer}{P}oauth2/authorize"
        # The published client reaches the services (a moment after the CLI returned; the
        # Authentication service answers 503 until it has the signing keys the version names).
        probe = f"{meta['authorization_endpoint']}?" + urlencode(
            {"response_type": "code", "client_id": "node-rp", "redirect_uri": callback.redirect_uri}
        )
        deadline = time.monotonic() + 10
        while browser.get(urlsplit(probe).path + "?" + urlsplit(probe).query).status in (400, 503):
            assert time.monotonic() < deadline, "the client never reached the services"
            await asyncio.sleep(0.3)

        verifier, nonce = generate_token(48), generate_token(16)
        url, state = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        back = await asyncio.to_thread(sign_in, target, browser, url, "olivia")  # type: ignore[arg-type]
        answer = parse_qs(urlsplit(back).query)
        assert answer["state"] == [state]
        assert answer["iss"] == [issuer]
        token = await client.fetch_token(
            meta["token_endpoint"], authorization_response=back, code_verifier=verifier
        )
        keys = KeySet.import_key_set(
            (await client.request("GET", meta["jwks_uri"], withhold_token=True)).json()
        )
        claims = jwt.decode(token["id_token"], keys).claims
        assert claims["iss"] == issuer
        assert claims["sub"] == "olivia"
        assert claims["nonce"] == nonce
        info = await client.get(meta["userinfo_endpoint"])
        assert info.status_code == 200
        assert info.json()["sub"] == "olivia"
        refreshed = await client.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != token["refresh_token"]

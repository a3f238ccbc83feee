"""End to end in process: Authlib's OAuth 2.0 client (on httpx2) against a tiny Starlette
app that relays to the provider as the Policy service will: discovery, code + PKCE, the
``iss`` of the authorization response (RFC 9207), ID token validation by Authlib's
``CodeIDToken``, userinfo, refresh, introspection and revocation."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx2
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from gatehouse.oauth2.authorize import Consent, Redirect
from gatehouse.oauth2.discovery import metadata
from gatehouse.oauth2.provider import Provider
from gatehouse.oauth2.subject import Subject
from gatehouse.storage.engine import Database
from tests.oauth2.harness import APP1, APP1_SECRET, ISSUER, SETTINGS, Clock, make_provider

PREFIX = SETTINGS.portal_prefix


def relay_app(provider: Provider, user: Subject) -> Starlette:
    """What the Policy service does, in a few lines: the user is signed in and consents."""

    async def discovery(request: Request) -> Response:
        return JSONResponse(metadata(SETTINGS, provider.config.keys.algorithms))

    async def jwks(request: Request) -> Response:
        return JSONResponse(provider.jwks())

    async def authorize(request: Request) -> Response:
        query = dict(request.query_params)
        attempt = secrets.token_hex(8)
        outcome = await provider.authorize(query, user, None, attempt)
        if isinstance(outcome, Consent):
            outcome = await provider.authorize(query, user, "granted", attempt)
        if isinstance(outcome, Redirect):
            return RedirectResponse(outcome.location, 302)
        return PlainTextResponse(repr(outcome), 400)

    async def relay(request: Request) -> Response:
        body = (await request.body()).decode()
        answer = await provider.endpoint(
            request.path_params["name"],
            request.method,
            dict(request.headers),
            body,
            request.url.query,
        )
        return Response(answer.body, answer.status, headers=answer.headers)

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/.well-known/oauth-authorization-server", discovery),
            Route(f"{PREFIX}oauth2/jwks", jwks),
            Route(f"{PREFIX}oauth2/authorize", authorize, methods=["GET", "POST"]),
            Route(f"{PREFIX}oauth2/{{name}}", relay, methods=["GET", "POST"]),
        ]
    )


async def anonymous(client: AsyncOAuth2Client, url: str) -> httpx2.Response:
    """A GET without the token (discovery, JWKS, the browser's authorization request)."""
    return await client.request("GET", url, withhold_token=True)


async def validate_id_token(
    client: AsyncOAuth2Client, meta: dict[str, Any], token: dict[str, Any], nonce: str
) -> dict[str, Any]:
    """As Authlib's OpenID client mixin does it (``parse_id_token``)."""
    jwks = (await anonymous(client, meta["jwks_uri"])).json()
    decoded = jwt.decode(
        token["id_token"],
        key=KeySet.import_key_set(jwks),
        registry=JWSRegistry(algorithms=meta["id_token_signing_alg_values_supported"]),
    )
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        {"iss": {"values": [meta["issuer"]]}},
        {"nonce": nonce, "client_id": client.client_id, "access_token": token["access_token"]},
    )
    claims.validate(leeway=120)
    return dict(claims)


async def flow(db: Database) -> None:
    env = make_provider(db, Clock(time.time()))
    user = Subject("alice", int(time.time()) - 30, ("password", "otp"), "sid-9")
    transport = httpx2.ASGITransport(app=relay_app(env.provider, user))
    client = AsyncOAuth2Client(
        client_id="app1",
        client_secret=APP1_SECRET,
        scope="openid profile email groups",
        redirect_uri=APP1.redirect_uris[0],
        code_challenge_method="S256",
        transport=transport,
        base_url=ISSUER,
    )
    async with client:
        meta = (await anonymous(client, f"{ISSUER}/.well-known/openid-configuration")).json()
        rfc8414 = await anonymous(client, f"{ISSUER}/.well-known/oauth-authorization-server")
        assert meta == rfc8414.json()
        assert meta["issuer"] == ISSUER
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["authorization_response_iss_parameter_supported"] is True

        verifier, nonce = generate_token(48), generate_token(20)
        url, state = client.create_authorization_url(
            meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
        )
        answer = await anonymous(client, url)
        assert answer.status_code == 302
        location = answer.headers["location"]
        assert location.startswith(APP1.redirect_uris[0] + "?")
        response = httpx2.URL(location).params
        assert response["iss"] == meta["issuer"]  # RFC 9207: not a mixed-up server
        assert response["state"] == state

        token = await client.fetch_token(
            meta["token_endpoint"],
            authorization_response=location,
            state=state,
            code_verifier=verifier,
        )
        claims = await validate_id_token(client, meta, token, nonce)
        assert (claims["sub"], claims["amr"], claims["acr"]) == (
            "alice",
            ["password", "otp"],
            "mfa",
        )
        with pytest.raises(Exception, match="nonce"):
            await validate_id_token(client, meta, token, "another-nonce")

        info = (await client.get(meta["userinfo_endpoint"])).json()
        assert info == {
            "sub": "alice",
            "preferred_username": "alice",
            "name": "Alice Liddell",
            "email": "alice@example.org",
            "groups": ["staff", "admins"],
        }

        old_refresh = token["refresh_token"]
        new = await client.refresh_token(meta["token_endpoint"], refresh_token=old_refresh)
        assert new["refresh_token"] != old_refresh
        assert (await client.get(meta["userinfo_endpoint"])).json()["sub"] == "alice"

        introspect, revoke = meta["introspection_endpoint"], meta["revocation_endpoint"]
        seen = await client.introspect_token(introspect, token=new["access_token"])
        assert seen.json()["active"] is True
        revoked = await client.revoke_token(revoke, token=new["refresh_token"])
        assert revoked.status_code == 200
        seen = await client.introspect_token(introspect, token=new["access_token"])
        assert seen.json() == {"active": False}
        assert (await client.get(meta["userinfo_endpoint"])).status_code == 401


def test_authlib_client_runs_the_whole_flow(oauth2_db: str) -> None:
    async def go() -> None:
        db = Database(oauth2_db)
        try:
            await flow(db)
        finally:
            await db.dispose()

    asyncio.run(go())

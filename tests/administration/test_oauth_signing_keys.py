"""The private signing keys leave the Administration service only to an authentication
service's certificate (mutual TLS), as the keys its view names; the Authentication side
(:mod:`gatehouse.authentication.oauth_keys_client`) fetches them from the real Admin
process, keeps them 0600 and signs with them while Admin is down."""

from __future__ import annotations

import asyncio
import ssl
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gatehouse.administration.credentials import operator_context
from gatehouse.authentication.oauth_keys_client import KeyFollower, KeysUnavailable, admin_fetch
from gatehouse.config.oauth import SigningKeyView
from tests.administration.samples import minimal
from tests.support.admin import RealAdmin, real_admin

__all__ = ["real_admin"]

PATH = "/api/v1/oauth/signing-keys"


async def get(admin: RealAdmin, context: ssl.SSLContext, path: str) -> tuple[int, Any]:
    async with admin.client(context) as client:
        response = await client.call("GET", path, retry_safe=True)
    return response.status, response.json()


async def auth_view(admin: RealAdmin) -> dict[str, Any]:
    context = admin.client_context("authentication", "auth1")
    status, envelope = await get(admin, context, "/api/v1/config/auth1?after=0&wait=0")
    assert status == 200, envelope
    view: dict[str, Any] = envelope["view"]["authentication"]["oauth"]
    return view


def test_only_an_authentication_certificate_gets_the_private_keys(
    real_admin: RealAdmin, tmp_path: Path
) -> None:
    async def go() -> None:
        await real_admin.publish(minimal())
        keys = SigningKeyView.model_validate((await auth_view(real_admin))["keys"])
        kids = sorted(keys.current.values())
        assert len(kids) == 2
        query = "&".join(f"kid={k}" for k in kids)

        refused = {
            "access_point": real_admin.client_context("access_point", "ap1"),
            "policy": real_admin.client_context("policy", "ps1"),
            "distribution": real_admin.client_context("distribution", "dist1"),
            "operator": operator_context(real_admin.home),
            "administration": real_admin.client_context("administration", "admin2"),
        }
        for role, context in refused.items():
            status, answer = await get(real_admin, context, f"{PATH}?{query}")
            assert status == 403, (role, answer)
            assert answer["error"] == "forbidden", role
            assert "keys" not in answer, role

        status, answer = await get(
            real_admin, real_admin.client_context("authentication", "auth1"), f"{PATH}?{query}"
        )
        assert status == 200
        assert sorted(k["kid"] for k in answer["keys"]) == kids
        assert all("d" in k for k in answer["keys"])  # private JWKs
        status, answer = await get(
            real_admin, real_admin.client_context("authentication", "auth1"), f"{PATH}?kid="
        )
        assert status == 400

        # The admin token is not a way in either.
        async with real_admin.client(bearer_token=real_admin.token) as client:
            assert (await client.call("GET", PATH, retry_safe=True)).status == 403

    asyncio.run(go())


def test_the_authentication_side_fetches_keeps_and_signs_while_admin_is_down(
    real_admin: RealAdmin, tmp_path: Path
) -> None:
    state_file = tmp_path / "state" / "oauth-signing-keys.json"

    async def go() -> SigningKeyView:
        await real_admin.publish(minimal())
        view = SigningKeyView.model_validate((await auth_view(real_admin))["keys"])
        agent = SimpleNamespace(
            state=SimpleNamespace(admin_urls=(real_admin.url,)),
            credentials=SimpleNamespace(
                client=real_admin.client_context("authentication", "auth1")
            ),
        )
        keys = await KeyFollower(state_file, admin_fetch(agent)).keys_for(view)  # type: ignore[arg-type]
        assert dict(keys.current) == dict(view.current)
        assert {k["kid"] for k in keys.jwks()["keys"]} == {
            k["kid"]  # type: ignore[index]
            for k in view.jwks["keys"]  # type: ignore[union-attr]
        }
        # A policy certificate cannot do what the authentication one did.
        wrong = SimpleNamespace(
            state=agent.state,
            credentials=SimpleNamespace(client=real_admin.client_context("policy", "ps1")),
        )
        with pytest.raises(KeysUnavailable, match="403"):
            await KeyFollower(tmp_path / "other.json", admin_fetch(wrong)).keys_for(view)  # type: ignore[arg-type]
        return view

    view = asyncio.run(go())
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    real_admin.stop()

    async def down() -> None:
        async def unreachable(kids: Any) -> Any:
            raise AssertionError("Admin is not asked when the file holds the keys")

        keys = await KeyFollower(state_file, unreachable).keys_for(view)
        token = keys.signing_key("ES256")
        assert token.kid == view.current["ES256"]
        with pytest.raises(KeysUnavailable):
            await KeyFollower(tmp_path / "none.json", None).keys_for(view)

    asyncio.run(down())

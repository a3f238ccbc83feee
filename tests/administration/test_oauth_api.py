"""The Admin API's OAuth client and key routes on a real Admin process: the admin token
required, a bad client refused with 422 naming the field, a second registration 409, an
unknown client 404, a secret answered once and never listed, each change a new version."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.administration.samples import minimal
from tests.support.admin import RealAdmin, real_admin

__all__ = ["real_admin"]


async def call(
    admin: RealAdmin, method: str, path: str, body: Any = None, token: str | None = "admin"
) -> tuple[int, Any]:
    bearer = admin.token if token == "admin" else token
    async with admin.client(bearer_token=bearer) as client:
        response = await client.call(method, path, body, retry_safe=False)
    return response.status, response.json()


def test_the_oauth_routes(real_admin: RealAdmin) -> None:
    async def go() -> None:
        for method, path, body in (
            ("GET", "/api/v1/oauth/clients", None),
            ("POST", "/api/v1/oauth/clients", {"client_id": "x"}),
            ("DELETE", "/api/v1/oauth/clients/x", None),
            ("POST", "/api/v1/oauth/clients/x/secret", {}),
            ("GET", "/api/v1/oauth/keys", None),
            ("POST", "/api/v1/oauth/keys/rotate", {}),
        ):
            status, answer = await call(real_admin, method, path, body, token=None)
            assert (status, answer["error"]) == (401, "unauthorized"), (method, path)

        good = {"client_id": "app1", "name": "App", "redirect_uris": ["https://app1.example/cb"]}
        status, answer = await call(real_admin, "POST", "/api/v1/oauth/clients", good)
        assert status == 404  # nothing published yet
        assert "publish a configuration first" in answer["message"]
        version = await real_admin.publish(minimal())

        bad = {"client_id": "app1", "redirect_uris": ["https://app1.example/cb#frag"]}
        status, answer = await call(real_admin, "POST", "/api/v1/oauth/clients", bad)
        assert status == 422
        assert answer["problems"][0]["path"].startswith("redirect_uris")
        assert "fragment" in answer["problems"][0]["message"]

        status, added = await call(real_admin, "POST", "/api/v1/oauth/clients", good)
        assert status == 200, added
        assert added["version"] == version + 1
        assert len(added["secret"]) >= 40
        assert "secret_hash" not in added["client"]
        status, again = await call(real_admin, "POST", "/api/v1/oauth/clients", good)
        assert status == 409
        assert "registered already" in again["message"]

        status, listed = await call(real_admin, "GET", "/api/v1/oauth/clients")
        assert [c["client_id"] for c in listed] == ["app1"]
        assert added["secret"] not in str(listed)
        assert "secret_hash" not in str(listed)

        status, rotated = await call(real_admin, "POST", "/api/v1/oauth/clients/app1/secret", {})
        assert status == 200
        assert rotated["secret"] != added["secret"]
        assert rotated["version"] == version + 2
        status, _ = await call(real_admin, "DELETE", "/api/v1/oauth/clients/app1")
        assert status == 200
        status, gone = await call(real_admin, "DELETE", "/api/v1/oauth/clients/app1")
        assert (status, gone["error"]) == (404, "not_found")

        status, keys = await call(real_admin, "GET", "/api/v1/oauth/keys")
        assert sorted((k["alg"], k["state"]) for k in keys) == [
            ("ES256", "current"),
            ("RS256", "current"),
        ]
        assert all("d" not in k for k in keys)
        status, audit = await call(real_admin, "GET", "/api/v1/audit")
        assert added["secret"] not in str(audit)
        assert rotated["secret"] not in str(audit)

    asyncio.run(go())

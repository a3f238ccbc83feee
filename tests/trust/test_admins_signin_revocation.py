"""The Administration service's console sign-in checks refuse a revoked Authentication
service, as every other internal client does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request

from gatehouse.administration.admins_signin import AuthServiceChecker
from gatehouse.authentication.calls import VERIFY, VerifyAnswer
from gatehouse.internal.hosting import server_config
from gatehouse.trust.identity import ADMINISTRATION, AUTHENTICATION, Peer
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import Credentials
from tests.support.asgi_server import serving
from tests.support.processes import free_port

from .conftest import MakeCredentials, on_uvloop


@contextlib.asynccontextmanager
async def _auth(creds: Credentials, asked: list[str], name: str) -> AsyncIterator[str]:
    async def verify(request: Request, peer: Peer | None, body: Any) -> VerifyAnswer:
        asked.append(name)
        return VerifyAnswer("invalid")

    app = Starlette(routes=[VERIFY.route(verify)])
    config = server_config(
        app, "127.0.0.1", free_port(), tls=creds.server, revocations=Revocations()
    )
    async with serving(config) as url:
        yield url


@on_uvloop
async def test_a_revoked_authentication_service_gets_no_sign_in(
    make_credentials: MakeCredentials,
) -> None:
    auth1 = make_credentials(AUTHENTICATION, "auth1")
    admin = make_credentials(ADMINISTRATION, "admin")
    asked: list[str] = []
    revoked: set[int] = set()

    async def revoked_serials() -> set[int]:
        return revoked

    async with (
        _auth(auth1, asked, "auth1") as url1,
        _auth(make_credentials(AUTHENTICATION, "auth2"), asked, "auth2") as url2,
    ):
        checker = AuthServiceChecker(
            lambda: [url1, url2], lambda: admin.client, revoked=revoked_serials
        )
        try:
            assert (await checker.password("alice", "wrong", "127.0.0.1")).result == "invalid"
            assert asked == ["auth1"]
            revoked.add(auth1.info.serial)  # `gatehouse nodes revoke auth1`
            for _ in range(3):
                assert (await checker.password("alice", "x", "127.0.0.1")).result == "invalid"
            assert asked == ["auth1", "auth2", "auth2", "auth2"]
        finally:
            await checker.aclose()

"""Mutual TLS on an internal listener: the declared call's roles decide, the client checks
the server's role and id, revoked certificates are refused and cut off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.internal.calls import JSON_OBJECT, Call, CallRefused
from gatehouse.internal.client import DEFAULT_HEALTH_PATH, AllEndpointsFailed, FailoverClient
from gatehouse.internal.hosting import server_config
from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import ACCESS_POINT, AUTHENTICATION, POLICY, Peer
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import ClientTLS, Credentials
from tests.support.asgi_server import serving
from tests.support.processes import free_port

from .conftest import MakeCredentials, on_uvloop

WHO = Call(
    "policy",
    "who",
    "POST",
    "/internal/v1/who",
    JSON_OBJECT,
    JSON_OBJECT,
    roles=frozenset({ACCESS_POINT}),
    retry_safe=True,
    summary="who am I (test)",
)


async def _who(request: Request, peer: Peer | None, body: dict[str, Any]) -> dict[str, Any]:
    assert peer is not None
    return {"role": peer.role, "id": peer.service_id, "echo": body}


@contextlib.asynccontextmanager
async def _server(
    make_credentials: MakeCredentials,
    revocations: Revocations | None = None,
    service_id: str = "ps1",
    creds: Credentials | None = None,
) -> AsyncIterator[tuple[str, Revocations]]:
    creds = creds or make_credentials(POLICY, service_id)
    revocations = revocations or Revocations()
    health = Route(DEFAULT_HEALTH_PATH, lambda _: JSONResponse({"status": "ok"}))
    app = Starlette(routes=[WHO.route(_who), health])
    config = server_config(app, "127.0.0.1", free_port(), tls=creds.server, revocations=revocations)
    async with serving(config) as url:
        yield url, revocations


def _client(
    url: str, creds: Any, *, roles: set[str], ids: tuple[str | None, ...] = ()
) -> FailoverClient:
    return FailoverClient(
        [url], tls=ClientTLS(creds.client, frozenset(roles), ids), connect_timeout=2, timeout=2
    )


@on_uvloop
async def test_the_declared_role_is_served_and_learns_its_peer(
    make_credentials: MakeCredentials,
) -> None:
    async with _server(make_credentials) as (url, _):
        ap = make_credentials(ACCESS_POINT, "ap1")
        async with _client(url, ap, roles={POLICY}, ids=("ps1",)) as client:
            answer = await WHO.invoke(client, {"x": 1})
            assert answer == {"role": ACCESS_POINT, "id": "ap1", "echo": {"x": 1}}
            # pooled: the second call makes no new connection
            await WHO.invoke(client, {})
            assert client.pool_stats()[url]["opened"] == 1


@on_uvloop
async def test_another_role_gets_403(
    make_credentials: MakeCredentials, caplog: pytest.LogCaptureFixture
) -> None:
    async with _server(make_credentials) as (url, _):
        auth = make_credentials(AUTHENTICATION, "auth1")
        async with _client(url, auth, roles={POLICY}) as client:
            with pytest.raises(CallRefused) as refused:
                await WHO.invoke(client, {})
    assert refused.value.status == 403
    assert refused.value.code == "forbidden"
    assert "refused POST /internal/v1/who (who) to authentication 'auth1'" in caplog.text


@on_uvloop
async def test_a_certificate_from_another_ca_fails_the_handshake(
    make_credentials: MakeCredentials,
) -> None:
    async with _server(make_credentials) as (url, _):
        stranger = make_credentials(ACCESS_POINT, "ap1", CertificateAuthority.create())
        async with _client(url, stranger, roles={POLICY}) as client:
            with pytest.raises(AllEndpointsFailed):
                await WHO.invoke(client, {})


@on_uvloop
async def test_the_client_checks_the_servers_role_and_id(make_credentials: MakeCredentials) -> None:
    async with _server(make_credentials) as (url, _):
        ap = make_credentials(ACCESS_POINT, "ap1")
        async with _client(url, ap, roles={AUTHENTICATION}) as client:
            with pytest.raises(AllEndpointsFailed, match="not authentication"):
                await WHO.invoke(client, {})
        async with _client(url, ap, roles={POLICY}, ids=("ps2",)) as client:
            with pytest.raises(AllEndpointsFailed, match="not 'ps2'"):
                await WHO.invoke(client, {})


@on_uvloop
async def test_a_revoked_client_is_refused_and_its_open_connections_closed(
    make_credentials: MakeCredentials,
) -> None:
    async with _server(make_credentials) as (url, revocations):
        ap = make_credentials(ACCESS_POINT, "ap1")
        async with _client(url, ap, roles={POLICY}) as client:
            await WHO.invoke(client, {})
            assert len(revocations) == 1
            assert revocations.update({ap.info.serial}) == 1
            with pytest.raises(AllEndpointsFailed):
                await WHO.invoke(client, {})


@on_uvloop
async def test_a_revoked_server_leaves_the_clients_order_at_the_update(
    make_credentials: MakeCredentials,
) -> None:
    """The client's next calls go to the second endpoint as soon as the revocation list
    names the first one's certificate: not at the next call's refused handshake, so that
    what the client reports (``using``) is true even while no call is made."""
    async with (
        _server(make_credentials) as (ps1, _),
        _server(make_credentials, service_id="ps2") as (ps2, _),
    ):
        ap = make_credentials(ACCESS_POINT, "ap1")
        revocations = Revocations()
        tls = ClientTLS(ap.client, frozenset({POLICY}), ("ps1", "ps2"), revocations)
        async with FailoverClient([ps1, ps2], tls=tls, connect_timeout=2, timeout=2) as client:
            await WHO.invoke(client, {})
            assert client.routing()["using"] == ps1
            pools = client.pool_stats()  # a handshake with ps1 only
            assert pools[ps1]["opened"] == 1
            assert pools[ps2]["opened"] == 0
            other = make_credentials(POLICY, "ps9").info.serial
            assert revocations.update({other}) == 0
            assert client.routing()["using"] == ps1  # not the one ps1 showed: nothing moves
            shown = client._pools[0].peer_serial
            assert shown is not None
            assert revocations.update({shown}) == 1  # the idle connection is closed ...
            assert client.routing()["using"] == ps2  # ... and ps1 is down, before any call
            down = client.routing()["endpoints"][0]
            assert down["url"] == ps1
            assert down["up"] is False
            assert (await WHO.invoke(client, {}))["echo"] == {}
            assert client.pool_stats()[ps1]["opened"] == 1  # no new handshake with ps1


@on_uvloop
async def test_a_revoked_server_never_called_is_probed_at_the_update(
    make_credentials: MakeCredentials,
) -> None:
    """No handshake with ps1 yet, so no serial to compare: the update probes it, its
    handshake is refused, and it goes down without any call."""
    ps1_creds = make_credentials(POLICY, "ps1")
    async with (
        _server(make_credentials, creds=ps1_creds) as (ps1, _),
        _server(make_credentials, service_id="ps2") as (ps2, _),
    ):
        ap = make_credentials(ACCESS_POINT, "ap1")
        revocations = Revocations()
        tls = ClientTLS(ap.client, frozenset({POLICY}), ("ps1", "ps2"), revocations)
        async with FailoverClient([ps1, ps2], tls=tls, connect_timeout=2, timeout=2) as client:
            assert client.routing()["using"] == ps1
            revocations.update({ps1_creds.info.serial})
            for _ in range(200):
                if client.routing()["using"] == ps2:
                    break
                await asyncio.sleep(0.01)
            assert client.routing()["using"] == ps2
            assert "revoked" in (client.metrics()["endpoints"][0]["reason"] or "")
            # ps2, never called either, was probed too, and passed.
            assert client.routing()["endpoints"][1]["up"] is True
            assert (await WHO.invoke(client, {}))["echo"] == {}

"""Whose forwarded fields the portal believes: an Access Point's certificate (mutual TLS), the
configured ``trusted_proxies`` otherwise (none by default), nobody else."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from starlette.requests import Request

from gatehouse.config.policy import PolicySettings
from gatehouse.internal.peer import PEER_KEY
from gatehouse.policy.portal import Origin, Portal
from gatehouse.trust.identity import ACCESS_POINT, OPERATOR, Identity, Peer

FORWARDED = [
    (b"host", b"ps.internal"),
    (b"x-forwarded-for", b"198.51.100.7"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-host", b"app.example"),
    (b"forwarded", b"for=198.51.100.7;proto=https;host=app.example"),
]
PLAIN = Origin("10.1.2.3", False, "ps.internal")


def _peer(role: str) -> Peer:
    return Peer(Identity(role, "x1"), 1, datetime(2100, 1, 1, tzinfo=UTC))


def _origin(
    *,
    tls: bool = False,
    peer: Peer | None = None,
    trusted: tuple[str, ...] = (),
    headers: list[tuple[bytes, bytes]] = FORWARDED,
) -> Origin:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/_gatehouse/login",
        "headers": headers,
        "client": ("10.1.2.3", 40000),
    }
    if tls:
        scope[PEER_KEY] = peer
    portal: Any = SimpleNamespace(
        settings=SimpleNamespace(trusted_proxies=tuple(ipaddress.ip_network(t) for t in trusted))
    )
    return Portal.origin(portal, Request(scope))


def test_nothing_is_trusted_by_default() -> None:
    assert PolicySettings().trusted_proxies == []
    assert _origin() == PLAIN


def test_an_access_points_certificate_is_believed_whatever_its_address() -> None:
    assert _origin(tls=True, peer=_peer(ACCESS_POINT)) == Origin(
        "198.51.100.7", True, "app.example", True
    )


def test_another_role_over_mtls_is_believed_only_from_a_configured_proxy() -> None:
    assert _origin(tls=True, peer=_peer(OPERATOR)) == PLAIN
    assert _origin(tls=True, peer=_peer(OPERATOR), trusted=("10.0.0.0/8",)).client_ip == (
        "198.51.100.7"
    )


def test_plaintext_believes_configured_proxies_only() -> None:
    assert _origin(trusted=("10.0.0.0/8",)).client_ip == "198.51.100.7"
    assert _origin(trusted=("192.168.0.0/16",)) == PLAIN


def test_behind_the_access_points_load_balancer_the_client_is_what_it_said() -> None:
    """An AP keeps the chain of a load balancer it trusts and appends that balancer: the
    client is the balancer's last entry, as the AP itself takes it."""
    chain = [(b"x-forwarded-for", b"203.0.113.9, 198.51.100.7, 10.0.0.5")]
    assert _origin(tls=True, peer=_peer(ACCESS_POINT), headers=chain).client_ip == ("198.51.100.7")
    alone = [(b"x-forwarded-for", b"198.51.100.7")]
    assert _origin(tls=True, peer=_peer(ACCESS_POINT), headers=alone).client_ip == ("198.51.100.7")

"""The portal relayed by an Access Point over mutual TLS: the Policy service believes the
AP's X-Forwarded-For because of its certificate, with no ``trusted_proxies`` at all, so a
sign-in is counted and audited under the browser's address, not the AP's."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from gatehouse.trust.ca import CertificateAuthority
from tests.support.gateway import Gateway, add_user, start_gateway

BROWSER = "127.0.0.2"  # the AP connects to the Policy service from 127.0.0.1


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = start_gateway(
        tmp_path_factory.mktemp("relay"),
        {"resources": {"app": "authenticated"}},
        [{"id": "app", "hosts": ["*"], "path_prefix": "/"}],
        policy_extra={"trusted_proxies": []},
        internal_tls=CertificateAuthority.create(),
    )
    add_user(gw.home, "carol", "correct horse battery")
    try:
        yield gw
    finally:
        gw.stop()


def _audited_addresses(gateway: Gateway, username: str) -> set[str]:
    with sqlite3.connect(gateway.home / "gatehouse.db") as db:
        rows = db.execute(
            "SELECT client_ip FROM audit_events WHERE username = ?", (username,)
        ).fetchall()
    return {row[0] for row in rows}


def test_the_browsers_address_comes_from_the_access_points_certificate(
    gateway: Gateway,
) -> None:
    browser = gateway.browser()
    browser.source = BROWSER
    assert browser.login("carol", "wrong horse battery", "/hello").status == 200
    assert browser.login("carol", "correct horse battery", "/hello").status == 303
    assert browser.get("/hello").status == 200
    assert _audited_addresses(gateway, "carol") == {BROWSER}

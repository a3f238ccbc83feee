"""Signing in through an Access Point that terminates TLS: the portal's session and CSRF cookies
are ``__Host-`` cookies (Secure, Path=/, no Domain), the AP enforces that cookie, takes it off
the request to the backend, and a plain cookie of the old name is not a session on HTTPS."""

from __future__ import annotations

import ipaddress
import json
import ssl
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatehouse.policy.portal import last_forwarded_proto, request_origin, set_cookie_header
from tests.support.certs import TestCA
from tests.support.gateway import Browser, Gateway, add_user, csrf_token, start_gateway
from tests.support.processes import Service, free_port, write_config

PASSWORD = "correct horse battery"
LOGIN = "/_gatehouse/login"


@dataclass
class TLSGateway:
    gateway: Gateway
    ap: Service
    ca: TestCA


def https_browser(tls_gateway: TLSGateway, cookies: dict[str, str] | None = None) -> Browser:
    """A browser that trusts the test CA, speaking HTTPS to the AP as ``localhost``."""
    context = ssl.create_default_context(cafile=str(tls_gateway.ca.path))
    return Browser("localhost", tls_gateway.ap.port, dict(cookies or {}), tls=context)


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[TLSGateway]:
    """Auth, Policy and the demo backend (``start_gateway``), and an AP with TLS in front."""
    ca = TestCA(tmp_path / "pki")
    pair = ca.issue("ap", ["localhost"])
    gateway = start_gateway(tmp_path, {"resources": {"demo": "authenticated"}}, [], aps=0)
    port = free_port()
    config = write_config(
        tmp_path / "tls-ap.yaml",
        {
            "access_point": {
                "id": "ap1",
                "listen": f"127.0.0.1:{port}",
                "policy_services": [gateway.policy.url],
                "tls": {"certificates": [{"cert_file": str(pair.cert), "key_file": str(pair.key)}]},
            },
            "resources": [
                {"id": "demo", "path_prefix": "/demo", "backends": [gateway.backend.url]}
            ],
        },
    )
    ap = Service(
        ["access-point", "--config", str(config)], tmp_path / "tls-ap.log", "127.0.0.1", port
    )
    try:
        ap.wait_ready(30)
        add_user(gateway.home, "alice", PASSWORD)
        yield TLSGateway(gateway, ap, ca)
    finally:
        ap.stop()
        gateway.stop()


def test_sign_in_over_https_uses_host_prefixed_secure_cookies(
    tls_gateway: TLSGateway,
) -> None:
    browser = https_browser(tls_gateway)
    first = browser.get("/demo/page")
    assert first.status == 303
    # The original URL the portal returns to is https.
    assert first.location.startswith(f"{LOGIN}?rd=https%3A%2F%2Flocalhost")
    signed_in = browser.login("alice", PASSWORD, rd="/demo/page")
    assert signed_in.status == 303, signed_in.headers
    assert set(browser.cookies) >= {"__Host-gatehouse_session", "__Host-gatehouse_csrf"}
    assert "gatehouse_session" not in browser.cookies
    for name in ("__Host-gatehouse_session", "__Host-gatehouse_csrf"):
        attributes = browser.cookie_attributes[name].lower()
        assert "secure" in attributes, name
        assert "path=/;" in attributes + ";", name
        assert "domain=" not in attributes, name
    page = browser.get("/demo/page")
    assert page.status == 200
    assert page.headers["strict-transport-security"] == "max-age=31536000"
    echoed = dict(json.loads(page.body)["headers"])
    assert echoed["remote-user"] == "alice"
    # The AP takes its session cookie off the request to the backend.
    assert "gatehouse_session" not in echoed.get("cookie", "")


def test_a_cookie_without_the_prefix_is_no_session_on_https(
    tls_gateway: TLSGateway,
) -> None:
    browser = https_browser(tls_gateway)
    assert browser.login("alice", PASSWORD).status == 303
    session = browser.cookies.pop("__Host-gatehouse_session")
    browser.cookies["gatehouse_session"] = session  # planted under the plain name
    # Sent to sign in: the TLS listener reads only __Host-.
    assert browser.get("/demo/").status == 303


def test_sign_out_over_https_ends_the_session_and_clears_the_cookie(
    tls_gateway: TLSGateway,
) -> None:
    browser = https_browser(tls_gateway)
    assert browser.login("alice", PASSWORD).status == 303
    kept = dict(browser.cookies)
    page = browser.get("/_gatehouse/logout")
    assert page.status == 200
    form = urllib.parse.urlencode({"csrf": csrf_token(page.body), "rd": "/"}).encode()
    answer = browser.request(
        "POST", "/_gatehouse/logout", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status == 200
    assert "__Host-gatehouse_session" not in browser.cookies
    # The old session id no longer works either.
    assert https_browser(tls_gateway, kept).get("/demo/").status == 303


# the portal's side of the agreement, as pure functions -------------------------------------


@pytest.mark.parametrize(
    ("value", "proto"),
    [
        (None, ""),
        ("for=1.2.3.4;proto=https", "https"),
        ("for=1.2.3.4;proto=https, for=10.0.0.1;proto=http", "http"),
        ("for=10.0.0.1;proto=http, for=1.2.3.4;proto=HTTPS;host=a", "https"),
        ('for=1.2.3.4;host="a,b";proto=http, for=5.6.7.8;host="x, y";proto=https', "https"),
        ('for=1.2.3.4;proto=https, for=5.6.7.8;host="x, proto=https"', ""),
    ],
)
def test_last_forwarded_proto(value: str | None, proto: str) -> None:
    assert last_forwarded_proto(value) == proto


def test_only_a_trusted_proxys_own_forwarded_element_makes_host_cookies() -> None:
    loopback = [ipaddress.ip_network("127.0.0.0/8")]
    fields = {"forwarded": "for=203.0.113.9;proto=https", "x-forwarded-proto": "https"}
    trusted = request_origin("127.0.0.1", fields.get, loopback)
    assert (trusted.https, trusted.tls) == (True, True)
    assert trusted.cookie("gatehouse_session") == "__Host-gatehouse_session"
    outsider = request_origin("198.51.100.1", fields.get, loopback)
    assert (outsider.https, outsider.tls) == (False, False)
    assert outsider.cookie("gatehouse_session") == "gatehouse_session"
    # A load balancer said https, but the AP received plain HTTP: Secure, no prefix.
    behind = {"forwarded": "for=203.0.113.9;proto=http", "x-forwarded-proto": "https"}
    lb = request_origin("127.0.0.1", behind.get, loopback)
    assert (lb.https, lb.tls) == (True, False)


def test_a_host_prefixed_cookie_is_always_secure_host_only_and_at_the_root() -> None:
    header = set_cookie_header(
        "__Host-gatehouse_csrf", "t", path="/_gatehouse/", domain="example.com", secure=False
    )
    assert header == "__Host-gatehouse_csrf=t; Path=/; HttpOnly; Secure; SameSite=Lax"

"""panva's ``openid-client`` (Node, an OpenID-certified relying party library) against a
running single node through the Access Point: discovery, code + PKCE S256, the ID token
validated by the library (JWKS signature, iss, aud, nonce, the RFC 9207 ``iss`` of the
response), UserInfo, introspection, refresh (rotated: the first refresh token is then
refused), and the RP-initiated logout URL it builds, which ends the Gatehouse session.

The Node script (tests/oidc/node/rp.mjs) prints the authorization URL; the user's sign-in and
consent are done in Chromium by Playwright (confidential client) or by following the portal's
forms (public client); the URL the browser was sent back to goes to the script on stdin."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.oidc.support import (
    CONFIDENTIAL,
    PASSWORD,
    PUBLIC,
    P,
    Provider,
    path_of,
    require_node_modules,
    sign_in,
)
from tests.support.browser import wait_for_url
from tests.test_portal_browser import browser

__all__ = ["browser"]


class NodeRP:
    """``node rp.mjs`` for one flow."""

    def __init__(self, provider: Provider, client_id: str, secret: str | None) -> None:
        directory = require_node_modules()
        options = {
            "issuer": provider.issuer,
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uri": provider.redirect_uri,
            "post_logout_redirect_uri": provider.callback.post_logout_uri,
            "scope": "openid profile email offline_access",
        }
        self.proc = subprocess.Popen(
            ["node", "rp.mjs", json.dumps(options)],
            cwd=directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"rp.mjs exited {self.proc.returncode}: {stderr}")
        doc: dict[str, Any] = json.loads(line)
        assert "error" not in doc, doc
        return doc

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def node_rp() -> Iterator[list[NodeRP]]:
    started: list[NodeRP] = []
    try:
        yield started
    finally:
        for rp in started:
            rp.close()


def check_result(provider: Provider, result: dict[str, Any], client_id: str, user: str) -> None:
    claims = result["claims"]
    assert claims["iss"] == provider.issuer
    assert claims["sub"] == user
    assert claims["aud"] in (client_id, [client_id])
    assert "password" in claims["amr"]
    assert result["id_token_header"]["kid"] in {k["kid"] for k in provider.jwks["keys"]}
    assert result["userinfo"]["sub"] == user
    refreshed = result["refreshed"]
    assert refreshed["new_refresh_token"] is True
    assert refreshed["new_access_token"] is True
    assert refreshed["token_type"].lower() == "bearer"
    assert result["reuse"] == "invalid_grant"  # the rotated-out refresh token is spent
    end = urlsplit(result["end_session_url"])
    assert f"{end.scheme}://{end.netloc}{end.path}" == f"{provider.issuer}{P}oauth2/end_session"
    sent = parse_qs(end.query)
    assert sent["post_logout_redirect_uri"] == [provider.callback.post_logout_uri]
    assert sent["id_token_hint"]


def test_openid_client_confidential_with_chromium(
    provider: Provider, browser: Any, node_rp: list[NodeRP]
) -> None:
    rp = NodeRP(provider, CONFIDENTIAL, provider.secret)
    node_rp.append(rp)
    user = provider.new_user("node-conf")
    first = rp.read()
    assert first["metadata"]["issuer"] == provider.issuer
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(first["authorize_url"])
        assert f"{P}login" in page.url
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Allow").wait_for()
        assert "Confidential RP" in page.content()
        page.get_by_role("button", name="Allow").click()
        wait_for_url(page, provider.redirect_uri + "?*")
        back = page.url
        assert any(hit.startswith("/cb?") for hit in provider.callback.hits)
        rp.send(back)
        result = rp.read()
        check_result(provider, result, CONFIDENTIAL, user)
        assert result["introspected"]["active"] is True
        assert result["introspected"]["client_id"] == CONFIDENTIAL

        # Signed in to the gateway too; the RP's logout URL ends that session.
        page.goto(f"{provider.issuer}/hello")
        assert urlsplit(page.url).path == "/hello"
        page.goto(result["end_session_url"])
        wait_for_url(page, provider.callback.post_logout_uri + "?state=rp-logout")
        page.goto(f"{provider.issuer}/hello")
        deadline = time.monotonic() + 3
        while urlsplit(page.url).path != f"{P}login" and time.monotonic() < deadline:
            time.sleep(0.2)
            page.goto(f"{provider.issuer}/hello")
        assert urlsplit(page.url).path == f"{P}login"
    finally:
        context.close()


def test_openid_client_public_client(provider: Provider, node_rp: list[NodeRP]) -> None:
    rp = NodeRP(provider, PUBLIC, None)
    node_rp.append(rp)
    user = provider.new_user("node-pub")
    first = rp.read()
    browser = provider.browser()
    back = sign_in(provider, browser, first["authorize_url"], user)
    rp.send(back)
    result = rp.read()
    check_result(provider, result, PUBLIC, user)
    assert browser.get("/").status == 200
    ended = browser.get(path_of(result["end_session_url"]))
    assert ended.status in (302, 303), ended.body[:300]
    assert ended.location == provider.callback.post_logout_uri + "?state=rp-logout"
    deadline = time.monotonic() + 3
    while browser.get("/").status == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert urlsplit(browser.get("/").location).path == f"{P}login"

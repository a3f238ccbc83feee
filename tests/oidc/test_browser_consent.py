"""The user's side in Chromium (Playwright) through the Access Point: an RP's authorization
request leads to the portal's sign-in, then the consent page (naming the client and the
scopes, not frameable), and "Allow" sends the browser back to the RP's redirect URI (a local
HTTP server) with a code, the state and ``iss``; the code is good at the token endpoint. The
consent is remembered (the next request goes straight back), is listed on the user's consents
page and can be revoked there (then asked again); "Deny" sends ``access_denied`` back."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2

from tests.oidc.support import PASSWORD, PUBLIC, P, Provider
from tests.support.browser import Traffic, wait_for_url
from tests.test_portal_browser import browser

__all__ = ["browser"]


def authorization_url(provider: Provider, state: str) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": PUBLIC,
            "redirect_uri": provider.redirect_uri,
            "scope": "openid profile",
            "state": state,
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{provider.issuer}{P}oauth2/authorize?{query}", verifier


def back_to_the_client(provider: Provider, page: Any, traffic: Traffic) -> dict[str, str]:
    """Wait for the browser to reach the RP's redirect URI; its query's parameters."""
    wait_for_url(page, provider.redirect_uri + "?*", traffic=traffic, logs=provider.logs)
    return callback_params(provider, page.url)


def callback_params(provider: Provider, url: str) -> dict[str, str]:
    assert url.startswith(provider.redirect_uri + "?"), url
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_sign_in_consent_and_back_to_the_client(
    provider: Provider, browser: Any, tmp_path: Any
) -> None:
    user = provider.new_user("chromium-user")
    context = browser.new_context()
    page = context.new_page()
    traffic = Traffic(page)
    try:
        url, verifier = authorization_url(provider, "st-1")
        page.goto(url)
        assert urlsplit(page.url).path == f"{P}login"
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()

        allow = page.get_by_role("button", name="Allow")
        allow.wait_for()
        text = page.content()
        assert "Public RP" in text
        assert "See your name" in text  # the profile scope, in words
        headers = page.request.get(page.url).headers  # the consent page's own headers
        assert headers.get("x-frame-options") == "DENY"
        page.screenshot(path=str(tmp_path / "consent.png"))
        allow.click()
        params = back_to_the_client(provider, page, traffic)
        assert params["state"] == "st-1"
        assert params["iss"] == provider.issuer
        assert "callback received" in page.content()  # the RP's own server answered

        # The code is good once, for the verifier (the RP's back channel).
        token = httpx2.post(
            f"{provider.issuer}{P}oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": provider.redirect_uri,
                "client_id": PUBLIC,
                "code_verifier": verifier,
            },
            timeout=10,
        )
        assert token.status_code == 200, token.text
        assert token.json()["id_token"]

        # Remembered: the next request goes straight back, no page in between.
        url, _ = authorization_url(provider, "st-2")
        page.goto(url)
        assert back_to_the_client(provider, page, traffic)["state"] == "st-2"

        # The consents page lists the client; revoking it makes the next request ask again.
        page.goto(f"{provider.issuer}{P}oauth2/consents")
        assert "Public RP" in page.content()
        page.get_by_role("button", name="Withdraw access").click()
        page.get_by_text("No application has access to your account.").wait_for()
        assert "Public RP" not in page.content()
        url, _ = authorization_url(provider, "st-3")
        page.goto(url)
        page.get_by_role("button", name="Deny").click()
        denied = back_to_the_client(provider, page, traffic)
        assert denied["error"] == "access_denied"
        assert denied["state"] == "st-3"
        assert denied["iss"] == provider.issuer
        assert "code" not in denied
    finally:
        context.close()

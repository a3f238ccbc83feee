"""An OpenID Connect sign-in in a real browser (Debian's Chromium driven by Playwright),
through a real Access Point, Policy and Authentication service: the application sends the
browser to the authorization endpoint, it signs in on the portal, allows the application on
the consent page and is sent back to the registered redirect URI with a code (``state`` and
``iss`` as sent), which the application exchanges with its PKCE verifier. The consent page
cannot be framed."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from gatehouse.authentication.oauth_service import KEYS_FILE
from gatehouse.oauth2.clients import new_secret
from gatehouse.oauth2.keys import SigningKeys, generate_key
from tests.support.browser import wait_for_url
from tests.support.gateway import Gateway, add_user, start_gateway
from tests.support.processes import free_port
from tests.test_portal_browser import PASSWORD, browser

__all__ = ["browser"]

P = "/_gatehouse/"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("oauth-browser")
    home = tmp / "home"
    home.mkdir()
    made = [generate_key("ES256"), generate_key("RS256")]
    current = {k["alg"]: k["kid"] for k in made}
    (home / KEYS_FILE).write_text(json.dumps({"keys": made, "current": current}))
    (home / KEYS_FILE).chmod(0o600)
    ap_port = free_port()
    issuer = f"http://127.0.0.1:{ap_port}"
    # The application's callback is a resource behind the same AP (the demo backend echoes).
    redirect_uri = f"{issuer}/app/cb"
    secret, secret_hash = new_secret()
    gw = start_gateway(
        tmp,
        {
            "resources": {"app": "public"},
            "oauth": {
                "issuer": issuer,
                "clients": [
                    {"client_id": "web", "name": "Web App", "redirect_uris": [redirect_uri]}
                ],
                "jwks": SigningKeys.from_jwks(made, current).jwks(),
            },
        },
        [{"id": "app", "path_prefix": "/app/"}],
        auth_extra={
            "oauth": {
                "issuer": issuer,
                "clients": [
                    {
                        "client_id": "web",
                        "name": "Web App",
                        "secret_hash": secret_hash,
                        "redirect_uris": [redirect_uri],
                    }
                ],
            }
        },
        ap_ports=[ap_port],
    )
    try:
        add_user(gw.home, "carol", PASSWORD)
        yield {"gateway": gw, "issuer": issuer, "redirect_uri": redirect_uri, "secret": secret}
    finally:
        gw.stop()


def test_sign_in_consent_and_back_to_the_application(
    provider: dict[str, Any], browser: Any
) -> None:
    gateway: Gateway = provider["gateway"]
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    state = secrets.token_urlsafe(12)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "web",
            "redirect_uri": provider["redirect_uri"],
            "scope": "openid profile",
            "state": state,
            "nonce": "n-0S6_WzA2Mj",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{gateway.ap.url}{P}oauth2/authorize?{query}")
        assert f"{P}login" in page.url
        page.get_by_label("User name").fill("carol")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        wait_for_url(page, f"**{P}oauth2/authorize?**")
        assert page.get_by_text("Web App").count() >= 1
        page.get_by_role("button", name="Allow").click()
        wait_for_url(page, f"{provider['redirect_uri']}?**")
        answer = parse_qs(urlsplit(page.url).query)
        assert answer["state"] == [state]
        assert answer["iss"] == [provider["issuer"]]
        echoed = json.loads(page.locator("body").inner_text())
        assert echoed["path"] == "/app/cb"

        # The consent page refuses to be framed.
        framed = context.new_page()
        framed.set_content(
            f'<iframe src="{gateway.ap.url}{P}oauth2/authorize?{query}&prompt=consent"></iframe>'
        )
        framed.wait_for_timeout(1000)
        assert len(framed.frames) == 2
        # Chromium shows its own "refused to connect" page in the frame, not the form.
        assert framed.frames[1].locator('button[value="allow"]').count() == 0
        # The same page on its own does show the form: the check above can fail.
        page = context.new_page()
        page.goto(f"{gateway.ap.url}{P}oauth2/authorize?{query}&prompt=consent")
        assert page.locator('button[value="allow"]').count() == 1
    finally:
        context.close()

    # The application exchanges the code with its verifier.
    browser_client = gateway.browser()
    raw = base64.b64encode(f"web:{provider['secret']}".encode()).decode()
    tokens = browser_client.request(
        "POST",
        f"{P}oauth2/token",
        urlencode(
            {
                "grant_type": "authorization_code",
                "code": answer["code"][0],
                "redirect_uri": provider["redirect_uri"],
                "code_verifier": verifier,
            }
        ).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {raw}"},
    )
    assert tokens.status == 200, tokens.body
    assert tokens.json()["id_token"]

"""Password + one-time password in a real browser (Debian's Chromium driven by Playwright),
through a real Access Point, Policy and Authentication service: a user without a token
enrols one from the QR page's key, is let into a resource that needs ``otp``, and the
backend sees ``Remote-Auth-Methods: password,otp``; a signed-in password session steps up.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.oath.otp import totp
from tests.support.browser import wait_for_url
from tests.support.gateway import Gateway, add_user, start_gateway
from tests.test_portal_browser import PASSWORD, browser

__all__ = ["browser"]


def current_code(secret: str, used: set[int]) -> str:
    """A code of a time step not used yet, with at least 5 s of it left."""
    while True:
        now = time.time()
        step = int(now // 30)
        if step not in used and 30 - now % 30 >= 5:
            used.add(step)
            return totp(base64.b32decode(secret), now, 30, 6, "sha1")
        time.sleep(30 - now % 30 + 0.2)


def echoed(page: Any) -> dict[str, str]:
    """The headers the demo backend saw (its JSON echo)."""
    text = page.locator("body").inner_text()
    return {k.lower(): v for k, v in json.loads(text)["headers"]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("otp-browser")
    gw = start_gateway(
        tmp,
        {"resources": {"demo": "authenticated", "secure": {"auth_methods": ["password", "otp"]}}},
        [{"id": "demo", "path_prefix": "/"}, {"id": "secure", "path_prefix": "/secure"}],
    )
    try:
        add_user(gw.home, "carol", PASSWORD)
        yield gw
    finally:
        gw.stop()


def test_enrol_then_step_up_in_a_browser(gateway: Gateway, browser: Any, tmp_path: Path) -> None:
    base = gateway.ap.url
    used: set[int] = set()
    context = browser.new_context()
    page = context.new_page()
    try:
        # First visit to a resource needing otp: password, then enrolment (no token yet).
        page.goto(f"{base}/secure/report?week=2")
        assert "/_gatehouse/login" in page.url
        assert "step=otp" in page.url
        page.get_by_label("User name").fill("carol")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("heading").inner_text() == "Set up your authenticator app"
        qr = page.locator("figure.qr svg")
        assert qr.is_visible()
        assert qr.bounding_box()["width"] >= 150
        secret = page.locator("#secret").inner_text().replace(" ", "")
        assert re.fullmatch(r"[A-Z2-7]{32}", secret)
        uri = page.locator("#otpauth-uri").get_attribute("href") or ""
        assert uri.startswith("otpauth://totp/")
        assert f"secret={secret}" in uri
        page.screenshot(path=str(tmp_path / "enrol.png"))
        code = page.get_by_label("Code from the app")
        assert code.get_attribute("autocomplete") == "one-time-code"
        assert code.get_attribute("inputmode") == "numeric"
        code.fill("000000")
        page.get_by_role("button", name="Activate").click()
        assert "does not match" in page.get_by_role("alert").inner_text()
        page.get_by_label("Code from the app").fill(current_code(secret, used))
        page.get_by_role("button", name="Activate").click()
        wait_for_url(page, f"{base}/secure/report?week=2")
        seen = echoed(page)
        assert seen["remote-user"] == "carol"
        assert seen["remote-auth-methods"] == "password,otp"
        first = {c["name"]: c["value"] for c in context.cookies()}["gatehouse_session"]

        # Sign out, sign in with the password only, then step up for /secure/.
        page.goto(f"{base}/_gatehouse/logout")
        page.get_by_role("button", name="Sign out").click()
        page.goto(f"{base}/hello")
        page.get_by_label("User name").fill("carol")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        wait_for_url(page, f"{base}/hello")
        assert echoed(page)["remote-auth-methods"] == "password"
        password_only = {c["name"]: c["value"] for c in context.cookies()}["gatehouse_session"]
        assert password_only != first
        page.goto(f"{base}/secure/")
        assert page.get_by_role("heading").inner_text() == "Enter your one-time code"
        assert page.get_by_label("Password").count() == 0
        page.get_by_label("One-time code").fill("000000")
        page.get_by_role("button", name="Verify").click()
        assert "not right" in page.get_by_role("alert").inner_text()
        page.get_by_label("One-time code").fill(current_code(secret, used))
        page.get_by_role("button", name="Verify").click()
        wait_for_url(page, f"{base}/secure/")
        assert echoed(page)["remote-auth-methods"] == "password,otp"
        stepped = {c["name"]: c["value"] for c in context.cookies()}["gatehouse_session"]
        assert stepped != password_only  # a new id when the methods change
        # The old id was revoked: the Access Point dropped the allow it had cached for it.
        old = gateway.browser()
        old.cookies["gatehouse_session"] = password_only
        deadline = time.monotonic() + 1.0
        while old.get("/hello").status != 303:
            assert time.monotonic() < deadline, "the old session id still works"
            time.sleep(0.05)
        page.screenshot(path=str(tmp_path / "stepped-up.png"))
    finally:
        context.close()

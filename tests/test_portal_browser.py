"""The login portal in a real browser (Debian's Chromium driven by Playwright), through a
real Access Point, Policy and Authentication service."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import wait_for_url
from tests.support.gateway import Gateway, add_user, start_gateway

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "correct horse battery"
#: Where screenshots go (GATEHOUSE_SCREENSHOTS to keep them; else the test's temp dir).
SHOTS_ENV = "GATEHOUSE_SCREENSHOTS"


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("GATEHOUSE_REQUIRE_ALL"):
            raise
        pytest.skip("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        if os.environ.get("GATEHOUSE_REQUIRE_ALL"):
            pytest.fail("chromium is required (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return sync_playwright


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("browser")
    gw = start_gateway(
        tmp,
        {"resources": {"demo": "authenticated", "staff": {"groups_any": ["staff"]}}},
        [{"id": "demo", "path_prefix": "/"}, {"id": "staff", "path_prefix": "/staff"}],
    )
    try:
        add_user(gw.home, "alice", PASSWORD)
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_playwright = _playwright()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def test_sign_in_and_out_in_a_browser(gateway: Gateway, browser: Any, tmp_path: Path) -> None:
    base = gateway.ap.url
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base}/hello?from=browser")
        assert "/_gatehouse/login" in page.url
        assert page.title()
        # Labels are tied to their fields: what a screen reader and a password manager use.
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        assert page.get_by_role("alert").inner_text().startswith("Wrong user name or password")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        wait_for_url(page, f"{base}/hello?from=browser")
        assert '"remote-user","alice"' in page.content().replace(" ", "")
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["gatehouse_session"]["httpOnly"] is True
        assert cookies["gatehouse_session"]["sameSite"] == "Lax"
        page.screenshot(path=str(tmp_path / "signed-in.png"))

        page.goto(f"{base}/_gatehouse/logout")
        page.get_by_role("button").click()
        assert "signed out" in page.content().lower()
        page.goto(f"{base}/hello")
        assert "/_gatehouse/login" in page.url
    finally:
        context.close()


def test_the_403_page_lets_a_denied_user_sign_out_and_in_again(
    gateway: Gateway, browser: Any, tmp_path: Path
) -> None:
    base = gateway.ap.url
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base}/staff/report?week=2")
        page.get_by_label("User name").fill("alice")  # alice is not in the staff group
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        wait_for_url(page, f"{base}/staff/report?week=2")
        assert page.get_by_role("heading").inner_text() == "403 Forbidden"
        page.screenshot(path=str(tmp_path / "forbidden.png"))

        page.get_by_role("link", name="Sign out / sign in as someone else").click()
        wait_for_url(page, f"{base}/_gatehouse/logout?rd=%2Fstaff%2Freport%3Fweek%3D2")
        page.get_by_role("button", name="Sign out").click()
        assert page.get_by_role("status").inner_text() == "You are signed out."
        assert "gatehouse_session" not in {c["name"] for c in context.cookies()}
        page.get_by_role("link", name="Sign in again").click()
        wait_for_url(page, f"{base}/_gatehouse/login?rd=%2Fstaff%2Freport%3Fweek%3D2")
        assert page.get_by_role("button", name="Sign in").is_visible()
        # Signing in (as alice again here) returns to the page that was denied.
        page.get_by_label("User name").fill("alice")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        wait_for_url(page, f"{base}/staff/report?week=2")
        assert page.get_by_role("heading").inner_text() == "403 Forbidden"
    finally:
        context.close()


def test_login_page_has_no_external_assets(gateway: Gateway, browser: Any, tmp_path: Path) -> None:
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(f"{gateway.ap.url}/_gatehouse/login?rd=%2F")
        shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
        page.screenshot(path=str(shots / "login.png"))  # rendered: every asset was loaded
        assert requested
        assert all(url.startswith(gateway.ap.url) for url in requested), requested
    finally:
        context.close()

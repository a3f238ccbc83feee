"""Fixtures for the console in a real browser (shared by every console test module).

``console_node`` is a real ``gatehouse up`` (session-wide: started once per test process):
its home, the console's URL, and administrators made through the admin API with the
home's admin token. ``console_browser`` is Debian's Chromium driven by Playwright (skipped
with a clear reason when either is missing, unless GATEHOUSE_REQUIRE_ALL=1).

``console(role)`` (module-scoped factory) gives a new Playwright page signed in through the
sign-in form (password and a TOTP code, checked by the node's Authentication service) as a
fresh administrator of ``role``; ``console.last`` is that administrator. Pages are closed
at the end of the module.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gatehouse.administration.config_cli import AdminClient, admin_url
from gatehouse.administration.credentials import operator_context
from gatehouse.administration.service import TOKEN_FILE, read_token
from gatehouse.oath.otp import totp
from tests.support.browser import wait_for_url
from tests.support.node import Node

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Where screenshots go when set (e.g. docs/images); else nowhere.
SHOTS_ENV = "GATEHOUSE_SCREENSHOTS"
_names = itertools.count(1)


@dataclass(frozen=True)
class Administrator:
    name: str
    role: str
    password: str = field(repr=False)
    otp_secret: str = field(repr=False)

    def code(self, at: float | None = None) -> str:
        return totp(base64.b32decode(self.otp_secret), at or time.time(), 30, 6, "sha1")


@dataclass
class ConsoleNode:
    node: Node
    url: str
    """``https://127.0.0.1:PORT/console``"""
    first: Administrator
    """The first superadmin, from the "up" block."""

    def admin_api(self) -> AdminClient:
        home = self.node.home
        token_file = home / TOKEN_FILE
        return AdminClient(
            admin_url("127.0.0.1", self.node.admin_port),
            read_token(token_file),
            token_file,
            tls=operator_context(home),
        )

    def make_admin(self, role: str, prefix: str = "") -> Administrator:
        """A fresh administrator of ``role`` (a new user with a password and a TOTP token)."""
        name = f"{prefix or role}{next(_names)}x{os.getpid()}"
        answer = self.admin_api().call("POST", "/api/v1/admins", {"name": name, "role": role})
        creds = answer["credentials"]
        return Administrator(name, role, creds["password"], creds["otp_secret"])


def _first_admin(output: str) -> Administrator:
    found = re.search(
        r"Console administrator: (\S+)  password: (\S+)  OTP secret: (\S+) \(shown only", output
    )
    assert found, output
    return Administrator(found[1], "superadmin", found[2], found[3])


@pytest.fixture(scope="session")
def console_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNode]:
    node = Node(tmp_path_factory.mktemp("console-node"))
    try:
        node.wait_for("Ctrl-C stops everything", timeout=120)
        output = node.output()
        url = re.search(r"Console: (https://\S+/console)/ ", output)
        assert url, output
        yield ConsoleNode(node, url[1], _first_admin(output))
    finally:
        node.close()


def playwright_or_skip() -> Any:
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


# Module-scoped, as tests/test_portal_browser.py's: while Playwright's sync API is open its
# event loop runs on the main thread, so asyncio.run() in any later test of the same process
# (in-process tests, the commands run in-process) would fail.
@pytest.fixture(scope="module")
def console_browser() -> Iterator[Any]:
    sync_playwright = playwright_or_skip()
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


def new_page(browser: Any, node: ConsoleNode) -> Any:
    """A page in a fresh browser context (its own cookies) that accepts the node's
    internal CA certificate; the console's messages and CSP violations are collected in
    ``page.problems``."""
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems: list[str] = []
    # An answer's status (a 401 or 403 page on purpose) is not a problem; anything else
    # the console reports as an error is (a CSP violation, a script error).
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.problems = problems
    return page


def sign_in(page: Any, node: ConsoleNode, admin: Administrator, path: str = "/") -> None:
    """Sign ``admin`` in through the form (landing on ``path``)."""
    page.goto(f"{node.url}{path}")
    assert "/console/login" in page.url, page.url
    page.fill("#username", admin.name)
    page.fill("#password", admin.password)
    page.fill("#otp", admin.code())
    page.click("button[type=submit]")
    wait_for_url(page, f"{node.url}{path}")


class ConsoleFactory:
    """``console(role)``: a page signed in as a fresh administrator of ``role``."""

    def __init__(self, browser: Any, node: ConsoleNode) -> None:
        self.browser = browser
        self.node = node
        self.pages: list[Any] = []
        self.last: Administrator | None = None

    def __call__(self, role: str, path: str = "/") -> Any:
        admin = self.node.make_admin(role)
        page = new_page(self.browser, self.node)
        self.pages.append(page)
        sign_in(page, self.node, admin, path)
        self.last = admin
        return page

    def close(self) -> None:
        for page in self.pages:
            page.context.close()


@pytest.fixture(scope="module")
def console(console_browser: Any, console_node: ConsoleNode) -> Iterator[ConsoleFactory]:
    factory = ConsoleFactory(console_browser, console_node)
    try:
        yield factory
    finally:
        factory.close()


def screenshot(page: Any, name: str) -> Path | None:
    """Save ``page`` as ``$GATEHOUSE_SCREENSHOTS/name`` when that is set."""
    where = os.environ.get(SHOTS_ENV)
    if not where:
        return None
    path = Path(where) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path

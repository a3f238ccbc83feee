"""Sessions follow the second factor (issue 15), end to end through a real Access Point.

A user signed in with password + one-time password on a resource that needs ``otp``: when an
administrator takes the token away (``gatehouse tokens disable|unassign|delete``, or the same
operations of the Administration service's API, whose backend is
:class:`~gatehouse.administration.tokens_api.HomeTokens`), the user's sessions end on every
Access Point within a second, cached decisions included, as for ``gatehouse users passwd``
(tests/test_sessions_follow_account.py, whose installation this borrows). When the session
database cannot be reached the command says so, and how to retry, and keeps the change.
"""

from __future__ import annotations

import asyncio
import base64
import html
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.administration.tokens_api import HomeTokens
from gatehouse.oath.otp import totp
from tests.support.gateway import (
    Browser,
    Gateway,
    add_user,
    echoed_headers,
    gatehouse_cli,
    start_gateway,
)
from tests.support.processes import free_port

PASSWORD = "carol's only password"
TOKEN = "sessions-follow-tokens-admin-01"
SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # RFC 6238's SHA-1 seed, base32
RULES: dict[str, Any] = {
    "resources": {"app": "authenticated", "secure": {"auth_methods": ["password", "otp"]}},
}
RESOURCES = [
    {"id": "app", "path_prefix": "/app"},
    {"id": "secure", "path_prefix": "/secure"},
]
#: How long a change may take to reach every AP (the requirement).
WITHIN = 1.0
FORM = re.compile(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', re.S)
HIDDEN = re.compile(r'type="hidden" name="([^"]+)" value="([^"]*)"')


class Installation:
    """A gateway (ps1, ap1) whose Policy service the CLI finds through HOME/policy.yaml; its
    users each own one token with :data:`SECRET`."""

    def __init__(self, tmp: Path) -> None:
        token = tmp / "admin-token"
        token.write_text(TOKEN + "\n")
        extra = {"admin_token_file": str(token), "decision_ttl": 60}
        self.gw: Gateway = start_gateway(tmp, RULES, RESOURCES, policy_extra=extra)
        self.home = self.gw.home
        shutil.copy(tmp / "policy.yaml", self.home / "policy.yaml")
        self.serials: dict[str, str] = {}
        #: The last time step each user's token answered (a step is accepted once).
        self.steps: dict[str, int] = {}

    def user_with_token(self, name: str) -> None:
        add_user(self.home, name, PASSWORD)
        out = self.cli("tokens", "add", name, "--secret", SECRET)
        match = re.search(r"^serial: (\S+)$", out, re.MULTILINE)
        assert match, out
        self.serials[name] = match.group(1)

    def cli(self, *args: str) -> str:
        done = gatehouse_cli(self.home, *args)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    def code(self, user: str) -> str:
        """A code of a time step ``user``'s token has not answered yet, with 3 s of it left."""
        while True:
            now = time.time()
            step = int(now // 30)
            if self.steps.get(user, -1) < step and 30 - now % 30 >= 3:
                self.steps[user] = step
                return totp(base64.b32decode(SECRET), now, 30, 6, "sha1")
            time.sleep(30 - now % 30 + 0.2)

    def stop(self) -> None:
        self.gw.stop()


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    inst = Installation(tmp_path)
    try:
        inst.user_with_token("carol")
        inst.user_with_token("dave")
        yield inst
    finally:
        inst.stop()


def submit(browser: Browser, body: bytes, action: str, **fields: str) -> Any:
    """Post the form of the page ``body`` whose action ends with ``action``."""
    page = body.decode()
    for url, inner in FORM.findall(page):
        if url.endswith(f"/{action}"):
            hidden = {k: html.unescape(v) for k, v in HIDDEN.findall(inner)}
            form = urllib.parse.urlencode(hidden | fields).encode()
            return browser.request(
                "POST", url, form, {"Content-Type": "application/x-www-form-urlencoded"}
            )
    raise AssertionError(f"no {action} form in {page[:2000]}")


def signed_in_with_otp(inst: Installation, user: str) -> Browser:
    """Through the AP: /secure/ sends to the sign-in page (step=otp), the password, then the
    code; the backend sees both methods."""
    browser = inst.gw.browser()
    first = browser.get("/secure/report")
    assert first.status == 303, first.body[:300]
    assert "step=otp" in first.location
    login = browser.get(
        urllib.parse.urlsplit(first.location)._replace(scheme="", netloc="").geturl()
    )
    assert login.status == 200, login.body[:300]
    otp_page = submit(browser, login.body, "login", username=user, password=PASSWORD)
    assert otp_page.status == 200, otp_page.body[:500]
    assert b"Enter your one-time code" in otp_page.body
    done = submit(browser, otp_page.body, "otp", code=inst.code(user))
    assert done.status == 303, done.body[:500]
    assert done.location.endswith("/secure/report"), done.location
    page = browser.get("/secure/report")
    assert page.status == 200, page.body[:300]
    assert echoed_headers(page)["remote-auth-methods"] == "password,otp"
    # Asked twice: the AP's decision cache holds the allow (the change must reach it too).
    assert browser.get("/secure/report").status == 200
    assert browser.get("/app/").status == 200
    return browser


def assert_signed_out_within(browser: Browser, what: str) -> None:
    """Within WITHIN seconds of now (the change has returned), the AP sends the old session
    to the sign-in page, on the otp resource and elsewhere."""
    deadline = time.monotonic() + WITHIN
    while True:
        response = browser.get("/secure/report")
        if response.status == 303:
            assert "/_gatehouse/login?" in response.location
            break
        assert time.monotonic() < deadline, f"still signed in {WITHIN} s after {what}"
        time.sleep(0.02)
    assert browser.get("/app/").status == 303, "the session is gone, not just a decision"


def test_tokens_disable_unassign_delete_sign_the_owner_out(installation: Installation) -> None:
    inst = installation
    inst.user_with_token("erin")
    carol, dave, erin = (signed_in_with_otp(inst, user) for user in ("carol", "dave", "erin"))
    serial = inst.serials["carol"]
    out = inst.cli("tokens", "disable", serial)
    assert out == (
        f"token {serial} disabled\nended 1 session(s) of 'carol'; every Access Point was told\n"
    )
    assert_signed_out_within(carol, "tokens disable")
    assert echoed_headers(dave.get("/secure/report"))["remote-user"] == "dave"
    # Disabling it again takes nothing away: nothing more is ended.
    assert inst.cli("tokens", "disable", serial) == f"token {serial} disabled\n"

    out = inst.cli("tokens", "unassign", inst.serials["dave"])
    assert "ended 1 session(s) of 'dave'; every Access Point was told" in out, out
    assert_signed_out_within(dave, "tokens unassign")
    assert echoed_headers(erin.get("/secure/report"))["remote-user"] == "erin"

    out = inst.cli("tokens", "delete", inst.serials["erin"])
    assert "ended 1 session(s) of 'erin'; every Access Point was told" in out, out
    assert_signed_out_within(erin, "tokens delete")


def test_the_admin_api_backend_ends_the_owner_sessions(installation: Installation) -> None:
    """The Administration service's token routes use HomeTokens on Admin's home: its
    disable and delete end the owner's sessions through the Policy service too."""
    inst = installation
    carol = signed_in_with_otp(inst, "carol")
    dave = signed_in_with_otp(inst, "dave")

    async def take_away() -> None:
        backend = HomeTokens(inst.home)
        try:
            admin = await backend.admin()
            ended: list[str] = []
            await admin.disable(inst.serials["carol"], ended)
            assert ended == ["ended 1 session(s) of 'carol'; every Access Point was told"]
        finally:
            await backend.close()

    asyncio.run(take_away())
    assert_signed_out_within(carol, "the API's disable")
    assert dave.get("/secure/report").status == 200

    async def delete() -> None:
        backend = HomeTokens(inst.home)
        try:
            await (await backend.admin()).delete(inst.serials["dave"])
        finally:
            await backend.close()

    asyncio.run(delete())
    assert_signed_out_within(dave, "the API's delete")


def test_a_token_whose_owner_sessions_cannot_be_ended_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    dead = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    (home / "databases.yaml").write_text(
        f"user_db: sqlite+aiosqlite:///gatehouse.db\nsession_db: {dead}\n"
    )
    add_user(home, "carol", PASSWORD)
    added = gatehouse_cli(home, "tokens", "add", "carol")
    assert added.returncode == 0, added.stderr
    serial = re.search(r"^serial: (\S+)$", added.stdout, re.MULTILINE)
    assert serial
    done = gatehouse_cli(home, "tokens", "disable", serial.group(1))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(
        f"gatehouse: token {serial.group(1)} disabled, but the sessions of 'carol' were NOT "
        "ended (database "
    ), done.stderr
    assert done.stderr.endswith("run: gatehouse users end-sessions carol\n"), done.stderr
    listed = gatehouse_cli(home, "tokens", "list")
    assert " disabled " in listed.stdout, "the change itself is kept"

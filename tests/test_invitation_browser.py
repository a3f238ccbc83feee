"""Token invitations end to end, with real processes and a real browser (Debian's Chromium
driven by Playwright): ``gatehouse tokens invite alice`` writes the invitation, the
Authentication service hands it to a real Distribution service, which e-mails it over SMTP to
the demo backend's mail sink; the link from that mail, opened through the Access Point, asks
alice to sign in and enrol a TOTP token, and works once. Links that are unknown or another
user's get pages that say so; the link's secret is nowhere in the databases in clear.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import wait_for_url
from tests.support.gateway import Gateway, csrf_token, gatehouse_cli, start_gateway
from tests.support.processes import Service, free_port, wait_port, write_config
from tests.test_otp_browser import current_code
from tests.test_portal_browser import PASSWORD, browser

__all__ = ["browser"]

LINK = re.compile(r"http://127\.0\.0\.1:\d+/_gatehouse/enrol/invite\?t=[A-Za-z0-9_-]{43}")


class Mail:
    """The demo backend as the mail sink: SMTP in, ``/mail.json`` out."""

    def __init__(self, backend: Service, smtp_port: int) -> None:
        self.backend = backend
        self.smtp_port = smtp_port

    def to(self, recipient: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.backend.url}/mail.json", timeout=5) as answer:
            mails: list[dict[str, Any]] = json.loads(answer.read())
        return [mail for mail in mails if mail["recipient"] == recipient]

    def wait_for(self, recipient: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            mails = self.to(recipient)
            if len(mails) >= count:
                return mails
            time.sleep(0.1)
        raise AssertionError(f"{count} mails to {recipient} not received in {timeout}s")


class Stack:
    def __init__(self, gateway: Gateway, mail: Mail, distribution: Service) -> None:
        self.gateway = gateway
        self.mail = mail
        self.distribution = distribution

    def invite(self, user: str) -> str:
        """``gatehouse tokens invite USER``, then the link from the mail it makes."""
        before = len(self.mail.to(f"{user}@example.org"))
        result = gatehouse_cli(self.gateway.home, "tokens", "invite", user)
        assert result.returncode == 0, result.stderr
        assert f"for {user!r} ({user[0]}***@example.org)" in result.stdout
        [mail, *_] = self.mail.wait_for(f"{user}@example.org", before + 1)
        assert mail["subject"] == "Set up your authenticator app"
        links = LINK.findall(mail["text"])
        assert len(links) == 1, mail["text"]
        return str(links[0])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("invitations")
    home = tmp / "home"
    home.mkdir(mode=0o700)
    backend_port, smtp_port = free_port(), free_port()
    sink = Service(
        [
            "demo-backend",
            "--listen",
            f"127.0.0.1:{backend_port}",
            "--smtp",
            f"127.0.0.1:{smtp_port}",
        ],
        tmp / "sink.log",
        "127.0.0.1",
        backend_port,
    )
    started: list[Service] = [sink]
    gateway: Gateway | None = None
    try:
        sink.wait_ready()
        wait_port("127.0.0.1", smtp_port, proc=sink.proc)
        dist_port = free_port()
        channel = {
            "type": "smtp",
            "name": "demo-mail",
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "sender": "gatehouse@example.org",
        }
        settings = {
            "id": "dist1",
            "listen": f"127.0.0.1:{dist_port}",
            "channels": [channel],
            "delivery": {"poll_interval": "100ms", "backoff_initial": "100ms"},
        }
        config = write_config(tmp / "dist.yaml", {"distribution": settings})
        distribution = Service(
            ["distribution", "--config", str(config), "--home", str(home)],
            tmp / "dist.log",
            "127.0.0.1",
            dist_port,
        )
        started.append(distribution)
        distribution.wait_ready(30)
        ap_port = free_port()
        gateway = start_gateway(
            tmp,
            {"resources": {"demo": "authenticated"}},
            [{"id": "demo", "path_prefix": "/"}],
            auth_extra={
                "distribution": [f"http://127.0.0.1:{dist_port}"],
                "invitations": {"base_url": f"http://127.0.0.1:{ap_port}"},
            },
            ap_ports=[ap_port],
        )
        for user in ("alice", "bob"):
            result = gatehouse_cli(
                home,
                *("users", "add", user, "--email", f"{user}@example.org", "--password-stdin"),
                stdin=PASSWORD + "\n",
            )
            assert result.returncode == 0, result.stderr
        yield Stack(gateway, Mail(sink, smtp_port), distribution)
    finally:
        if gateway is not None:
            gateway.stop()
        for service in started:
            service.stop()


def sign_in(page: Any, user: str, then: str, logs: Path) -> None:
    """Sign in as ``user`` on the login page ``page`` shows, and wait to be sent to ``then``;
    if it is not there in time, the failure says where the page is, what it shows, and the
    Policy service's and Access Point's last log lines (in ``logs``: why a form was refused)."""
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    wait_for_url(page, then, logs=[logs / "policy.log", logs / "ap1.log"])


def test_invite_by_mail_then_enrol_once(stack: Stack, browser: Any, tmp_path: Path) -> None:
    link = stack.invite("alice")
    base = stack.gateway.ap.url
    assert link.startswith(f"{base}/_gatehouse/enrol/invite?t=")
    secret = link.rpartition("t=")[2]
    context = browser.new_context()
    page = context.new_page()
    used: set[int] = set()
    try:
        # Not signed in: the login page first, then back to the invitation.
        page.goto(link)
        assert "/_gatehouse/login" in page.url
        sign_in(page, "alice", then=link, logs=stack.gateway.home.parent)
        assert page.get_by_role("heading").inner_text() == "Set up your authenticator app"
        assert page.locator("#invited-user").inner_text() == "alice"
        page.get_by_role("button", name="Set up an authenticator app").click()
        key = page.locator("#secret").inner_text().replace(" ", "")
        assert re.fullmatch(r"[A-Z2-7]{32}", key)
        assert page.locator("figure.qr svg").is_visible()
        page.screenshot(path=str(tmp_path / "invite-enrol.png"))
        page.get_by_label("Code from the app").fill("000000")
        page.get_by_role("button", name="Activate").click()
        assert "does not match" in page.get_by_role("alert").inner_text()
        page.get_by_label("Code from the app").fill(current_code(key, used))
        page.get_by_role("button", name="Activate").click()
        assert page.get_by_role("heading").inner_text() == "Authenticator set up"

        # The link works once.
        answer = page.goto(link)
        assert answer is not None
        assert answer.status == 410
        assert page.get_by_role("heading").inner_text() == "Invitation already used"
    finally:
        context.close()

    listing = gatehouse_cli(stack.gateway.home, "tokens", "list", "--user", "alice")
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"TOTP\w+\s+alice\s+totp\s+sha1\s+6\s+30s\s+active", listing.stdout)
    invitations = gatehouse_cli(stack.gateway.home, "tokens", "invitations", "--user", "alice")
    assert " used " in invitations.stdout

    # Nowhere in clear: not in the OATH DB (only its SHA-256), nor in the outbox after delivery.
    for name in ("oath.db", "outbox.db", "gatehouse.db"):
        for path in stack.gateway.home.glob(f"{name}*"):
            assert secret.encode() not in path.read_bytes(), path
    # Nor in any service's log (AP, Policy, Authentication, Distribution, the sink aside).
    logs = [p for p in stack.gateway.home.parent.glob("*.log") if p.name != "sink.log"]
    assert {p.name for p in logs} >= {"ap1.log", "policy.log", "auth.log", "dist.log"}
    for path in logs:
        assert secret not in path.read_text(errors="replace"), path
    with sqlite3.connect(stack.gateway.home / "oath.db") as db:
        rows = db.execute("SELECT state, sealed, key_id FROM oath_invitations").fetchall()
    assert ("used", None, None) in rows


def test_links_that_cannot_be_used(stack: Stack, browser: Any) -> None:
    base = stack.gateway.ap.url
    link = stack.invite("alice")
    context = browser.new_context()
    page = context.new_page()
    try:
        answer = page.goto(f"{base}/_gatehouse/enrol/invite?t={'A' * 43}")
        assert answer is not None
        assert answer.status == 404
        assert page.get_by_role("heading").inner_text() == "Invitation not found"
        # bob signed in, alice's link.
        page.goto(link)
        sign_in(page, "bob", then=link, logs=stack.gateway.home.parent)
        assert page.get_by_role("heading").inner_text() == "Invitation for another account"
        assert "sign in as the invited user" in page.locator("main").inner_text()
        # Withdrawn by the administrator.
        rows = gatehouse_cli(stack.gateway.home, "tokens", "invitations", "--user", "alice")
        open_ids = [line.split()[0] for line in rows.stdout.splitlines() if " sent " in line]
        assert open_ids, rows.stdout
        # The newest is this test's (the others' may be open too).
        revoked = gatehouse_cli(stack.gateway.home, "tokens", "revoke-invitation", open_ids[-1])
        assert revoked.returncode == 0, revoked.stderr
        answer = page.goto(link)
        assert answer is not None
        assert answer.status == 410
        assert page.get_by_role("heading").inner_text() == "Invitation withdrawn"
    finally:
        context.close()


def test_forms_need_their_csrf_token_and_a_session(stack: Stack) -> None:
    link = stack.invite("alice")
    path = link.removeprefix(stack.gateway.ap.url)
    secret = link.rpartition("t=")[2]
    browser = stack.gateway.browser()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert browser.get("/_gatehouse/enrol/invite").status == 404  # no secret: not found
    # Signed out, the page sends to the login and back.
    answer = browser.get(path)
    assert answer.status == 303
    assert answer.location == f"/_gatehouse/login?rd={urllib.parse.quote(path, safe='')}"
    # A form without the portal's CSRF token does nothing.
    body = urllib.parse.urlencode({"invitation": secret}).encode()
    assert browser.request("POST", "/_gatehouse/enrol/invite", body, form).status == 403
    # With the token (from the login page) but no session: to the login.
    token = csrf_token(browser.get("/_gatehouse/login").body)
    body = urllib.parse.urlencode({"invitation": secret, "csrf": token}).encode()
    answer = browser.request("POST", "/_gatehouse/enrol/invite", body, form)
    assert answer.status == 303
    assert answer.location.startswith("/_gatehouse/login?rd=")
    # Signed in as alice: the offer, and still no token made by a GET.
    assert browser.login("alice", PASSWORD, rd=path).status == 303
    page = browser.get(path)
    assert page.status == 200
    assert b'id="invited-user">alice<' in page.body
    listing = gatehouse_cli(stack.gateway.home, "tokens", "list", "--user", "alice")
    assert " pending " not in listing.stdout

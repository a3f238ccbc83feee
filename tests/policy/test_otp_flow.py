"""Password + one-time password through real processes: ``gatehouse policy`` (two of them on
one session DB) and ``gatehouse authentication`` with its OATH DB, on loopback.

Codes are computed with :func:`gatehouse.oath.otp.totp` from a secret given to
``gatehouse tokens add`` or read off the enrolment page. A code is good for one 30 s step and
used once, so each test that signs in with a token waits for a fresh step first.
"""

from __future__ import annotations

import base64
import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from gatehouse.oath.otp import totp
from tests.policy.test_service import (
    PASSWORD,
    PREFIX,
    Browser,
    Policy,
    Reply,
    Stack,
    add_user,
    gatehouse,
)

SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # RFC 6238's SHA-1 seed, base32
SECRET_SPACED = re.compile(r'<code class="secret" id="secret">([A-Z2-7 ]+)</code>')
ATTEMPT = re.compile(r'name="attempt" value="([^"]+)"')
#: Users with a token (one each: a time step is accepted once per token).
TOKEN_USERS = ("olga", "oscar", "otto", "ola")


def code_for(secret: str, at: float | None = None) -> str:
    seed = base64.b32decode(secret.replace(" ", "").upper())
    return totp(seed, time.time() if at is None else at, 30, 6, "sha1")


def fresh_step() -> None:
    """Wait for a time step no code was taken from yet (a step is used once per token), and
    leave at least 5 s of it."""
    left = 30 - time.time() % 30
    time.sleep(left + 0.2 if left < 5 else 0)


_last_step: dict[str, int] = {}


def next_code(user: str, secret: str) -> str:
    """A code of a time step ``user`` has not used yet."""
    while True:
        fresh_step()
        step = int(time.time() // 30)
        if _last_step.get(user) != step:
            _last_step[user] = step
            return code_for(secret)
        time.sleep(30 - time.time() % 30 + 0.2)


def submit(browser: Browser, page: Reply, action: str, **fields: str) -> Reply:
    """Post the form of ``page`` whose action is ``action`` with its hidden fields."""
    forms = re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.body, re.S)
    for url, inner in forms:
        if url == f"{PREFIX}{action}":
            hidden = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', inner))
            form = {k: html.unescape(v) for k, v in hidden.items()} | fields
            return browser.post(url, form)
    raise AssertionError(f"no {action} form in {page.status}: {page.body[:2000]}")


def password_step(browser: Browser, user: str, rd: str = "/strong/page") -> Reply:
    page = browser.get(f"{PREFIX}login?{urlencode({'rd': rd, 'step': 'otp'})}")
    assert page.status == 200, page.body
    return submit(browser, page, "login", username=user, password=PASSWORD)


class OtpStack(Stack):
    """The test_service stack, plus users with and without tokens."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        for name in ("carol", "erik", *TOKEN_USERS):
            add_user(self.home, name)
        for name in TOKEN_USERS:
            done = gatehouse(self.home, "tokens", "add", name, "--secret", SECRET)
            assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def otp_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtpStack]:
    running = OtpStack(tmp_path_factory.mktemp("otp"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def ps1(otp_stack: OtpStack) -> Policy:
    return otp_stack.start_policy()


@pytest.fixture(scope="module")
def ps2(otp_stack: OtpStack) -> Policy:
    return otp_stack.start_policy()


def test_the_rule_sends_the_browser_to_the_otp_step(ps1: Policy) -> None:
    decision = ps1.decision(None, "strong", url="https://gw.test/strong/x")
    assert decision["login_url"].endswith("&step=otp")


def test_password_then_code_on_another_policy_service(ps1: Policy, ps2: Policy) -> None:
    browser = Browser(ps1)
    page = password_step(browser, "olga")
    assert "<h1>Enter your one-time code</h1>" in page.body
    pending = browser.session
    assert ps1.decision(pending, "app")["decision"] == "authenticate"  # no session yet
    browser.ps = ps2  # no affinity: the other Policy service finishes the sign-in
    wrong = submit(browser, page, "otp", code="000000")
    assert wrong.status == 200
    assert "That code is not right" in wrong.body
    done = submit(browser, wrong, "otp", code=next_code("olga", SECRET))
    assert done.status == 303, done.body
    assert done.headers["Location"] == "/strong/page"
    assert browser.session != pending
    decision = ps2.decision(browser.session, "strong")
    assert decision["decision"] == "allow"
    assert decision["headers"]["Remote-Auth-Methods"] == "password,otp"
    assert ps1.decision(pending, "strong")["decision"] == "authenticate"


def test_a_policy_service_killed_after_the_password_loses_nothing(
    otp_stack: OtpStack, ps2: Policy
) -> None:
    doomed = otp_stack.start_policy()
    browser = Browser(doomed)
    page = password_step(browser, "oscar")
    assert "Enter your one-time code" in page.body
    doomed.service.proc.kill()  # kill -9
    doomed.service.proc.wait()
    browser.ps = ps2
    done = submit(browser, page, "otp", code=next_code("oscar", SECRET))
    assert done.status == 303, done.body
    assert ps2.decision(browser.session, "strong")["decision"] == "allow"


def test_a_used_code_is_not_taken_again(ps1: Policy) -> None:
    first = Browser(ps1)
    code = next_code("otto", SECRET)
    page = password_step(first, "otto")
    assert submit(first, page, "otp", code=code).status == 303
    second = Browser(ps1)
    page = password_step(second, "otto")
    replay = submit(second, page, "otp", code=code)
    assert replay.status == 200
    assert "That code is not right" in replay.body


def test_step_up_of_a_password_session(ps1: Policy) -> None:
    browser = Browser(ps1)
    assert browser.login("ola", rd="/app/").status == 303
    old = browser.session
    assert ps1.decision(old, "app")["headers"]["Remote-Auth-Methods"] == "password"
    decision = ps1.decision(old, "strong", url="/strong/")
    assert decision["step_up"] is True
    page = browser.get(decision["login_url"])
    assert "Enter your one-time code" in page.body
    assert 'name="password"' not in page.body
    done = submit(browser, page, "otp", code=next_code("ola", SECRET))
    assert done.status == 303
    assert browser.session != old
    assert ps1.decision(old, "app")["decision"] == "authenticate"  # the old id is revoked
    assert ps1.decision(browser.session, "strong")["decision"] == "allow"


def test_self_enrolment_with_the_secret_the_page_shows(ps1: Policy, ps2: Policy) -> None:
    browser = Browser(ps1)
    page = password_step(browser, "carol")
    assert page.status == 200, page.body
    assert "Set up your authenticator app" in page.body
    assert page.headers["Cache-Control"] == "no-store"
    assert "<svg " in page.body
    match = SECRET_SPACED.search(page.body)
    assert match is not None
    secret = match.group(1).replace(" ", "")
    assert f"secret={secret}" in html.unescape(page.body)
    browser.ps = ps2
    done = submit(browser, page, "otp/confirm", code=next_code("carol", secret))
    assert done.status == 303, done.body
    assert ps2.decision(browser.session, "strong")["decision"] == "allow"
    # The token is active: the next sign-in asks for its code.
    again = password_step(Browser(ps2), "carol")
    assert "Enter your one-time code" in again.body


def test_user_without_token_without_self_enrolment(otp_stack: OtpStack, tmp_path: Path) -> None:
    """With ``otp.self_enrolment: false`` the user is told to ask an administrator."""
    import yaml

    auth_yaml = otp_stack.tmp / "auth.yaml"
    config = yaml.safe_load(auth_yaml.read_text())
    config["authentication"]["otp"] = {"self_enrolment": False}
    from tests.support.processes import Service, free_port, write_config

    port = free_port()
    config["authentication"]["listen"] = f"127.0.0.1:{port}"
    path = write_config(tmp_path / "auth-closed.yaml", config)
    auth = Service(
        ["authentication", "--config", str(path), "--home", str(otp_stack.home)],
        tmp_path / "auth-closed.log",
        "127.0.0.1",
        port,
    ).wait_ready()
    try:
        closed = otp_stack.start_policy({"authentication": [f"http://127.0.0.1:{port}"]})
        page = password_step(Browser(closed), "erik")
        assert page.status == 403, page.body
        assert "contact your administrator" in page.body
    finally:
        auth.stop()

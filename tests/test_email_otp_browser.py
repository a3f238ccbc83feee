"""Password + a one-time code by e-mail in a real browser (Debian's Chromium driven by
Playwright), through a real Access Point, Policy, Authentication and Distribution service, with
an aiosmtpd SMTP server as the mail server: the code is read from the mail it received.

The page says "We sent a code to c***@example.org" only once the message was accepted, a
wrong code is refused, a resend is throttled, the backend sees ``Remote-Auth-Methods:
password,email_otp``; with the SMTP server down (and no phone number, so no SMS) the page says
the code could not be delivered, shows no code field and offers the authenticator app, which
then lets the user in where the rule accepts it. No code appears in any service's log.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import wait_for_url
from tests.support.gateway import Gateway, gatehouse_cli, start_gateway
from tests.test_otp_browser import current_code, echoed
from tests.test_portal_browser import PASSWORD, browser

__all__ = ["browser"]

support = pytest.importorskip("tests.distribution.support", reason="Distribution test support")

CODE = re.compile(r"\b(\d{6})\b")


class Setup:
    def __init__(self, gateway: Gateway, dist: Any, sink: Any, sms: Any, secret: str) -> None:
        self.gateway = gateway
        self.dist = dist
        self.sink = sink
        self.sms = sms
        self.secret = secret
        self.codes: list[str] = []

    def code(self, count: int) -> str:
        """The code of the ``count``-th mail received."""
        mail = self.sink.wait_for(count)[count - 1]
        assert mail.recipients == ("carol@example.org",)
        match = CODE.search(mail.text)
        assert match, mail.text
        self.codes.append(match.group(1))
        return match.group(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("email-otp-browser")
    sink = support.MailSink().start()
    sms = support.SmsGateway().start()
    dist = support.start_distribution(
        tmp,
        "dist1",
        [support.smtp_channel(sink.port), support.sms_channel(sms.url)],
        home=tmp / "dist-home",
    )
    try:
        gw = start_gateway(
            tmp,
            {
                "resources": {
                    "demo": "authenticated",
                    "mail": {"auth_methods": ["password", "email_otp"]},
                    "text": {"auth_methods": ["password", "sms_otp"]},
                    "either": {
                        "all": [
                            {"auth_methods": ["password"]},
                            {"any": [{"auth_methods": ["email_otp"]}, {"auth_methods": ["otp"]}]},
                        ]
                    },
                }
            },
            [
                {"id": "demo", "path_prefix": "/"},
                {"id": "mail", "path_prefix": "/mail"},
                {"id": "text", "path_prefix": "/text"},
                {"id": "either", "path_prefix": "/either"},
            ],
            auth_extra={
                "distribution": [f"http://127.0.0.1:{dist.port}"],
                "codes": {"resend_interval": "3s", "max_attempts": 3},
            },
        )
    except BaseException:
        dist.stop()
        sink.stop()
        sms.stop()
        raise
    try:
        for name in ("carol", "dave"):
            args = ["users", "add", name, "--password-stdin", "--email", f"{name}@example.org"]
            result = gatehouse_cli(gw.home, *args, stdin=PASSWORD + "\n")
            assert result.returncode == 0, result.stderr
        args = ["users", "add", "erin", "--password-stdin", "--phone", "+4915112345612"]
        result = gatehouse_cli(gw.home, *args, stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr
        token = gatehouse_cli(gw.home, "tokens", "add", "dave")
        assert token.returncode == 0, token.stderr
        uri = re.search(r"otpauth://\S+", token.stdout)
        assert uri, token.stdout
        secret = urllib.parse.parse_qs(urllib.parse.urlparse(uri.group(0)).query)["secret"][0]
        base64.b32decode(secret + "=" * (-len(secret) % 8))
        yield Setup(gw, dist, sink, sms, secret)
    finally:
        gw.stop()
        dist.stop()
        sink.stop()
        sms.stop()


def sent_notice(page: Any) -> bool:
    """The code page says the code went to carol's masked address: "We sent" once the mail
    server took it (within the page's 2 s wait, as a rule), "We are sending" on a slow day."""
    text = page.locator("#code-notice").inner_text()
    return text in (
        "We sent a code to c***@example.org.",
        "We are sending a code to c***@example.org. It can take a moment to arrive.",
    )


def sign_in(page: Any, user: str) -> None:
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_with_a_code_by_mail(setup: Setup, browser: Any, tmp_path: Path) -> None:
    base = setup.gateway.ap.url
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base}/mail/inbox?n=1")
        assert "/_gatehouse/login" in page.url
        assert "step=email_otp" in page.url
        sign_in(page, "carol")
        assert page.get_by_role("heading").inner_text() == "Enter the code we e-mailed you"
        # Said only after Distribution accepted it (and here: the SMTP server took it).
        assert sent_notice(page)
        first = setup.code(1)
        code = page.get_by_label("Code")
        assert code.get_attribute("autocomplete") == "one-time-code"
        assert code.get_attribute("inputmode") == "numeric"
        page.screenshot(path=str(tmp_path / "code.png"))

        wrong = f"{(int(first) + 1) % 1_000_000:06d}"
        code.fill(wrong)
        page.get_by_role("button", name="Verify").click()
        assert "not right" in page.get_by_role("alert").inner_text()

        # A new code at once is throttled (one per 3 s here): the page says to use the one
        # sent, or to wait.
        page.get_by_role("button", name="Send a new code").click()
        assert "use that one, or wait" in page.get_by_role("alert").inner_text()
        assert sent_notice(page)
        assert page.get_by_label("Code").is_visible()
        assert len(setup.sink.mails()) == 1
        page.wait_for_timeout(3200)
        page.get_by_role("button", name="Send a new code").click()
        assert sent_notice(page)
        second = setup.code(2)

        page.get_by_label("Code").fill(second)
        page.get_by_role("button", name="Verify").click()
        wait_for_url(page, f"{base}/mail/inbox?n=1")
        seen = echoed(page)
        assert seen["remote-user"] == "carol"
        assert seen["remote-auth-methods"] == "password,email_otp"

        # Single use: the same code cannot sign in a second browser.
        other = browser.new_context()
        again = other.new_page()
        try:
            again.wait_for_timeout(3200)  # the resend interval since the last code
            again.goto(f"{base}/mail/")
            sign_in(again, "carol")
            assert again.locator("#code-notice").is_visible()
            setup.code(3)
            again.get_by_label("Code").fill(second)
            again.get_by_role("button", name="Verify").click()
            assert "not right" in again.get_by_role("alert").inner_text()
        finally:
            other.close()
    finally:
        context.close()


def test_step_up_from_a_password_session(setup: Setup, browser: Any) -> None:
    base = setup.gateway.ap.url
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base}/hello")
        sign_in(page, "carol")
        wait_for_url(page, f"{base}/hello")
        assert echoed(page)["remote-auth-methods"] == "password"
        before = len(setup.sink.mails())
        page.goto(f"{base}/mail/")
        # A step-up sends nothing by itself (a GET): a button does.
        assert page.get_by_role("heading").inner_text() == "Get a code by e-mail"
        assert page.get_by_label("Password").count() == 0
        assert len(setup.sink.mails()) == before
        page.wait_for_timeout(3200)  # the resend interval since the previous test's code
        page.get_by_role("button", name="Send me a code").click()
        assert sent_notice(page)
        page.get_by_label("Code").fill(setup.code(before + 1))
        page.get_by_role("button", name="Verify").click()
        wait_for_url(page, f"{base}/mail/")
        assert echoed(page)["remote-auth-methods"] == "password,email_otp"
    finally:
        context.close()


def test_sign_in_with_a_code_by_text_message(setup: Setup, browser: Any) -> None:
    base = setup.gateway.ap.url
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base}/text/")
        assert "step=sms_otp" in page.url
        sign_in(page, "erin")
        assert page.get_by_role("heading").inner_text() == "Enter the code we texted you"
        assert "+49*********12" in page.locator("#code-notice").inner_text()
        sent = json.loads(setup.sms.wait_for(1)[0].body)
        assert sent["to"] == "+4915112345612"
        match = CODE.search(sent["text"])
        assert match, sent
        setup.codes.append(match.group(1))
        page.get_by_label("Code").fill(match.group(1))
        page.get_by_role("button", name="Verify").click()
        wait_for_url(page, f"{base}/text/")
        assert echoed(page)["remote-auth-methods"] == "password,sms_otp"
    finally:
        context.close()


def test_delivery_failure_says_so_and_offers_the_authenticator(
    setup: Setup, browser: Any, tmp_path: Path
) -> None:
    base = setup.gateway.ap.url
    setup.sink.stop()  # the mail server is down; dave has no phone number: nothing delivers
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(f"{base}/either/report")
        assert "step=email_otp" in page.url
        sign_in(page, "dave")
        assert page.get_by_role("heading").inner_text() == "Code not delivered"
        alert = page.get_by_role("alert").inner_text()
        assert "could not deliver the code to d***@example.org" in alert
        assert page.get_by_label("Code").count() == 0  # no prompt for a code that will not come
        page.screenshot(path=str(tmp_path / "failed.png"))
        page.get_by_role("link", name="Use your authenticator app").click()
        assert page.get_by_role("heading").inner_text() == "Enter your one-time code"
        page.get_by_label("One-time code").fill(current_code(setup.secret, set()))
        page.get_by_role("button", name="Verify").click()
        wait_for_url(page, f"{base}/either/report")
        assert echoed(page)["remote-auth-methods"] == "password,otp"
    finally:
        context.close()


def test_no_code_in_any_log(setup: Setup) -> None:
    gw = setup.gateway
    assert setup.codes, "the tests before sent codes"
    logs = [gw.auth.log_path, gw.policy.log_path, gw.backend.log_path, setup.dist.log_path]
    logs += [ap.log_path for ap in gw.aps]
    for log in logs:
        text = Path(log).read_text(errors="replace")
        for code in setup.codes:
            assert code not in text, f"{code} in {log}"

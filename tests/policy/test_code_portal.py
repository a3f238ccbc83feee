"""The portal's codes by e-mail or SMS, in-process (a Starlette app over ASGI, a real session
DB, a fake Authentication service as in ``test_otp_portal``): what each answer of the code
calls makes the page say. The same flow through real processes and a real Distribution
service, in a browser: ``tests/test_email_otp_browser.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse.policy import code_flow
from gatehouse.policy.code_flow import Delivery, SendOutcome, code_method, wait_words
from gatehouse.policy.csrf import CsrfGuard
from gatehouse.policy.otp_flow import OtpStatus
from gatehouse.policy.portal import AuthUnavailable, Portal, PortalSettings
from gatehouse.policy.redirects import NO_HOSTS
from gatehouse.policy.sessions import SessionStore, Timeouts
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from tests.policy.test_otp_portal import PREFIX, Browser, FakeAuth, Site

MESSAGE = "message-id-0000000001"
GOOD = "424242"


@dataclass
class FakeCodes(FakeAuth):
    """Codes: ``send`` answers ``outcome``; the message's status goes through ``statuses``
    (the last one stays); ``GOOD`` is right, ``000000`` expired, ``999999`` locks."""

    outcome: SendOutcome = field(
        default_factory=lambda: SendOutcome("accepted", MESSAGE, "accepted", "c***@example.org")
    )
    statuses: list[str] = field(default_factory=lambda: ["accepted", "sent"])
    sends: list[tuple[str, str, str]] = field(default_factory=list)
    sending_down: bool = False

    async def code_send(self, username: str, method: str, key: str, client_ip: str) -> SendOutcome:
        self.sends.append((username, method, key))
        if self.sending_down:
            raise AuthUnavailable("no Distribution service accepted the code's message")
        return self.outcome

    async def code_status(self, username: str, message_id: str) -> Delivery:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return Delivery(status, "c***@example.org")  # type: ignore[arg-type]

    async def code_verify(
        self, username: str, method: str, code: str, client_ip: str, attempt: str
    ) -> Literal["ok", "invalid", "expired", "locked"]:
        self.calls.append(("code_verify", (username, method, code, attempt)))
        return {GOOD: "ok", "000000": "expired", "999999": "locked"}.get(code, "invalid")  # type: ignore[return-value]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    monkeypatch.setattr(code_flow, "STATUS_POLL", 0.01)
    loop = asyncio.new_event_loop()
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    loop.run_until_complete(upgrade(url, "session"))
    database = Database(url)
    sessions = SessionStore(database, Timeouts(1800, 43200))
    auth = FakeCodes()
    events: list[tuple[str, str | None, dict[str, object]]] = []

    async def audit(event: str, user: str | None, ip: str | None, detail: dict[str, Any]) -> None:
        events.append((event, user, detail))

    settings = PortalSettings(PREFIX, "Gatehouse", "gatehouse_session", None, (), NO_HOSTS)
    portal = Portal(settings, sessions, auth, CsrfGuard(b"k" * 32), audit, otp=auth, codes=auth)

    def route(name: str, method: str, path: str) -> Route:
        return Route(f"{PREFIX}{path}", getattr(portal, name), methods=[method])

    app = Starlette(
        routes=[
            route("login_page", "GET", "login"),
            route("login_submit", "POST", "login"),
            route("otp_page", "GET", "otp"),
            route("otp_submit", "POST", "otp"),
            route("code_page", "GET", "code"),
            route("code_submit", "POST", "code"),
            route("code_send", "POST", "code/send"),
        ]
    )
    yield Site(app, sessions, auth, events, loop)
    loop.run_until_complete(database.dispose())
    loop.close()


def codes(site: Site) -> FakeCodes:
    assert isinstance(site.auth, FakeCodes)
    return site.auth


def follow(browser: Browser, reply: Any) -> Any:
    assert reply.status == 303, reply.body[:500]
    return browser.get(reply.header("location"))


def test_pure_pieces() -> None:
    assert code_method("email_otp") == "email_otp"
    assert code_method("otp") is None
    assert code_method(None) is None
    assert wait_words(29.2) == "30 seconds"
    assert wait_words(600) == "10 minutes"


def test_sign_in_with_a_code(site: Site) -> None:
    browser = Browser(site)
    reply = browser.login("carol", "/mail/", step="email_otp")
    assert codes(site).sends == [("carol", "email_otp", codes(site).sends[0][2])]
    assert reply.header("location").startswith(f"{PREFIX}code?method=email_otp&m={MESSAGE}")
    pending = site.lookup(browser.session, pending=True)
    assert pending is not None
    assert pending.pending is not None
    page = follow(browser, reply)
    # The page waited for the message to be sent, then said so.
    assert "We sent a code to c***@example.org." in page.body
    assert 'name="code"' in page.body
    wrong = browser.submit(page, "code", code="111111")
    assert "not right" in wrong.body
    assert 'name="code"' in wrong.body
    done = browser.submit(wrong, "code", code=" 424 242 ")
    assert done.status == 303
    assert done.header("location") == "/mail/"
    record = site.lookup(browser.session)
    assert record.methods == ("password", "email_otp")
    assert [c[1][2] for c in codes(site).calls if c[0] == "code_verify"] == ["111111", "424242"]
    assert not any(GOOD in str(detail) for _e, _u, detail in site.audit)


def test_a_message_still_on_its_way_is_said_so(site: Site) -> None:
    codes(site).statuses = ["accepted"]
    browser = Browser(site)
    page = follow(browser, browser.login("carol", "/mail/", step="email_otp"))
    assert "We are sending a code to c***@example.org" in page.body
    assert 'name="code"' in page.body


@pytest.mark.parametrize(
    ("status", "heading", "says"),
    [
        ("failed", "Code not delivered", "every way of sending it failed"),
        ("expired", "Code not delivered", "could not be delivered to c***@example.org in time"),
    ],
)
def test_a_failed_delivery_shows_no_code_field(
    site: Site, status: str, heading: str, says: str
) -> None:
    codes(site).statuses = ["accepted", status]
    codes(site).status["carol"] = OtpStatus(1, None, False)
    browser = Browser(site)
    page = follow(browser, browser.login("carol", "/mail/", step="email_otp"))
    assert f"<h1>{heading}</h1>" in page.body
    assert says in page.body
    assert 'name="code"' not in page.body
    assert f'href="{PREFIX}otp?rd=%2Fmail%2F">Use your authenticator app' in page.body
    assert "Send a new code" in page.body


def test_no_authenticator_no_alternative(site: Site) -> None:
    codes(site).statuses = ["failed"]
    codes(site).status["erin"] = OtpStatus(0, None, False)
    browser = Browser(site)
    page = follow(browser, browser.login("erin", "/mail/", step="email_otp"))
    assert "authenticator" not in page.body


def test_no_contact_data_and_distribution_down_are_said(site: Site) -> None:
    codes(site).outcome = SendOutcome(
        "no_contact", message="no e-mail address or phone number on file; choose another method"
    )
    browser = Browser(site)
    page = browser.login("carol", "/mail/", step="email_otp")
    assert page.status == 200
    assert "No e-mail address or phone number on file; choose another method." in page.body
    assert 'name="code"' not in page.body
    assert "Send a new code" not in page.body
    codes(site).sending_down = True
    page = Browser(site).login("carol", "/mail/", step="email_otp")
    assert page.status == 503
    assert "could not send a code right now" in page.body
    assert 'name="code"' not in page.body


def test_a_throttled_resend_says_how_long_to_wait(site: Site) -> None:
    browser = Browser(site)
    page = follow(browser, browser.login("carol", "/mail/", step="email_otp"))
    # Too soon after the last code, which is still good: its page, with the reason.
    codes(site).outcome = SendOutcome("throttled", MESSAGE, retry_after=24.3)
    again = browser.submit(page, "code/send")
    assert "use that one, or wait 25 seconds" in again.body
    assert "We sent a code to c***@example.org." in again.body
    assert 'name="code"' in again.body
    # Too many codes lately and none live: no code field, how long to wait.
    codes(site).outcome = SendOutcome("throttled", retry_after=600)
    again = browser.submit(page, "code/send")
    assert "Too many codes were sent to you. Wait 10 minutes" in again.body
    assert 'name="code"' not in again.body
    # The resend form carries a key made when the page was served: a resubmission of the
    # same form is the same send.
    keys = [key for _u, _m, key in codes(site).sends]
    assert len(keys) == 3
    assert keys[0] != keys[1]
    assert keys[1] == keys[2]  # the same page's form, twice
    browser.submit(again, "code/send")
    browser.submit(again, "code/send")
    assert codes(site).sends[-1][2] == codes(site).sends[-2][2]
    assert codes(site).sends[-1][2] != keys[2]


@pytest.mark.parametrize(("code", "says"), [("000000", "has expired"), ("999999", "Too many")])
def test_expired_and_locked_codes_ask_for_a_new_one(site: Site, code: str, says: str) -> None:
    browser = Browser(site)
    page = follow(browser, browser.login("carol", "/mail/", step="email_otp"))
    reply = browser.submit(page, "code", code=code)
    assert says in reply.body
    assert 'name="code"' not in reply.body
    assert "Send a new code" in reply.body


def test_a_step_up_sends_only_on_request(site: Site) -> None:
    browser = Browser(site)
    signed_in = browser.login("carol", "/hello", step=None)
    assert signed_in.status == 303
    page = browser.get(f"{PREFIX}login?rd=%2Fmail%2F&step=email_otp")
    assert "<h1>Get a code by e-mail</h1>" in page.body
    assert codes(site).sends == []
    code_page = follow(browser, browser.submit(page, "code/send"))
    assert len(codes(site).sends) == 1
    done = browser.submit(code_page, "code", code=GOOD)
    assert done.header("location") == "/mail/"
    assert site.lookup(browser.session).methods == ("password", "email_otp")
    # Done: the step-up page sends the browser on.
    again = browser.get(f"{PREFIX}login?rd=%2Fmail%2F&step=email_otp")
    assert (again.status, again.header("location")) == (303, "/mail/")


def test_the_method_must_be_a_code_method(site: Site) -> None:
    browser = Browser(site)
    follow(browser, browser.login("carol", "/mail/", step="email_otp"))
    page = browser.get(f"{PREFIX}code?method=password&m={MESSAGE}&rd=%2Fmail%2F")
    assert "Sign-in ended" in page.body

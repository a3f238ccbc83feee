"""The portal's second factor, in-process: the OTP step after the password, step-up, token
self-enrolment, wrong and locked codes, and that the state lives in the session DB.

The portal runs as a Starlette app driven over ASGI with a real session DB (SQLite, migrated)
and a fake Authentication service (passwords and OTP calls): the flows are tested here; the
same flows through real processes are in ``test_otp_flow.py``.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse.policy.csrf import CsrfGuard
from gatehouse.policy.otp_flow import (
    Enrolment,
    EnrolmentRefused,
    OtpResult,
    OtpStatus,
    clean_code,
    grouped,
    issuer_of,
    qr_svg,
)
from gatehouse.policy.portal import AuthUnavailable, Portal, PortalSettings, Verdict
from gatehouse.policy.redirects import NO_HOSTS
from gatehouse.policy.sessions import Identity, SessionStore, Timeouts, hash_session_id
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade

PREFIX = "/_gatehouse/"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ATTEMPT = re.compile(r'name="attempt" value="([^"]+)"')
SERIAL = re.compile(r'name="serial" value="([^"]+)"')
GOOD, LOCKING, ENROL_GOOD = "123456", "999999", "654321"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


# --- a fake Authentication service -----------------------------------------------------------


@dataclass
class FakeAuth:
    """Passwords ``pw`` for everyone; OTP answers by user and code; calls recorded."""

    status: dict[str, OtpStatus] = field(default_factory=dict)
    self_enrolment: bool = True
    down: bool = False
    #: Whether a right password's verdict carries the OTP status when asked (an older
    #: Authentication service's does not; one whose OATH DB is down does not either).
    status_with_password: bool = True
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    async def verify(
        self,
        username: str,
        password: str,
        client_ip: str,
        device: str | None = None,
        otp: bool = False,
    ) -> Verdict:
        self.calls.append(("password", (username, "otp" if otp else "")))
        if password != "pw":
            return Verdict("invalid")
        identity = Identity(username, username.title(), None, ("staff",))
        with_status = otp and self.status_with_password and not self.down
        return Verdict("ok", identity, otp=self._status(username) if with_status else None)

    def _status(self, username: str) -> OtpStatus:
        return self.status.get(username, OtpStatus(1, None, False))

    async def otp_status(self, username: str) -> OtpStatus:
        self.calls.append(("status", (username,)))
        if self.down:
            raise AuthUnavailable("down")
        return self._status(username)

    async def otp_verify(self, username: str, code: str, client_ip: str, attempt: str) -> OtpResult:
        self.calls.append(("verify", (username, code, attempt)))
        if self.down:
            raise AuthUnavailable("down")
        if self._status(username).active == 0:
            return OtpResult("no_token")
        if code == GOOD:
            return OtpResult("ok")
        if code == LOCKING:
            return OtpResult("locked", 300.0)
        return OtpResult("invalid")

    async def otp_enrol(self, username: str, issuer: str) -> Enrolment:
        self.calls.append(("enrol", (username, issuer)))
        if not self.self_enrolment:
            raise EnrolmentRefused("self-enrolment is off")
        serial = f"TOTP{len(self.calls):04d}"
        uri = f"otpauth://totp/{issuer}:{username}?secret={SECRET}&issuer={issuer}"
        self.status[username] = OtpStatus(self._status(username).active, serial, False)
        return Enrolment(serial, uri, SECRET)

    async def otp_confirm(
        self, username: str, serial: str, code: str, client_ip: str, attempt: str
    ) -> OtpResult:
        self.calls.append(("confirm", (username, serial, code)))
        if serial != self._status(username).pending:
            return OtpResult("invalid")
        if code == ENROL_GOOD:
            self.status[username] = OtpStatus(1, None, False)
            return OtpResult("ok")
        return OtpResult("invalid")


# --- an in-process portal and a browser for it -----------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: str

    def header(self, name: str) -> str:
        return self.headers[name.lower()][0]


@dataclass
class Site:
    app: Starlette
    sessions: SessionStore
    auth: FakeAuth
    audit: list[tuple[str, str | None, dict[str, object]]]
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def call(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        path, _, query = path.partition("?")
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "scheme": "http",
            "server": ("gw.test", 80),
            "client": ("127.0.0.1", 40000),
            "headers": [(b"host", b"gw.test")]
            + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "http_version": "1.1",
            "root_path": "",
        }
        sent = False
        out: dict[str, Any] = {"headers": {}, "body": b""}

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
                for key, value in message["headers"]:
                    out["headers"].setdefault(key.decode().lower(), []).append(value.decode())
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")

        self.run(self.app(scope, receive, send))
        return Reply(out["status"], out["headers"], out["body"].decode())

    def lookup(self, session_id: str | None, pending: bool = False) -> Any:
        now = datetime.now(UTC)
        return self.run(self.sessions.lookup(session_id, now, cached=False, pending=pending))


@dataclass
class Browser:
    site: Site
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        reply = self.site.call(method, path, body, headers)
        for header in reply.headers.get("set-cookie", []):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return reply

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def submit(self, page: Reply, action: str, **fields: str) -> Reply:
        """Post the form of ``page`` whose action is ``action`` (its hidden fields too)."""
        forms = re.findall(
            r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.body, re.S
        )
        for url, inner in forms:
            if url == f"{PREFIX}{action}":
                hidden = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', inner))
                form = {k: html.unescape(v) for k, v in hidden.items()} | fields
                return self.request("POST", url, form)
        raise AssertionError(f"no form for {action} in {page.body}")

    def login(self, username: str, rd: str = "/app/", step: str | None = "otp") -> Reply:
        query = {"rd": rd} | ({"step": step} if step else {})
        page = self.get(f"{PREFIX}login?{urlencode(query)}")
        assert page.status == 200
        return self.submit(page, "login", username=username, password="pw")

    @property
    def session(self) -> str | None:
        return self.cookies.get("gatehouse_session")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    loop = asyncio.new_event_loop()
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    loop.run_until_complete(upgrade(url, "session"))
    database = Database(url)
    sessions = SessionStore(database, Timeouts(1800, 43200))
    auth = FakeAuth()
    events: list[tuple[str, str | None, dict[str, object]]] = []

    async def audit(event: str, user: str | None, ip: str | None, detail: dict[str, Any]) -> None:
        events.append((event, user, detail))

    settings = PortalSettings(PREFIX, "Gatehouse", "gatehouse_session", None, (), NO_HOSTS)
    portal = Portal(settings, sessions, auth, CsrfGuard(b"k" * 32), audit, otp=auth)

    def route(name: str, method: str, path: str) -> Route:
        return Route(f"{PREFIX}{path}", getattr(portal, name), methods=[method])

    app = Starlette(
        routes=[
            route("login_page", "GET", "login"),
            route("login_submit", "POST", "login"),
            route("otp_page", "GET", "otp"),
            route("otp_submit", "POST", "otp"),
            route("otp_enrol", "POST", "otp/enrol"),
            route("otp_confirm", "POST", "otp/confirm"),
        ]
    )
    yield Site(app, sessions, auth, events, loop)
    loop.run_until_complete(database.dispose())
    loop.close()


# --- pure pieces -----------------------------------------------------------------------------


def test_codes_lose_the_spaces_apps_show() -> None:
    assert clean_code(" 123 456 ") == "123456"
    assert clean_code("123-456") == "123456"
    assert clean_code(None) == ""
    assert len(clean_code("1" * 100)) == 16


def test_issuer_and_secret_for_people() -> None:
    assert issuer_of("Acme: SSO") == "Acme  SSO"
    assert issuer_of("   ") == "Gatehouse"
    assert grouped("JBSWY3DPEHPK3PXP") == "JBSW Y3DP EHPK 3PXP"


def test_the_qr_code_is_inline_svg() -> None:
    svg = str(qr_svg("otpauth://totp/Gatehouse:alice?secret=JBSWY3DPEHPK3PXP"))
    assert svg.startswith("<svg ")
    assert svg.endswith("</svg>")
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert "<?xml" not in svg
    assert "href" not in svg
    assert "<script" not in svg


# --- the OTP step after the password --------------------------------------------------------


def test_password_then_code_makes_a_session_with_both_methods(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("alice", rd="/secure/page")
    assert page.status == 200
    assert "<h1>Enter your one-time code</h1>" in page.body
    assert re.search(
        r'<input id="code" name="code" type="text" inputmode="numeric" '
        r'autocomplete="one-time-code"',
        page.body,
    )
    assert page.header("Cache-Control") == "no-store"
    pending_id = browser.session
    # The sign-in under way is in the session DB, and no session for decisions.
    assert site.lookup(pending_id) is None
    assert site.lookup(pending_id, pending=True).pending is not None
    done = browser.submit(page, "otp", code=GOOD)
    assert done.status == 303
    assert done.header("Location") == "/secure/page"
    assert browser.session != pending_id
    record = site.lookup(browser.session)
    assert record.methods == ("password", "otp")
    assert record.pending is None
    assert site.lookup(pending_id, pending=True) is None  # the old id is gone
    events = [e for e, _, _ in site.audit]
    assert events == ["password_accepted", "session_created"]


def test_the_password_check_brings_the_otp_status_in_one_call(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("alice", rd="/secure/page")
    assert "<h1>Enter your one-time code</h1>" in page.body
    kinds = [kind for kind, _ in site.auth.calls]
    assert ("password", ("alice", "otp")) in site.auth.calls
    assert "status" not in kinds  # no second call to the Authentication service


def test_without_the_status_in_the_answer_the_portal_asks_for_it(site: Site) -> None:
    """An Authentication service of the previous version (or whose OATH DB is away) answers
    the password check without the status: the portal asks for it, as before."""
    site.auth.status_with_password = False
    browser = Browser(site)
    page = browser.login("alice", rd="/secure/page")
    assert "<h1>Enter your one-time code</h1>" in page.body
    assert [kind for kind, _ in site.auth.calls] == ["password", "status"]


def test_a_login_without_the_marker_makes_a_password_session(site: Site) -> None:
    browser = Browser(site)
    reply = browser.login("alice", step=None)
    assert reply.status == 303
    assert site.lookup(browser.session).methods == ("password",)


def test_a_wrong_code_shows_the_page_again_with_a_message(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("alice")
    first_attempt = ATTEMPT.search(page.body)
    again = browser.submit(page, "otp", code="000000")
    assert again.status == 200
    assert "That code is not right" in again.body
    assert 'role="alert"' in again.body
    assert ATTEMPT.search(again.body) != first_attempt
    assert site.lookup(browser.session) is None  # still no session
    done = browser.submit(again, "otp", code=GOOD)
    assert done.status == 303


def test_the_same_form_sent_twice_is_the_same_attempt(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("alice")
    browser.submit(page, "otp", code="111111")
    browser.submit(page, "otp", code="111111")
    attempts = [args[2] for kind, args in site.auth.calls if kind == "verify"]
    assert len(attempts) == 2
    assert attempts[0] == attempts[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,64}", attempts[0])


def test_a_locked_token_says_so(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("alice")
    locked = browser.submit(page, "otp", code=LOCKING)
    assert locked.status == 403
    assert "Too many wrong codes" in locked.body
    assert "administrator can unlock" in locked.body


def test_a_code_form_without_its_csrf_token_is_refused(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("alice")
    attempt = ATTEMPT.search(page.body)
    assert attempt is not None
    form = {"rd": "/app/", "attempt": attempt.group(1), "code": GOOD, "csrf": "forged"}
    refused = browser.request("POST", f"{PREFIX}otp", form)
    assert refused.status == 403
    assert not [c for c in site.auth.calls if c[0] == "verify"]


def test_another_policy_service_can_finish_the_sign_in(site: Site, tmp_path: Path) -> None:
    """The state is in the session DB: a second portal on the same DB takes the code."""
    browser = Browser(site)
    page = browser.login("alice")
    other_db = Database(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    other = SessionStore(other_db, Timeouts(1800, 43200))
    settings = PortalSettings(PREFIX, "Gatehouse", "gatehouse_session", None, (), NO_HOSTS)

    async def audit(*_: object) -> None:
        return None

    portal = Portal(settings, other, site.auth, CsrfGuard(b"k" * 32), audit, otp=site.auth)
    site.app.router.routes[3] = Route(f"{PREFIX}otp", portal.otp_submit, methods=["POST"])
    done = browser.submit(page, "otp", code=GOOD)
    assert done.status == 303
    assert site.lookup(browser.session).methods == ("password", "otp")
    site.run(other_db.dispose())


def test_no_authentication_service_is_a_clear_page(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("alice")
    site.auth.down = True
    reply = browser.submit(page, "otp", code=GOOD)
    assert reply.status == 503
    assert "not possible right now" in reply.body


# --- step-up ---------------------------------------------------------------------------------


def test_a_password_session_steps_up_with_a_new_id(site: Site) -> None:
    browser = Browser(site)
    assert browser.login("alice", step=None).status == 303
    old = browser.session
    page = browser.get(f"{PREFIX}login?rd=%2Fsecure%2F&step=otp")
    assert page.status == 200
    assert "<h1>Enter your one-time code</h1>" in page.body
    assert 'name="password"' not in page.body  # the code alone
    done = browser.submit(page, "otp", code=GOOD)
    assert done.status == 303
    assert done.header("Location") == "/secure/"
    assert browser.session != old
    assert site.lookup(old) is None
    record = site.lookup(browser.session)
    assert record.methods == ("password", "otp")
    assert ("session_stepped_up", "alice") in [(e, u) for e, u, _ in site.audit]
    # Already there: the marker just sends the browser back.
    again = browser.get(f"{PREFIX}login?rd=%2Fsecure%2F&step=otp")
    assert again.status == 303
    assert again.header("Location") == "/secure/"


def test_the_code_page_needs_a_sign_in_under_way(site: Site) -> None:
    browser = Browser(site)
    reply = browser.get(f"{PREFIX}otp?rd=%2Fsecure%2F")
    assert reply.status == 400
    assert "Sign-in ended" in reply.body


# --- enrolment -------------------------------------------------------------------------------


def test_a_user_without_a_token_enrols_one_and_is_let_in(site: Site) -> None:
    site.auth.status["carol"] = OtpStatus(0, None, False)
    browser = Browser(site)
    page = browser.login("carol", rd="/secure/")
    assert page.status == 200
    assert "Set up your authenticator app" in page.body
    assert "<svg " in page.body
    assert "</svg>" in page.body
    assert "JBSW Y3DP EHPK 3PXP" in page.body  # the secret, to type by hand
    assert "otpauth://totp/Gatehouse:carol?secret=" in html.unescape(page.body)
    assert page.header("Cache-Control") == "no-store"
    serial = SERIAL.search(page.body)
    assert serial is not None
    wrong = browser.submit(page, "otp/confirm", code="000000")
    assert "does not match" in wrong.body
    assert "<svg " not in wrong.body  # the secret is shown once
    done = browser.submit(wrong, "otp/confirm", code=ENROL_GOOD)
    assert done.status == 303
    assert done.header("Location") == "/secure/"
    assert site.lookup(browser.session).methods == ("password", "otp")
    assert ("otp_enrolled", "carol") in [(e, u) for e, u, _ in site.audit]
    assert not any(SECRET in repr(detail) for _, _, detail in site.audit)


def test_an_administrator_can_require_enrolment_at_the_next_login(site: Site) -> None:
    site.auth.status["dave"] = OtpStatus(1, None, True)
    browser = Browser(site)
    page = browser.login("dave", step=None)  # even where no rule asks for a second factor
    assert "Set up your authenticator app" in page.body
    assert site.lookup(browser.session) is None


def test_without_self_enrolment_the_user_is_told_to_ask_an_administrator(site: Site) -> None:
    site.auth.status["erin"] = OtpStatus(0, None, False)
    site.auth.self_enrolment = False
    page = Browser(site).login("erin")
    assert page.status == 403
    assert "no authenticator is set up for your account" in page.body
    assert "contact your administrator" in page.body


def test_a_step_up_without_a_token_offers_enrolment_on_a_button(site: Site) -> None:
    site.auth.status["carol"] = OtpStatus(0, None, False)
    browser = Browser(site)
    browser.login("carol", step=None)
    offer = browser.get(f"{PREFIX}login?rd=%2Fsecure%2F&step=otp")
    assert "Set up an authenticator app" in offer.body
    assert not [c for c in site.auth.calls if c[0] == "enrol"]  # a GET makes no token
    page = browser.submit(offer, "otp/enrol")
    assert "<svg " in page.body


def test_a_password_alone_never_adds_a_token_next_to_the_users_own(site: Site) -> None:
    browser = Browser(site)
    assert browser.login("alice", step=None).status == 303
    page = browser.get(f"{PREFIX}login?rd=%2Fsecure%2F&step=otp")
    csrf = CSRF.search(page.body)
    assert csrf is not None
    reply = browser.request("POST", f"{PREFIX}otp/enrol", {"csrf": csrf.group(1), "rd": "/"})
    assert "<h1>Enter your one-time code</h1>" in reply.body
    assert not [c for c in site.auth.calls if c[0] == "enrol"]


def test_a_session_id_finished_twice_is_finished_once(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("alice")
    pending = browser.session
    assert browser.submit(page, "otp", code=GOOD).status == 303
    # The same form again with the old cookie: that sign-in is over.
    browser.cookies["gatehouse_session"] = pending or ""
    again = browser.submit(page, "otp", code=GOOD)
    assert again.status == 400
    assert hash_session_id(pending or "") not in {
        r.id_hash for r in site.run(site.sessions.live(datetime.now(UTC)))
    }


def test_a_token_gone_before_the_code_leads_to_enrolment(site: Site) -> None:
    browser = Browser(site)
    page = browser.login("frank")
    assert "Enter your one-time code" in page.body
    site.auth.status["frank"] = OtpStatus(0, None, False)  # an administrator deleted it
    reply = browser.submit(page, "otp", code=GOOD)
    assert reply.status == 200
    assert "Set up your authenticator app" in reply.body


def test_too_many_wrong_codes_for_a_new_token_start_over(site: Site) -> None:
    site.auth.status["gina"] = OtpStatus(0, None, False)
    browser = Browser(site)
    page = browser.login("gina")

    async def locked(*_: object) -> OtpResult:
        return OtpResult("locked")

    site.auth.otp_confirm = locked  # type: ignore[method-assign]
    reply = browser.submit(page, "otp/confirm", code="000000")
    assert "Please start again" in reply.body
    again = browser.submit(reply, "otp/enrol")
    assert "<svg " in again.body

"""A locked account's sign-in page says until when (local clock time, machine-readable UTC)
and that an administrator can unlock it; a denied user's 403 page offers a way out.

In-process: :func:`locked_message` and :class:`Portal` with a fixed clock and zone. End to
end: real ``gatehouse authentication``, ``gatehouse policy`` (started with ``TZ`` set to a
zone of its own) and ``gatehouse access-point`` on loopback, with a non-default portal prefix.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import pytest
from starlette.requests import Request

from gatehouse.policy.csrf import CsrfGuard
from gatehouse.policy.portal import (
    Portal,
    PortalSettings,
    Verdict,
    lock_end,
    locked_message,
)
from gatehouse.policy.redirects import NO_HOSTS
from gatehouse.policy.sessions import SessionStore
from tests.conftest import StartAP
from tests.policy.test_service import CSRF_FIELD, PASSWORD, Browser, Policy, Site, Stack, stack
from tests.support.processes import Service

__all__ = ["stack"]

ALT = "/_gh/"  # a non-default portal prefix: the links must follow the configuration
#: A POSIX TZ for the Policy process: "GHT", 3 h 30 min east of UTC, no daylight saving.
POSIX_ZONE = "GHT-3:30"
GHT = timezone(timedelta(hours=3, minutes=30), "GHT")
UNTIL = re.compile(r'until <time datetime="([0-9TZ:-]+)">(\d\d):(\d\d) ([A-Z]+)</time>')
ADMIN = "an administrator can unlock your account"


# --- the message, in-process ---------------------------------------------------------------


def test_locked_message_gives_the_local_clock_time_and_the_way_back() -> None:
    now = datetime(2025, 1, 15, 13, 17, 5, tzinfo=UTC)
    berlin = ZoneInfo("Europe/Berlin")
    message = locked_message(900, now, berlin)  # 13:32:05 UTC → shown as 14:33 CET
    assert str(message) == (
        "Too many failed attempts. This account is locked until "
        '<time datetime="2025-01-15T13:33:00Z">14:33 CET</time>. '
        "If you need access before then, an administrator can unlock your account."
    )
    summer = locked_message(900, datetime(2025, 7, 15, 13, 17, 5, tzinfo=UTC), berlin)
    assert 'datetime="2025-07-15T13:33:00Z">15:33 CEST</time>' in summer
    assert '">13:33 UTC</time>' in locked_message(900, now, UTC)
    assert '">17:03 GHT</time>' in locked_message(900, now, GHT)


def test_the_time_shown_is_never_before_the_lock_ends() -> None:
    now = datetime(2025, 1, 15, 13, 17, 0, tzinfo=UTC)
    assert lock_end(now, 120) == datetime(2025, 1, 15, 13, 19, tzinfo=UTC)  # exact: kept
    assert lock_end(now, 120.5) == datetime(2025, 1, 15, 13, 20, tzinfo=UTC)
    assert lock_end(now, 0.2) == datetime(2025, 1, 15, 13, 18, tzinfo=UTC)
    assert lock_end(now, -5) == now


def test_a_lock_ending_on_another_day_names_the_date() -> None:
    now = datetime(2025, 1, 15, 22, 50, tzinfo=UTC)  # 23:50 in Berlin
    message = locked_message(3600, now, ZoneInfo("Europe/Berlin"))
    assert '<time datetime="2025-01-15T23:50:00Z">00:50 CET on 2025-01-16</time>' in message


def test_the_process_local_zone_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", POSIX_ZONE)
    time.tzset()
    try:
        now = datetime(2025, 1, 15, 13, 17, tzinfo=UTC)
        assert '<time datetime="2025-01-15T13:32:00Z">17:02 GHT</time>' in locked_message(900, now)
    finally:
        monkeypatch.undo()
        time.tzset()


class LockedChecker:
    async def verify(
        self,
        username: str,
        password: str,
        client_ip: str,
        device: str | None = None,
        otp: bool = False,
    ) -> Verdict:
        return Verdict("locked", retry_after=600)


def _post(portal: Portal, path: str, form: dict[str, str], cookies: dict[str, str]) -> Any:
    body = urlencode(form).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "server": ("gw.test", 80),
        "client": ("127.0.0.1", 40000),
        "headers": [
            (b"host", b"gw.test"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()),
        ],
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return asyncio.run(portal.login_submit(Request(scope, receive)))


def test_the_sign_in_page_of_a_locked_account_renders_the_message() -> None:
    settings = PortalSettings(ALT, "Gatehouse", "gatehouse_session", None, (), NO_HOSTS)
    guard = CsrfGuard(b"k" * 32)

    async def audit(*_: object) -> None:
        return None

    portal = Portal(
        settings,
        cast(SessionStore, None),  # a locked account never reaches the session store
        LockedChecker(),
        guard,
        audit,
        clock=lambda: datetime(2025, 1, 15, 13, 17, 30, tzinfo=UTC),
        tz=ZoneInfo("Europe/Berlin"),
    )
    token = guard.new_token()
    form = {
        "username": "mallory<x>",
        "password": "whatever",
        "csrf": guard.form_value(token, "127.0.0.1"),
        "rd": "/app",
    }
    response = _post(portal, f"{ALT}login", form, {"gatehouse_csrf": token})
    assert response.status_code == 200
    page = response.body.decode()
    assert (
        '<p class="message error" id="login-error" role="alert">Too many failed attempts. '
        'This account is locked until <time datetime="2025-01-15T13:28:00Z">14:28 CET</time>. '
        "If you need access before then, an administrator can unlock your account.</p>"
    ) in page
    assert 'value="mallory&lt;x&gt;"' in page  # the rest of the page is still escaped
    assert "<script" not in page


# --- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoned(stack: Stack) -> Policy:
    """A Policy service whose local time zone is GHT and whose portal is under /_gh/."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TZ", POSIX_ZONE)  # the child process inherits it
        return stack.start_policy(login={"portal_prefix": ALT})


def _login(browser: Browser, username: str, password: str, rd: str) -> Any:
    page = browser.get(f"{ALT}login?{urlencode({'rd': rd})}")
    assert page.status == 200, page.body
    csrf = CSRF_FIELD.search(page.body)
    assert csrf is not None
    form = {"username": username, "password": password, "csrf": csrf.group(1), "rd": rd}
    return browser.post(f"{ALT}login", form)


def _through_an_ap(zoned: Policy, start_ap: StartAP, backend: Service) -> Browser:
    ap = start_ap(
        [
            {"id": "staff-only", "path_prefix": "/staff", "backends": [backend.url]},
            {"id": "app", "path_prefix": "/app", "backends": [backend.url]},
        ],
        {"policy_services": [f"http://127.0.0.1:{zoned.port}"], "reserved_prefix": ALT},
    )
    return Browser(Site(ap.host, ap.port))


def test_a_locked_account_is_told_until_when_and_who_can_unlock_it(
    zoned: Policy, start_ap: StartAP, demo_backend: Service
) -> None:
    browser = _through_an_ap(zoned, start_ap, demo_backend)
    for _ in range(3):  # the stack locks an account for 120 s after 3 failures
        reply = _login(browser, "mallory", "wrong", "/app/page")
        assert "Wrong user name or password." in reply.body
    locked_at = datetime.now(UTC)
    reply = _login(browser, "mallory", PASSWORD, "/app/page")  # right password, but locked
    assert reply.status == 200
    assert browser.session is None
    assert "Too many failed attempts. This account is locked until " in reply.body
    assert ADMIN in reply.body
    assert "gatehouse users unlock" not in reply.body  # the page is for end users
    found = UNTIL.search(reply.body)
    assert found is not None, reply.body
    stamp, hours, minutes, zone = found.groups()
    assert zone == "GHT"  # the Policy service's local zone, not UTC
    shown = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    local = shown.astimezone(GHT)
    assert (local.hour, local.minute) == (int(hours), int(minutes))
    # The lock ends 120 s after the third failure; the page rounds up to the minute.
    expected = locked_at + timedelta(seconds=120)
    assert -5 <= (shown - expected).total_seconds() <= 65, (shown, expected)


def test_a_denied_user_gets_a_403_with_a_way_to_sign_in_as_someone_else(
    zoned: Policy, start_ap: StartAP, demo_backend: Service
) -> None:
    browser = _through_an_ap(zoned, start_ap, demo_backend)
    assert _login(browser, "bob", PASSWORD, "/staff/page?x=1").status == 303
    session = browser.session
    assert session is not None

    denied = browser.get("/staff/page?x=1")  # bob is not in the staff group
    assert denied.status == 403
    assert denied.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "You do not have access to this resource." in denied.body
    back = quote("/staff/page?x=1", safe="")
    link = f'<a href="{ALT}logout?rd={back}">Sign out / sign in as someone else</a>'
    assert link in denied.body
    head = browser.request("HEAD", "/staff/page?x=1")
    assert head.status == 403
    assert head.body == ""

    # Following it: the sign-out page (carrying the return path), sign out, sign in as alice,
    # and back at the page bob could not see.
    confirm = browser.get(f"{ALT}logout?rd={back}")
    assert confirm.status == 200
    assert "<strong>Bob</strong>" in confirm.body
    assert '<input type="hidden" name="rd" value="/staff/page?x=1">' in confirm.body
    csrf = CSRF_FIELD.search(confirm.body)
    assert csrf is not None
    done = browser.post(f"{ALT}logout", {"csrf": csrf.group(1), "rd": "/staff/page?x=1"})
    assert done.status == 200
    assert "You are signed out." in done.body
    assert f'<a href="{ALT}login?rd={back}">Sign in again</a>' in done.body
    assert browser.session is None
    signed_in = _login(browser, "alice", PASSWORD, "/staff/page?x=1")
    assert signed_in.status == 303
    assert signed_in.headers["Location"] == "/staff/page?x=1"
    deadline = time.monotonic() + 5
    while (page := browser.get("/staff/page?x=1")).status != 200:
        assert time.monotonic() < deadline, page.status
        time.sleep(0.05)
    assert dict(page.json()["headers"])["remote-user"] == "alice"


@pytest.mark.parametrize(
    "rd", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"]
)
def test_the_sign_out_return_path_is_no_open_redirect(zoned: Policy, rd: str) -> None:
    browser = Browser(zoned)
    page = browser.get(f"{ALT}logout?{urlencode({'rd': rd})}")  # not signed in: signed out
    assert page.status == 200
    assert f'<a href="{ALT}login">Sign in again</a>' in page.body
    assert "evil" not in page.body
    assert "javascript" not in page.body

"""The login portal over HTTP: sign-in, CSRF, return URLs, session ids, expiry, sign-out.

Real processes on loopback (harness in ``test_service.py``): ``gatehouse policy`` checking
passwords with ``gatehouse authentication``, users made with ``gatehouse users add``.
"""

from __future__ import annotations

import html
import re
import time
from urllib.parse import quote, urlencode

import pytest

from gatehouse.policy.sessions import hash_session_id
from tests.conftest import StartAP
from tests.policy.test_service import (
    CSRF_FIELD,
    PASSWORD,
    PREFIX,
    Browser,
    Policy,
    Site,
    Stack,
    ps,
    stack,
)
from tests.support.processes import Service, free_port

__all__ = ["ps", "stack"]

FORM = f"{PREFIX}login"
DASH = "\N{EN DASH}"


def cookie_header(browser: Browser, name: str) -> str:
    found = [h for h in browser.set_cookies if h.startswith(f"{name}=")]
    assert len(found) == 1, browser.set_cookies
    return found[0]


def attributes(header: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}


# --- the page ------------------------------------------------------------------------------


def test_login_page_is_plain_accessible_html(ps: Policy) -> None:
    browser = Browser(ps)
    page = browser.get(f"{FORM}?rd=%2Fapp%2Fpage%3Fx%3D1")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    body = page.body
    assert '<html lang="en">' in body
    assert f"<title>Sign in {DASH} Gatehouse</title>" in body
    assert "<main" in body
    assert "<h1>Sign in</h1>" in body
    assert '<label for="username">' in body
    assert '<label for="password">' in body
    assert re.search(r'<input id="username"[^>]*autocomplete="username"', body)
    assert re.search(
        r'<input id="password"[^>]*type="password"[^>]*autocomplete="current-password"', body
    )
    assert f'<form method="post" action="{FORM}"' in body
    assert '<input type="hidden" name="rd" value="/app/page?x=1">' in body
    # One inline stylesheet, no script, nothing loaded from elsewhere.
    assert body.count("<style>") == 1
    assert "<script" not in body
    assert not re.search(r'(src|href)="(https?:)?//', body)
    assert "style-src 'sha256-" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    csrf = cookie_header(browser, "gatehouse_csrf")
    assert {"httponly", "path"} <= attributes(csrf)
    assert "SameSite=Strict" in csrf
    assert "Path=/_gatehouse/" in csrf


def test_stylesheet_is_served_too(ps: Policy) -> None:
    reply = ps.request("GET", f"{PREFIX}static/gatehouse.css")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/css")
    assert "--accent" in reply.body


# --- signing in ----------------------------------------------------------------------------


def test_login_sets_the_session_cookie_and_returns_with_303(ps: Policy) -> None:
    browser = Browser(ps)
    reply = browser.login("alice", rd="/app/page?x=1")
    assert reply.status == 303
    assert reply.headers["Location"] == "/app/page?x=1"
    header = cookie_header(browser, "gatehouse_session")
    assert re.match(r"gatehouse_session=[A-Za-z0-9_-]{43}; ", header)
    assert {"httponly", "path", "samesite"} <= attributes(header)
    assert "SameSite=Lax" in header
    assert "Path=/;" in header
    assert "secure" not in attributes(header)
    assert "domain" not in attributes(header)
    assert ps.decision(browser.session)["headers"]["Remote-User"] == "alice"


def test_cookie_is_secure_when_a_trusted_proxy_saw_https(ps: Policy) -> None:
    browser = Browser(ps)
    reply = browser.login("alice", headers={"X-Forwarded-Proto": "https"})
    assert reply.status == 303
    assert "secure" in attributes(cookie_header(browser, "gatehouse_session"))


def test_forwarded_fields_of_untrusted_peers_are_ignored(stack: Stack) -> None:
    strict = stack.start_policy(
        {"trusted_proxies": ["10.0.0.0/8"]}, sessions={"cookie_domain": "example.test"}
    )
    browser = Browser(strict)
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    assert browser.login("alice", headers=headers).status == 303
    header = cookie_header(browser, "gatehouse_session")
    assert "secure" not in attributes(header)
    assert "Domain=example.test" in header
    assert browser.session is not None
    info = strict.admin("GET", "/internal/v1/sessions?user=alice").json()["sessions"]
    mine = [s for s in info if s["id_hash"] == hash_session_id(browser.session)]
    assert [s["client_ip"] for s in mine] == ["127.0.0.1"]


def test_client_ip_comes_from_a_trusted_proxy(ps: Policy) -> None:
    browser = Browser(ps)
    reply = browser.login("bob", headers={"X-Forwarded-For": "198.51.100.4, 127.0.0.1"})
    assert reply.status == 303
    assert browser.session is not None
    info = ps.admin("GET", "/internal/v1/sessions?user=bob").json()["sessions"]
    mine = [s for s in info if s["id_hash"] == hash_session_id(browser.session)]
    assert mine[0]["client_ip"] == "198.51.100.4"


@pytest.mark.parametrize("username", ["alice", "nobody-at-all"])
def test_wrong_password_or_unknown_user_shows_the_same_message(ps: Policy, username: str) -> None:
    browser = Browser(ps)
    reply = browser.login(username, "not the password")
    assert reply.status == 200
    assert '<p class="message error" id="login-error" role="alert">' in reply.body
    assert "Wrong user name or password." in reply.body
    assert f'value="{username}"' in reply.body  # the name is kept, the password is not
    assert "not the password" not in reply.body
    assert 'aria-describedby="login-error"' in reply.body
    assert browser.session is None
    # The form works again as it is.
    match = CSRF_FIELD.search(reply.body)
    assert match is not None
    again = browser.post(
        FORM, {"username": "alice", "password": PASSWORD, "csrf": match.group(1), "rd": "/x"}
    )
    assert again.status == 303


def test_empty_fields_are_asked_for(ps: Policy) -> None:
    browser = Browser(ps)
    reply = browser.login("alice", "")
    assert reply.status == 200
    assert "Enter your user name and password." in reply.body


def test_locked_account_says_when_to_try_again(ps: Policy) -> None:
    browser = Browser(ps)
    for _ in range(3):
        assert "Wrong user name or password." in browser.login("mallory", "wrong").body
    reply = browser.login("mallory", PASSWORD)  # right password, but locked now
    assert reply.status == 200
    # Until when (the clock time is checked in test_lockout_page.py) and the way back.
    assert "Too many failed attempts. This account is locked until <time datetime=" in reply.body
    assert "an administrator can unlock your account." in reply.body
    assert browser.session is None


def test_authentication_service_down_answers_503(stack: Stack) -> None:
    dead = stack.start_policy({"authentication": [f"http://127.0.0.1:{free_port()}"]})
    browser = Browser(dead)
    reply = browser.login("alice")
    assert reply.status == 503
    assert "<main" in reply.body
    assert "Signing in is not possible right now." in reply.body
    assert browser.session is None


# --- CSRF ----------------------------------------------------------------------------------


def test_csrf_missing_or_wrong_is_refused(ps: Policy) -> None:
    browser = Browser(ps)
    good = browser.login_form("/app")
    form = {"username": "alice", "password": PASSWORD, "rd": "/app"}
    other = Browser(ps)
    foreign = other.login_form("/app")
    for csrf in (None, "", "x" * 43, browser.cookies["gatehouse_csrf"], foreign):
        sent = dict(form) if csrf is None else {**form, "csrf": csrf}
        reply = browser.post(FORM, sent)
        assert reply.status == 403, csrf
        assert "This form has expired" in reply.body
        assert f"<title>Form expired {DASH} Gatehouse</title>" in reply.body
        assert browser.session is None
    # The right value, but no cookie (another site's form cannot send ours).
    cookieless = Browser(ps)
    assert cookieless.post(FORM, {**form, "csrf": good}).status == 403
    # The Policy service's log says why each was refused, and names no token.
    logged = ps.service.log_path.read_text()
    assert f"form to {FORM} refused: the form has no CSRF field" in logged
    assert "refused: the form's CSRF field does not sign the browser's cookie for address" in logged
    assert f"form to {FORM} refused: the browser sent no CSRF cookie" in logged
    assert good not in logged
    assert browser.cookies["gatehouse_csrf"] not in logged
    # Not a form at all.
    raw = ps.request("POST", FORM, b'{"username": "alice"}', {"Content-Type": "application/json"})
    assert raw.status == 403
    # And the genuine form still works.
    assert browser.post(FORM, {**form, "csrf": good}).status == 303


def test_logout_needs_the_csrf_token_too(ps: Policy) -> None:
    browser = Browser(ps)
    assert browser.login("alice").status == 303
    session = browser.session
    assert browser.post(f"{PREFIX}logout", {}).status == 403
    assert browser.post(f"{PREFIX}logout", {"csrf": "forged"}).status == 403
    assert ps.decision(session)["decision"] == "allow"


# --- return URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rd",
    [
        "//evil.example",
        "//evil.example/path",
        "https://evil.example/",
        "http://evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "javascript:alert(document.cookie)",
        "https://127.0.0.1.evil.example/",
        "https://127.0.0.1@evil.example/",
    ],
)
def test_open_redirects_are_refused(ps: Policy, rd: str) -> None:
    browser = Browser(ps)
    page = browser.get(f"{FORM}?{urlencode({'rd': rd})}")
    assert '<input type="hidden" name="rd" value="/">' in page.body
    reply = browser.login("alice", rd=rd)
    assert reply.status == 303
    assert reply.headers["Location"] == "/"


def test_absolute_return_urls_on_the_request_host_are_kept(ps: Policy) -> None:
    browser = Browser(ps)
    rd = "https://app.example/page?q=1"
    reply = browser.login("alice", rd=rd, headers={"X-Forwarded-Host": "app.example"})
    assert reply.headers["Location"] == rd
    elsewhere = Browser(ps).login("alice", rd=rd, headers={"X-Forwarded-Host": "other.example"})
    assert elsewhere.headers["Location"] == "/"


# --- session ids ---------------------------------------------------------------------------


def test_every_login_gets_a_new_session_id(ps: Policy) -> None:
    browser = Browser(ps)
    planted = "P" * 43  # an id an attacker might have planted in the browser
    browser.cookies["gatehouse_session"] = planted
    assert browser.login("alice").status == 303
    first = browser.session
    assert first is not None
    assert first != planted
    assert browser.login("alice").status == 303
    second = browser.session
    assert second not in (first, planted)
    # The session the browser had before the login is gone.
    assert ps.decision(first)["decision"] == "authenticate"
    assert ps.decision(second)["decision"] == "allow"
    assert ps.decision(planted)["decision"] == "authenticate"


def test_idle_expiry(stack: Stack) -> None:
    short = stack.start_policy(sessions={"idle_timeout": 2, "absolute_timeout": 60})
    session = _login(short)
    for _ in range(3):  # used within the idle timeout: stays alive past it
        time.sleep(1.0)
        assert short.decision(session)["decision"] == "allow"
    time.sleep(2.5)
    assert short.decision(session)["decision"] == "authenticate"
    assert short.admin("GET", "/internal/v1/sessions?user=trudy").json() == {"sessions": []}


def test_absolute_expiry(stack: Stack) -> None:
    short = stack.start_policy(sessions={"idle_timeout": 2, "absolute_timeout": 3})
    session = _login(short)
    answer = short.decision(session)
    assert answer["decision"] == "allow"
    assert answer["ttl"] <= 2  # never cached past the session's expiry
    for _ in range(4):
        time.sleep(0.7)
        short.decision(session)
    time.sleep(0.5)  # 3.3 s after login, in use all along
    assert short.decision(session)["decision"] == "authenticate"


def _login(ps: Policy) -> str:
    browser = Browser(ps)
    assert browser.login("trudy").status == 303
    assert browser.session is not None
    return browser.session


# --- signing out ---------------------------------------------------------------------------


def test_logout_revokes_the_session_and_tells_the_access_points(stack: Stack, ps: Policy) -> None:
    browser = Browser(ps)
    assert browser.login("bob").status == 303
    session = browser.session
    assert session is not None

    confirm = browser.get(f"{PREFIX}logout")
    assert confirm.status == 200
    assert f"<title>Sign out {DASH} Gatehouse</title>" in confirm.body
    assert f'<form method="post" action="{PREFIX}logout"' in confirm.body
    assert "<strong>Bob</strong>" in confirm.body
    assert ps.decision(session)["decision"] == "allow"  # showing the page changes nothing
    csrf = CSRF_FIELD.search(confirm.body)
    assert csrf is not None

    with ps.events() as events:
        done = browser.post(f"{PREFIX}logout", {"csrf": csrf.group(1)})
        assert done.status == 200
        assert "You are signed out." in done.body
        assert "<main" in done.body
        cleared = cookie_header(browser, "gatehouse_session")
        assert "Max-Age=0" in cleared
        assert "Path=/" in cleared
        assert browser.session is None
        started = time.monotonic()
        event = events.wait_for("revoke", 1)
        assert event == {"type": "revoke", "session": hash_session_id(session)}
        assert time.monotonic() - started < 1
    assert ps.decision(session)["decision"] == "authenticate"
    logged = [d for name, d in stack.audit_events("logout") if name == "bob"]
    assert {"session": hash_session_id(session)} in logged


def test_logout_without_a_session_just_says_signed_out(ps: Policy) -> None:
    page = Browser(ps).get(f"{PREFIX}logout")
    assert page.status == 200
    assert "You are signed out." in page.body
    assert f'href="{PREFIX}login"' in page.body


# --- end to end, through an Access Point -------------------------------------------------------


def test_end_to_end_through_an_access_point(
    ps: Policy, start_ap: StartAP, demo_backend: Service
) -> None:
    ap = start_ap(
        [{"id": "app", "path_prefix": "/app", "backends": [demo_backend.url]}],
        {"policy_services": [f"http://127.0.0.1:{ps.port}"]},
    )
    browser = Browser(Site(ap.host, ap.port))
    origin = f"http://127.0.0.1:{ap.port}"

    first = browser.get("/app/page?x=1")
    assert first.status == 303
    assert first.headers["Location"] == (
        f"{PREFIX}login?rd={quote(origin + '/app/page?x=1', safe='')}"
    )
    login_path = first.headers["Location"]
    page = browser.get(login_path)  # the portal, relayed by the AP
    assert page.status == 200
    csrf = CSRF_FIELD.search(page.body)
    assert csrf is not None
    rd = re.search(r'name="rd" value="([^"]*)"', page.body)
    assert rd is not None
    assert html.unescape(rd.group(1)) == origin + "/app/page?x=1"  # the AP's host is allowed
    form = {
        "username": "alice",
        "password": PASSWORD,
        "csrf": csrf.group(1),
        "rd": origin + "/app/page?x=1",
    }
    signed_in = browser.post(f"{PREFIX}login", form)
    assert signed_in.status == 303
    assert signed_in.headers["Location"] == origin + "/app/page?x=1"
    session = browser.session
    assert session is not None

    echoed = browser.get("/app/page?x=1")
    assert echoed.status == 200
    seen = dict(echoed.json()["headers"])
    assert seen["remote-user"] == "alice"
    assert seen["remote-groups"] == "staff"
    assert "gatehouse_session" not in seen.get("cookie", "")

    confirm = browser.get(f"{PREFIX}logout")
    token = CSRF_FIELD.search(confirm.body)
    assert token is not None
    assert browser.post(f"{PREFIX}logout", {"csrf": token.group(1)}).status == 200
    # The revocation reaches the AP's decision cache within a second.
    browser.cookies["gatehouse_session"] = session  # even a replayed cookie is refused
    deadline = time.monotonic() + 1.0
    while browser.get("/app/page?x=1").status != 303:
        assert time.monotonic() < deadline, "the AP still lets the revoked session in"
        time.sleep(0.05)


def test_malformed_forms_get_a_page_not_a_traceback(ps: Policy) -> None:
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    ).encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    reply = ps.request("POST", FORM, body, headers)
    assert reply.status == 400
    assert "<main" in reply.body
    assert "Traceback" not in reply.body
    broken = ps.request("POST", FORM, b"--nope", {"Content-Type": "multipart/form-data"})
    assert broken.status in (400, 403)
    assert "Traceback" not in ps.service.output()

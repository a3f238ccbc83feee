"""Protected resources end to end: Access Point → Policy service → Authentication service,
all real processes on loopback, users created with the ``gatehouse users`` CLI."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import (
    LOGIN,
    Browser,
    Gateway,
    add_user,
    echoed_headers,
    start_gateway,
)
from tests.support.processes import Service

PASSWORD = "correct horse battery"

RULES = {
    "rules": {"staff": {"groups_any": ["staff"]}},
    "resources": {
        "demo": "authenticated",
        "staff-only": {"rule": "staff"},
        "users-only": {"users": ["bob"]},
        "all-groups": {"groups_all": ["staff", "ops"]},
        "get-only": {"all": ["authenticated", {"methods": ["GET", "HEAD"]}]},
        "lan-only": {"all": ["authenticated", {"ip": ["10.0.0.0/8"]}]},
        "loopback": {"all": ["authenticated", {"ip": ["127.0.0.0/8", "::1/128"]}]},
        "blue-team": {
            "all": ["authenticated", {"header": {"name": "X-Team", "matches": "^blue$"}}]
        },
        "other-ap": {"all": ["authenticated", {"access_point": ["ap9"]}]},
        "this-ap": {"all": ["authenticated", {"access_point": ["ap1"]}]},
        "not-staff": {"all": ["authenticated", {"not": {"rule": "staff"}}]},
        "any-time": {
            "all": [
                "authenticated",
                {"time": {"from": "00:00", "to": "23:59:59", "timezone": "UTC"}},
            ]
        },
        "never": {
            "all": [
                "authenticated",
                {"time": {"days": ["mon"], "from": "00:00", "to": "00:00:01", "timezone": "UTC"}},
                {"time": {"days": ["tue"], "from": "00:00", "to": "00:00:01", "timezone": "UTC"}},
            ]
        },
        "step-up": {"all": ["authenticated", {"auth_methods": ["password", "otp"]}]},
        "open": "public",
    },
}
RESOURCE_IDS = list(RULES["resources"])  # type: ignore[arg-type]


def ap_resources() -> list[dict[str, object]]:
    return [{"id": rid, "path_prefix": f"/{rid}", "public": rid == "open"} for rid in RESOURCE_IDS]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("gateway")
    gw = start_gateway(
        tmp,
        RULES,
        ap_resources(),
        aps=2,
        ap_settings={"trusted_proxies": ["127.0.0.2/32"], "decision_headers": ["X-Team"]},
    )
    try:
        add_user(gw.home, "alice", PASSWORD, ("staff",))
        add_user(gw.home, "bob", PASSWORD)
        add_user(gw.home, "carol", PASSWORD, ("staff", "ops"))
        yield gw
    finally:
        gw.stop()


def logged_in(gw: Gateway, user: str = "alice", ap: int = 0) -> Browser:
    browser = gw.browser(ap)
    response = browser.login(user, PASSWORD)
    assert response.status == 303, response.body[:500]
    assert "gatehouse_session" in browser.cookies
    return browser


def test_anonymous_login_and_back_with_identity_headers(gateway: Gateway) -> None:
    browser = gateway.browser()
    first = browser.get("/demo/page?x=1")
    assert first.status == 303
    location = urllib.parse.urlsplit(first.location)
    assert location.path == LOGIN
    rd = urllib.parse.parse_qs(location.query)["rd"][0]
    assert rd.endswith("/demo/page?x=1")
    done = browser.login("alice", PASSWORD, rd=rd)
    assert done.status == 303
    assert done.location == rd
    page = browser.get("/demo/page?x=1")
    assert page.status == 200
    seen = echoed_headers(page)
    assert seen["remote-user"] == "alice"
    assert seen["remote-groups"] == "staff"
    assert "gatehouse_session" not in seen.get("cookie", ""), "backends never see the session"


def test_wrong_password_and_unknown_user_get_the_same_message(gateway: Gateway) -> None:
    wrong = gateway.browser().login("alice", "not the password")
    unknown = gateway.browser().login("nobody-here", "not the password")
    for response in (wrong, unknown):
        assert response.status in (200, 401)
        assert b"Wrong user name or password" in response.body
        assert not any(
            "gatehouse_session=" in c and "Max-Age=0" not in c for c in response.set_cookies
        )


def test_new_session_id_at_every_login(gateway: Gateway) -> None:
    browser = logged_in(gateway)
    first = browser.cookies["gatehouse_session"]
    assert len(first) >= 22  # >= 128 bits, base64url
    again = browser.login("alice", PASSWORD)
    assert again.status == 303
    assert browser.cookies["gatehouse_session"] != first
    stale = Browser("127.0.0.1", gateway.ap.port, {"gatehouse_session": first})
    assert stale.get("/demo/").status == 303, "the old session ended with the new login"


@pytest.mark.parametrize(
    ("user", "path", "status"),
    [
        ("alice", "/staff-only/", 200),
        ("bob", "/staff-only/", 403),
        ("bob", "/users-only/", 200),
        ("alice", "/users-only/", 403),
        ("carol", "/all-groups/", 200),
        ("alice", "/all-groups/", 403),
        ("alice", "/loopback/", 200),
        ("alice", "/lan-only/", 403),
        ("alice", "/this-ap/", 200),
        ("alice", "/other-ap/", 403),
        ("bob", "/not-staff/", 200),
        ("alice", "/not-staff/", 403),
        ("alice", "/any-time/", 200),
        ("alice", "/never/", 403),
        ("alice", "/open/", 200),
    ],
)
def test_rule_conditions(gateway: Gateway, user: str, path: str, status: int) -> None:
    browser = logged_in(gateway, user)
    response = browser.get(path)
    assert response.status == status, response.body[:300]
    if status == 403:
        assert b"You do not have access to this resource." in response.body


def test_method_condition(gateway: Gateway) -> None:
    browser = logged_in(gateway)
    assert browser.get("/get-only/").status == 200
    assert browser.request("POST", "/get-only/", b"x").status == 403


def test_header_condition(gateway: Gateway) -> None:
    browser = logged_in(gateway)
    assert browser.get("/blue-team/", headers={"X-Team": "blue"}).status == 200
    assert browser.get("/blue-team/", headers={"X-Team": "red"}).status == 403
    assert browser.get("/blue-team/").status == 403


def test_public_resource_needs_no_session(gateway: Gateway) -> None:
    response = gateway.browser().get("/open/x")
    assert response.status == 200
    assert "remote-user" not in echoed_headers(response)


def test_step_up_sends_a_logged_in_user_back_to_the_portal(gateway: Gateway) -> None:
    browser = logged_in(gateway)
    response = browser.get("/step-up/")
    assert response.status == 303
    assert urllib.parse.urlsplit(response.location).path == LOGIN


def test_spoofed_identity_headers_never_reach_the_backend(gateway: Gateway) -> None:
    browser = logged_in(gateway, "bob")
    spoof = {"Remote-User": "alice", "Remote-Groups": "staff", "Remote_User": "alice"}
    assert browser.get("/staff-only/", headers=spoof).status == 403
    seen = echoed_headers(browser.get("/demo/", headers=spoof))
    assert seen["remote-user"] == "bob"
    assert "remote-groups" not in seen
    assert "remote_user" not in seen
    anonymous = gateway.browser().get("/open/", headers=spoof)
    assert "remote-user" not in echoed_headers(anonymous)


def test_cookie_flags(gateway: Gateway) -> None:
    browser = logged_in(gateway)
    attributes = browser.cookie_attributes["gatehouse_session"].lower()
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "secure" not in attributes, "plain HTTP: no Secure flag"
    assert "path=/" in attributes


def test_cookie_is_secure_behind_tls(gateway: Gateway) -> None:
    # The load balancer (a trusted proxy, 127.0.0.2) terminated TLS and says so.
    browser = Browser("127.0.0.1", gateway.ap.port, source="127.0.0.2")
    tls = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    page = browser.get(f"{LOGIN}?rd=%2F", headers=tls)
    token = page.body.split(b'name="csrf" value="')[1].split(b'"')[0].decode()
    form = urllib.parse.urlencode(
        {"username": "alice", "password": PASSWORD, "csrf": token, "rd": "/"}
    ).encode()
    response = browser.request(
        "POST", LOGIN, form, {"Content-Type": "application/x-www-form-urlencoded", **tls}
    )
    assert response.status == 303
    assert "secure" in browser.cookie_attributes["gatehouse_session"].lower()


@pytest.mark.parametrize("token", [None, "forged-token"])
def test_login_without_a_valid_csrf_token_is_refused(gateway: Gateway, token: str | None) -> None:
    browser = gateway.browser()
    browser.get(f"{LOGIN}?rd=%2F")
    fields = {"username": "alice", "password": PASSWORD, "rd": "/"}
    if token is not None:
        fields["csrf"] = token
    response = browser.request(
        "POST",
        LOGIN,
        urllib.parse.urlencode(fields).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 403
    assert "gatehouse_session" not in browser.cookies


@pytest.mark.parametrize(
    "rd",
    [
        "//evil.example/",
        "https://evil.example/steal",
        "/\\evil.example",
        "javascript:alert(1)",
        "http://127.0.0.1.evil.example/",
    ],
)
def test_open_redirects_are_refused(gateway: Gateway, rd: str) -> None:
    response = gateway.browser().login("alice", PASSWORD, rd=rd)
    assert response.status == 303
    target = urllib.parse.urlsplit(response.location)
    assert target.netloc in ("", f"127.0.0.1:{gateway.ap.port}"), response.location
    assert "evil" not in response.location


def test_logout_reaches_a_second_ap_within_a_second(gateway: Gateway) -> None:
    browser = logged_in(gateway)
    session = browser.cookies["gatehouse_session"]
    on_ap2 = Browser("127.0.0.1", gateway.aps[1].port, {"gatehouse_session": session})
    assert on_ap2.get("/demo/").status == 200
    assert on_ap2.get("/demo/").status == 200  # now a cached decision on AP2
    page = browser.get("/_gatehouse/logout")
    token = page.body.split(b'name="csrf" value="')[1].split(b'"')[0].decode()
    logout = browser.request(
        "POST",
        "/_gatehouse/logout",
        urllib.parse.urlencode({"csrf": token}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert logout.status in (200, 303)
    signed_out_at = time.monotonic()
    while time.monotonic() - signed_out_at < 1.0:
        if on_ap2.get("/demo/").status == 303:
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - signed_out_at
    assert on_ap2.get("/demo/").status == 303, "AP2 still lets the logged-out session in"
    assert elapsed < 1.0


# Settings that need their own gateway ------------------------------------------------------


def test_session_idle_and_absolute_expiry(tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path,
        {"resources": {"demo": "authenticated"}},
        [{"id": "demo"}],
        sessions={"idle_timeout": "1500ms", "absolute_timeout": "4s"},
        policy_extra={"decision_ttl": "200ms"},
    )
    try:
        add_user(gw.home, "alice", PASSWORD)
        idle = logged_in(gw)
        time.sleep(2.2)
        assert idle.get("/demo/").status == 303, "idle session expired"
        busy = logged_in(gw)
        for _ in range(5):  # active: every 0.7 s, well inside the idle timeout
            assert busy.get("/demo/").status == 200
            time.sleep(0.7)
        time.sleep(0.8)
        assert busy.get("/demo/").status == 303, "absolute lifetime reached"
    finally:
        gw.stop()


def test_lockout_and_its_expiry(tmp_path: Path) -> None:
    gw = start_gateway(
        tmp_path,
        {"resources": {"demo": "authenticated"}},
        [{"id": "demo"}],
        auth_extra={
            "lockout": {
                "account_max_failures": 3,
                "account_window": "30s",
                "account_lock": "2s",
                "insecure_no_rate_cap": True,
            }
        },
    )
    try:
        add_user(gw.home, "alice", PASSWORD)
        for _ in range(3):
            assert b"Wrong user name or password" in gw.browser().login("alice", "nope").body
        locked = gw.browser().login("alice", PASSWORD)
        assert b"Too many failed attempts" in locked.body
        time.sleep(2.3)
        assert gw.browser().login("alice", PASSWORD).status == 303
    finally:
        gw.stop()


def test_policy_service_down_gives_503_then_recovers(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"resources": {"demo": "authenticated"}}, [{"id": "demo"}])
    try:
        add_user(gw.home, "alice", PASSWORD)
        browser = logged_in(gw)
        assert browser.get("/demo/").status == 200
        gw.policy.proc.kill()
        gw.policy.proc.wait(10)
        gw.policy.stop()  # closes its log
        deadline = time.monotonic() + 5
        response = browser.get("/demo/")
        while response.status != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
            response = browser.get("/demo/")
        assert response.status == 503
        assert b"policy service cannot be reached" in response.body
        assert b"Traceback" not in response.body
        restarted = Service(gw.policy.args, tmp_path / "policy2.log", "127.0.0.1", gw.policy.port)
        gw.policy = restarted.wait_ready(30)
        deadline = time.monotonic() + 10
        while browser.get("/demo/").status != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert browser.get("/demo/").status == 200, "the session survived the restart"
    finally:
        gw.stop()

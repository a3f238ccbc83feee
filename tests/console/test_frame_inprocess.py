"""The console's frame in-process: sign-in redirects, cookies and security headers, CSRF on
every POST, the role check per route, the audit log's filters, paging and CSV, and where a
sign-in may send the browser afterwards."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from gatehouse.administration.admins_audit import parse_filter
from gatehouse.administration.console.auth import _next
from gatehouse.administration.console.context import Administrator, ConsoleError, ConsolePage
from gatehouse.administration.console.csrf import csrf_token
from tests.console.support import SESSION_COOKIE, Console, console_app, field


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with console_app(tmp_path_factory.mktemp("frame")) as made:
        for name, role in (("sam", "superadmin"), ("hugo", "helpdesk"), ("aude", "auditor")):
            made.make_admin(name, role)
        yield made


@pytest.fixture(autouse=True)
def signed_out(console: Console) -> None:
    console.client.cookies.clear()


def test_pages_need_a_session_and_the_sign_in_page_is_hardened(console: Console) -> None:
    answer = console.client.get("/console/audit?who=sam")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=%2Fconsole%2Faudit%3Fwho%3Dsam"
    login = console.client.get(answer.headers["location"])
    assert login.status_code == 200
    headers = login.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "style-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    cookie = headers["set-cookie"]
    assert cookie.startswith("__Host-gatehouse_console_pre=")
    for flag in ("HttpOnly", "Path=/", "SameSite=strict", "Secure"):
        assert flag.lower() in cookie.lower()
    assert "domain" not in cookie.lower()
    assert "<script>" not in login.text
    assert " style=" not in login.text
    assert field(login.text, "next") == "/console/audit?who=sam"


def test_sign_in_and_sign_out_posts_need_their_csrf_token(console: Console) -> None:
    login = console.client.get("/console/login")
    form = {"username": "sam", "password": "x" * 12, "otp": "123456"}
    refused = console.client.post("/console/login", data=form)  # no token
    assert refused.status_code == 403
    assert "expired" in refused.text
    assert field(login.text, "csrf") != field(refused.text, "csrf")  # a new pre-session
    # With the token: checked (this service has no Authentication service to ask).
    form["csrf"] = field(refused.text, "csrf")
    unavailable = console.client.post("/console/login", data=form)
    assert unavailable.status_code == 503
    assert "not available" in unavailable.text

    csrf = console.sign_in("sam")
    assert console.client.post("/console/logout", data={}).status_code == 403
    assert console.client.get("/console/").status_code == 200  # still signed in
    out = console.client.post("/console/logout", data={"csrf": csrf})
    assert (out.status_code, out.headers["location"]) == (303, "/console/login")
    console.client.cookies.clear()
    console.client.cookies.set(SESSION_COOKIE, "gone")
    assert console.client.get("/console/").status_code == 303


def test_a_route_needs_its_permission_and_the_menu_shows_what_the_role_may_open(
    console: Console,
) -> None:
    console.sign_in("hugo")
    refused = console.client.get("/console/audit")
    assert refused.status_code == 403
    assert '<code class="permission">audit.read</code>' in refused.text
    assert "the role helpdesk does not have" in refused.text
    assert console.client.get("/console/audit.csv").status_code == 403
    overview = console.client.get("/console/")
    assert overview.status_code == 200
    assert 'href="/console/audit"' not in overview.text
    console.sign_in("aude")
    assert 'href="/console/audit"' in console.client.get("/console/").text
    assert console.client.get("/console/no-such-page").status_code == 404


def test_the_audit_log_filters_pages_and_exports(console: Console) -> None:
    store = console.service.store
    for index in range(60):
        console.client.portal.call(  # type: ignore[union-attr]
            store.record_audit, "olga", "token.assign", f'{{"user": "u{index}", "serial": "T"}}'
        )
    console.client.portal.call(store.record_audit, "sam", "version.publish", "=cmd|' /C calc'!A0")  # type: ignore[union-attr]
    console.sign_in("aude")
    page = console.client.get("/console/audit", params={"who": "olga"})
    assert page.status_code == 200
    assert page.text.count("<code>token.assign</code>") == 50
    older = re.search(r'<a href="([^"]+)" rel="next">Older entries</a>', page.text)
    assert older
    assert "before=" in older[1]
    rest = console.client.get(html.unescape(older[1]))
    assert rest.text.count("<code>token.assign</code>") == 10
    one = console.client.get("/console/audit", params={"user": '"u7"'})
    assert one.text.count("<code>token.assign</code>") == 1
    prefix = console.client.get("/console/audit", params={"action": "version."})
    assert "<code>version.publish</code>" in prefix.text
    assert "<code>token.assign</code>" not in prefix.text
    future = console.client.get("/console/audit", params={"since": "2999-01-01"})
    assert "No entry matches." in future.text
    bad = console.client.get("/console/audit", params={"since": "yesterday"})
    assert bad.status_code == 400
    assert "since: not a time" in bad.text

    exported = console.client.get("/console/audit.csv", params={"who": "sam"})
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["who"] for r in rows} == {"sam"}
    formula = next(r for r in rows if r["action"] == "version.publish")
    assert formula["what"].startswith("'=")  # a spreadsheet does not run it


def test_the_filter_and_the_next_page_are_checked() -> None:
    chosen = parse_filter({"who": " sam ", "until": "2030-01-02", "before": "9"})
    assert (chosen.who, chosen.before) == ("sam", 9)
    assert chosen.until is not None
    assert (chosen.until.hour, chosen.until.minute) == (23, 59)
    with pytest.raises(ValueError, match="before: not an entry id"):
        parse_filter({"before": "x"})
    assert _next("/console/audit?who=x") == "/console/audit?who=x"
    for hostile in (
        "https://evil.example/console/",
        "//evil.example/console/",
        "/elsewhere",
        "/console/login?next=/console/",
        "",
    ):
        assert _next(hostile) == "/console/"


def test_a_page_form_is_refused_without_its_csrf_token() -> None:
    secret = "s" * 43

    async def endpoint(request: Request) -> Response:
        page = ConsolePage(request, Administrator("sam", "superadmin"), None, secret)  # type: ignore[arg-type]
        try:
            fields = await page.form()
        except ConsoleError as error:
            return PlainTextResponse(error.title, status_code=error.status)
        return PlainTextResponse(",".join(sorted(fields)))

    app = Starlette(routes=[Route("/f", endpoint, methods=["POST"])])
    with TestClient(app) as client:
        assert client.post("/f", data={"a": "1"}).status_code == 403
        assert client.post("/f", data={"a": "1", "csrf": "wrong"}).status_code == 403
        other = csrf_token("t" * 43)
        assert client.post("/f", data={"a": "1", "csrf": other}).status_code == 403
        good = client.post("/f", data={"a": "1", "csrf": csrf_token(secret)})
        assert (good.status_code, good.text) == (200, "a")

"""The console's frame in a real browser (Debian's Chromium) against a real ``gatehouse up``:
signing in with a password and a one-time password checked by the Authentication service,
the overview of every service, the audit log's filters and CSV export, the 403 page of a
role without a permission, signing out; no CSP violation anywhere."""

from __future__ import annotations

import csv
import io
from typing import Any

from tests.console.conftest import ConsoleFactory, ConsoleNode, new_page, screenshot
from tests.support.browser import wait_for_url


def test_sign_in_needs_the_right_code_then_the_overview_shows_every_service(
    console_browser: Any, console_node: ConsoleNode
) -> None:
    node = console_node
    admin = node.first  # the superadmin the "up" block showed, once
    page = new_page(console_browser, node)
    try:
        page.goto(f"{node.url}/")
        assert page.url.startswith(f"{node.url}/login")
        # Keyboard only: the fields in order, Enter submits. A wrong code is refused.
        page.focus("#username")
        page.keyboard.type(admin.name)
        page.keyboard.press("Tab")
        page.keyboard.type(admin.password)
        page.keyboard.press("Tab")
        page.keyboard.type("000000" if admin.code() != "000000" else "111111")
        page.keyboard.press("Enter")
        page.wait_for_selector("#signin-error")
        assert "wrong" in page.inner_text("#signin-error")
        assert "/console/login" in page.url
        cookies = {c["name"]: c for c in page.context.cookies()}
        assert "__Host-gatehouse_console" not in cookies

        page.fill("#password", admin.password)
        page.fill("#otp", admin.code())
        page.click("button[type=submit]")
        wait_for_url(page, f"{node.url}/")
        session = {c["name"]: c for c in page.context.cookies()}["__Host-gatehouse_console"]
        assert session["httpOnly"]
        assert session["secure"]
        assert session["sameSite"] == "Strict"
        assert session["path"] == "/"

        rows = {
            row.query_selector("th").inner_text(): [
                td.inner_text() for td in row.query_selector_all("td")
            ]
            for row in page.query_selector_all("#services tbody tr")
        }
        assert set(rows) == {"ap1", "ps1", "auth1", "dist1"}, rows
        for service_id, cells in rows.items():
            _role, _node, health, version, ack, certificate, _uses = cells
            assert health.startswith("healthy"), (service_id, cells)
            running, slash, published = version.split()[0:3]
            # Running the published version (other test files on this node may publish).
            assert (slash, running) == ("/", published), (service_id, cells)
            assert ack.endswith("ago"), (service_id, cells)
            assert "(in 6d)" in certificate or "(in 7d)" in certificate, (service_id, cells)
        assert rows["ap1"][0] == "access_point"
        assert rows["ap1"][6] == "ps1"  # the Policy service the Access Point uses now
        assert f"{admin.name} (superadmin)" in page.inner_text("header")
        screenshot(page, "console-overview.png")
        assert page.problems == []  # no CSP violation, no script error
    finally:
        page.context.close()


def test_the_audit_log_filters_by_person_and_event_and_exports_csv(
    console: ConsoleFactory, console_node: ConsoleNode
) -> None:
    page = console("auditor", "/audit")
    auditor = console.last
    assert auditor is not None
    # The sign-in is audited under the person's name; filter by them and by the event.
    page.fill("#f-who", auditor.name)
    page.fill("#f-action", "console.sign_in")
    page.click("form.filters button[type=submit]")
    wait_for_url(page, "**/console/audit?*")
    rows = page.query_selector_all("#audit tbody tr")
    assert len(rows) == 1
    cells = [td.inner_text() for td in rows[0].query_selector_all("td")]
    assert cells[1:3] == [auditor.name, "console.sign_in"]
    # Another person's events are not shown for this filter...
    page.fill("#f-who", "admin-token")
    page.fill("#f-action", "admin.add")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("#audit tbody tr")
    made = [r.inner_text() for r in page.query_selector_all("#audit tbody tr")]
    assert any(auditor.name in line and "(break-glass)" in line for line in made), made
    # ...and the CSV export carries what the filter selects.
    with page.expect_download() as download:
        page.click("#export-csv")
    data = download.value.path().read_text(encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(data)))
    assert table
    assert {row["who"] for row in table} == {"admin-token"}
    assert {row["action"] for row in table} == {"admin.add"}
    assert any(auditor.name in row["what"] for row in table)
    assert page.problems == []


def test_a_role_without_the_permission_gets_a_403_naming_it(console: ConsoleFactory) -> None:
    page = console("helpdesk")
    nav = page.inner_text("header nav")
    assert "Audit log" not in nav  # the menu shows what the role may open
    answer = page.goto(page.url.replace("/console/", "/console/audit"))
    assert answer.status == 403
    assert page.inner_text("h1") == "Not allowed"
    assert page.inner_text("code.permission") == "audit.read"
    assert "helpdesk" in page.inner_text("main")
    assert page.problems == []


def test_signing_out_ends_the_session(console: ConsoleFactory, console_node: ConsoleNode) -> None:
    page = console("operator")
    page.click("header button:has-text('Sign out')")
    wait_for_url(page, f"{console_node.url}/login")
    page.goto(f"{console_node.url}/")
    assert "/console/login" in page.url
    assert page.problems == []

"""The console's configuration, users, sessions, tokens and nodes pages in a real browser
(Debian's Chromium) against a real ``gatehouse up``: an invalid rule is shown at its field
path, a resource added in a form is published and every service's acknowledgement appears
live, a rollback, the YAML draft's problems at their lines; a helpdesk user cannot publish,
adds a user, ends the session that user opened at the Access Point, assigns and disables a
token and sends an invitation; a superadmin makes a join token. No CSP violation anywhere.

Screenshots of the publish flow go to $GATEHOUSE_SCREENSHOTS (docs/images) when it is set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.conftest import ConsoleFactory, ConsoleNode, screenshot
from tests.support.browser import wait_for_url

SERVICES = {"ap1", "ps1", "auth1", "dist1"}


@pytest.fixture(scope="module")
def operator(console: ConsoleFactory) -> Any:
    return console("operator", "/config")


@pytest.fixture(scope="module")
def helpdesk(console: ConsoleFactory) -> Any:
    return console("helpdesk", "/users")


@pytest.fixture(scope="module", autouse=True)
def no_page_problems(console: ConsoleFactory) -> Iterator[None]:
    yield
    for page in console.pages:
        assert page.problems == [], page.problems  # no CSP violation, no script error


def wait_for_focus(page: Any, selector: str) -> None:
    """``selector`` gets the focus within 10 s: the browser applies ``autofocus`` when it
    next renders the page, after the load that Playwright waits for (CI once read the active
    element before that)."""
    page.wait_for_function(
        "s => document.activeElement === document.querySelector(s)", arg=selector, timeout=10_000
    )


def summary_links(page: Any) -> list[str]:
    return [a.get_attribute("href") for a in page.query_selector_all(".error-summary a")]


def answered(page: Any) -> None:
    """Wait, without reloading, until every service has acknowledged (console.js polls)."""
    page.locator("#acks-summary", has_text="every service has answered").wait_for(timeout=15_000)


def acks(page: Any) -> dict[str, str]:
    return {
        row.get_attribute("data-service"): row.query_selector_all("td")[3].inner_text()
        for row in page.query_selector_all("#acks tbody tr")
    }


def test_an_invalid_rule_shows_its_field_path_then_publish_shows_every_ack(
    operator: Any, console_node: ConsoleNode
) -> None:
    page, node = operator, console_node
    backend = f"http://127.0.0.1:{node.node.backend_port}"
    page.goto(f"{node.url}/config")
    assert page.locator("h1").inner_text() == "Resources and access rules"
    page.get_by_role("link", name="Add a rule").click()
    page.fill("#field-name", "staff")
    page.fill("#field-condition", "{groups_any: [staff]}")
    page.get_by_role("button", name="Save in the draft").click()
    wait_for_url(page, f"{node.url}/config")
    assert "Rule 'staff' saved in the draft." in page.inner_text(".flash")

    page.get_by_role("link", name="Add a resource").click()
    page.fill("#field-id", "wiki")
    page.fill("#field-path_prefix", "/wiki")
    page.fill("#field-backends", backend)
    page.fill("#field-rule", "{all: [{rule: stafff}]}")
    page.get_by_role("button", name="Save in the draft").click()
    # The error summary has the focus, names the field path and links to the field.
    summary = page.locator(".error-summary")
    assert summary.is_visible()
    wait_for_focus(page, ".error-summary")
    assert "resource_rules.wiki.all[0].rule: unknown rule 'stafff'" in summary.inner_text()
    assert summary_links(page) == ["#field-rule"]
    error = page.locator("#field-rule-error1").inner_text()
    assert "resource_rules.wiki.all[0].rule: unknown rule 'stafff'" in error
    assert page.get_attribute("#field-rule", "aria-invalid") == "true"
    assert page.input_value("#field-backends") == backend  # what was typed stays
    screenshot(page, "console-invalid-rule.png")
    page.click(".error-summary a")
    wait_for_focus(page, "#field-rule")
    page.fill("#field-rule", "{all: [{rule: staff}]}")
    page.get_by_role("button", name="Save in the draft").click()
    # (The browser keeps the #field-rule of the summary's link across the redirect.)
    wait_for_url(page, re.compile(r".*/console/config(#field-rule)?$"))
    assert "Resource 'wiki' added to the draft." in page.inner_text(".flash")

    page.get_by_role("link", name="Changes since the published version").click()
    added = page.locator("pre.diff .diff-add").all_inner_texts()
    assert "+  - rule: staff" in added or any("rule: staff" in line for line in added), added
    assert any(line.strip().startswith("+") and "id: wiki" in line for line in added), added
    screenshot(page, "console-draft-diff.png")

    page.get_by_role("link", name="Publish…").click()
    page.fill("#field-comment", "a wiki for the staff")
    page.get_by_role("button", name="Publish").click()
    wait_for_url(page, re.compile(r".*/console/config/publish/\d+$"))
    version = int(page.url.rsplit("/", 1)[1])
    # Without reloading, every service's acknowledgement appears (console.js polls).
    answered(page)
    assert acks(page) == dict.fromkeys(SERVICES, "applied")
    assert f"{len(SERVICES)} of {len(SERVICES)} applied" in page.inner_text("#acks-summary")
    screenshot(page, "console-publish.png")

    # Roll back to the version before: a new version, acknowledged by every service too.
    page.goto(f"{node.url}/config/versions")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Roll back to {version - 1}").click()
    wait_for_url(page, f"{node.url}/config/publish/{version + 1}")
    assert f"the configuration of version {version - 1}" in page.inner_text("main")
    answered(page)
    assert acks(page) == dict.fromkeys(SERVICES, "applied")


def test_the_yaml_draft_shows_each_problem_at_its_line(
    operator: Any, console_node: ConsoleNode
) -> None:
    page, node = operator, console_node
    page.goto(f"{node.url}/config/draft")
    text = page.input_value("#draft-text")
    broken = text.replace("path_prefix: /public", "path_prefix: public", 1)
    assert broken != text
    page.fill("#draft-text", broken)
    page.get_by_role("button", name="Save the draft").click()
    line = next(i for i, ln in enumerate(broken.splitlines(), 1) if "path_prefix: public" in ln)
    summary = page.locator(".error-summary").inner_text()
    assert re.search(rf"resources\[\d\]\.path_prefix \(line {line}\)", summary), summary
    assert summary_links(page) == ["#draft-text"]
    assert page.input_value("#draft-text") == broken  # nothing lost, nothing saved
    page.goto(f"{node.url}/config/draft")
    assert page.input_value("#draft-text") == text


def test_a_helpdesk_user_cannot_publish(helpdesk: Any, console_node: ConsoleNode) -> None:
    page, node = helpdesk, console_node
    page.goto(f"{node.url}/config")
    assert page.locator("h1").inner_text() == "Resources and access rules"
    assert page.get_by_role("link", name="Publish…").count() == 0
    assert page.get_by_role("link", name="Add a resource").count() == 0
    response = page.goto(f"{node.url}/config/publish")
    assert response.status == 403
    assert "config.publish" in page.inner_text("code.permission")
    page.goto(f"{node.url}/config/versions")
    assert page.get_by_role("button", name=re.compile("Roll back")).count() == 0


def test_helpdesk_adds_a_user_and_ends_the_session_they_open(
    helpdesk: Any, console_node: ConsoleNode, console_browser: Any
) -> None:
    page, node = helpdesk, console_node
    page.goto(f"{node.url}/users")
    page.fill("#field-username", "bad name")
    page.get_by_role("button", name="Add the user").click()
    assert summary_links(page) == ["#field-username"]
    assert "invalid username" in page.inner_text("#field-username-error1")
    page.fill("#field-username", "carol")
    page.fill("#field-email", "carol@example.org")
    page.get_by_role("button", name="Add the user").click()
    password = page.inner_text("#new-password")
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", password)

    # carol signs in at the Access Point: a session the helpdesk then ends.
    user = console_browser.new_context()
    try:
        visit = user.new_page()
        visit.goto(f"http://127.0.0.1:{node.node.port}/hello")
        visit.get_by_label("User name").fill("carol")
        visit.get_by_label("Password").fill(password)
        visit.get_by_role("button", name="Sign in").click()
        wait_for_url(visit, f"http://127.0.0.1:{node.node.port}/hello")
        assert '"remote-user", "carol"' in visit.content().replace("'", '"') or "carol" in (
            visit.inner_text("body")
        )
        page.goto(f"{node.url}/sessions?q=car")
        rows = page.locator("table.sessions tbody tr")
        assert rows.count() == 1
        assert rows.first.locator("td").first.inner_text() == "carol"
        rows.first.get_by_role("button", name="End session").click()
        assert "every Access Point was told" in page.inner_text(".flash")
        assert page.locator("table.sessions tbody tr td.muted").count() == 1
        visit.goto(f"http://127.0.0.1:{node.node.port}/hello")
        assert "/login" in visit.url  # signed out at once
    finally:
        user.close()

    # The user's page: groups, disable and enable, a new password, unlock.
    page.goto(f"{node.url}/groups")
    page.fill("#field-name", "staff")
    page.get_by_role("button", name="Add the group").click()
    page.goto(f"{node.url}/users/carol")
    page.select_option("#add-group", "staff")
    page.get_by_role("button", name="Add", exact=True).click()
    assert "added to group 'staff'" in page.inner_text(".flash")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Disable").click()
    assert "disabled" in page.inner_text("#user-state")
    page.get_by_role("button", name="Enable").click()
    assert "enabled" in page.inner_text("#user-state")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Reset the password").click()
    assert page.inner_text("#new-password") != password
    page.goto(f"{node.url}/users/carol")
    page.get_by_role("button", name="Unlock").click()
    assert "unlocked" in page.inner_text(".flash")


def test_helpdesk_assigns_disables_resyncs_a_token_and_invites(
    helpdesk: Any, console_node: ConsoleNode
) -> None:
    page, node = helpdesk, console_node
    content = f"CT1, {bytes(range(1, 21)).hex()}, hotp\n"
    node.admin_api().call("POST", "/api/v1/tokens/import", {"content": content})
    page.goto(f"{node.url}/tokens")
    page.get_by_role("link", name="CT1").click()
    page.fill("#field-user", "nobody")
    page.get_by_role("button", name="Assign").click()
    assert summary_links(page) == ["#field-user"]
    assert "nobody" in page.inner_text("#field-user-error1")
    page.fill("#field-user", "demo")
    page.get_by_role("button", name="Assign").click()
    assert "assigned to demo" in page.inner_text(".flash")
    page.fill("#field-code1", "123456")
    page.fill("#field-code2", "654321")
    page.get_by_role("button", name="Resynchronise").click()
    assert summary_links(page) == ["#field-code1"]
    assert "not two consecutive codes" in page.inner_text(".error-summary")
    page.goto(f"{node.url}/tokens/CT1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Disable").click()
    assert page.inner_text("#token-state").startswith("disabled")
    page.get_by_role("button", name="Enable").click()
    page.get_by_role("button", name="Unlock").click()
    assert page.inner_text("#token-state").startswith("active")

    page.goto(f"{node.url}/tokens")
    page.fill("#field-user", "demo")
    page.select_option("#field-lifetime", "24h")
    page.get_by_role("button", name="Send the invitation").click()
    assert "Invitation for demo written" in page.inner_text(".flash")
    invited = page.locator("#invitations ~ table tbody tr").first.inner_text()
    assert "demo" in invited


def test_a_superadmin_makes_a_join_token_shown_once(
    console: ConsoleFactory, console_node: ConsoleNode
) -> None:
    node = console_node
    page = console("superadmin", "/nodes")
    names = {r.get_attribute("data-service") for r in page.query_selector_all("tr[data-service]")}
    assert names == SERVICES
    page.fill("#field-service_id", "Not An Id")
    page.get_by_role("button", name="Make a join token").click()
    assert summary_links(page) == ["#field-service_id"]
    page.select_option("#field-role", "policy")
    page.fill("#field-service_id", "ps2")
    page.get_by_role("button", name="Make a join token").click()
    assert re.fullmatch(r"ghj1\.\S+", page.inner_text("#join-token"))
    page.reload()  # a POST answer: the browser would resend the form, so go back instead
    page.goto(f"{node.url}/nodes")
    assert page.locator("#join-token").count() == 0

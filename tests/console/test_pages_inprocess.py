"""The console's configuration, user, token and node pages in-process (the Administration
service's Starlette app with a real store and home, signed in as administrators of each
role): forms become the same service calls as the REST API, errors land at their fields,
and each route needs its permission."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from gatehouse.administration.app import create_app
from gatehouse.administration.console.csrf import FIELD, csrf_token
from gatehouse.administration.console.layout import SESSION_COOKIE
from gatehouse.administration.service import AdministrationService, migrate
from gatehouse.administration.signing import generate_private_key
from gatehouse.administration.store import AdminStore
from gatehouse.administration.tokens_api import HomeTokens
from gatehouse.cli import main
from gatehouse.oath.token_admin import parse_import
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls
from gatehouse.trust.ca import CertificateAuthority
from tests.administration.test_api import as_yaml, single_node

TOKEN = "operator-token-0123456789abcdef"
SEED_HEX = bytes(range(1, 21)).hex()


@dataclass
class Console:
    runner: asyncio.Runner
    client: httpx.AsyncClient
    service: AdministrationService
    home: Path
    secrets: dict[str, str]

    def _headers(self, who: str) -> dict[str, str]:
        self.client.cookies.clear()  # no flash cookie from one test in the next
        return {"cookie": f"{SESSION_COOKIE}={self.secrets[who]}"}

    def get(self, who: str, path: str) -> httpx.Response:
        return self.runner.run(self.client.get(path, headers=self._headers(who)))

    def post(self, who: str, path: str, fields: dict[str, str] | None = None) -> httpx.Response:
        data = {**(fields or {}), FIELD: csrf_token(self.secrets[who])}
        return self.runner.run(self.client.post(path, data=data, headers=self._headers(who)))

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    home = tmp_path_factory.mktemp("console-pages") / "home"
    assert main(["users", "add", "alice", "--home", str(home)]) == 0
    url = database_urls(home).user_db
    ca = CertificateAuthority.create()
    key = generate_private_key()
    holder: dict[str, AdministrationService] = {}

    def make_service() -> AdministrationService:
        holder["service"] = AdministrationService(AdminStore(Database(url)), key, TOKEN, None, ca)
        return holder["service"]

    app = create_app(make_service, tokens=lambda: HomeTokens(home))
    with asyncio.Runner() as runner:
        runner.run(migrate(url))
        stack = AsyncExitStack()
        runner.run(stack.enter_async_context(app.router.lifespan_context(app)))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8001"
        )
        service = holder["service"]
        secrets = {}
        for name, role in (("sam", "superadmin"), ("olga", "operator"), ("hugo", "helpdesk")):
            runner.run(service.admins.add(name, role, "test"))
            secrets[name] = runner.run(service.admins.create_session(name)).secret
        runner.run(service.save_draft(as_yaml(single_node())))
        runner.run(service.publish("first"))
        try:
            yield Console(runner, client, service, home, secrets)
        finally:
            runner.run(client.aclose())
            runner.run(stack.aclose())


def text(response: httpx.Response) -> str:
    """The page's visible words, tags dropped (for asserting what a reader sees)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.text))


def draft(console: Console) -> str:
    return str(console.run(console.service.draft()).text)


# --- configuration ------------------------------------------------------------------------------


def test_an_invalid_resource_shows_its_field_and_saves_nothing(console: Console) -> None:
    before = draft(console)
    fields = {"id": "crm", "path_prefix": "crm", "backends": "ftp://crm", "rule": "{rule: staf}"}
    answer = console.post("olga", "/console/config/resources/new", fields)
    assert answer.status_code == 422
    page = answer.text
    assert 'class="error-summary"' in page
    assert '<a href="#field-backends">' in page
    assert 'id="field-backends"' in page
    assert 'aria-invalid="true"' in page
    assert "resources[2].backends[0]: not a URL: &#39;ftp://crm&#39;" in page
    assert '<a href="#field-path_prefix">' in page
    assert "ftp://crm" in page  # what was typed is kept
    assert draft(console) == before


def test_a_rule_error_is_shown_at_its_field_path(console: Console) -> None:
    fields = {"id": "crm", "path_prefix": "/crm", "backends": "http://127.0.0.1:9001"}
    fields["rule"] = "{ip: [10.0.0.0/33]}"
    answer = console.post("olga", "/console/config/resources/new", fields)
    assert answer.status_code == 422
    assert '<a href="#field-rule">' in answer.text
    assert "resource_rules.crm.ip[0]: not an IP network" in text(answer)
    answer = console.post(
        "olga", "/console/config/rules/new", {"name": "staff", "condition": "{groups_anyy: [x]}"}
    )
    assert answer.status_code == 422
    assert '<a href="#field-condition">' in answer.text
    assert "rules.staff.groups_anyy: unknown condition" in text(answer)


def test_a_resource_and_a_rule_saved_in_the_draft_show_in_the_diff(console: Console) -> None:
    answer = console.post(
        "olga", "/console/config/rules/new", {"name": "staff", "condition": "{groups_any: [staff]}"}
    )
    assert answer.status_code == 303, answer.text
    fields = {
        "id": "crm",
        "path_prefix": "/crm",
        "backends": "http://127.0.0.1:9001",
        "rule": "{rule: staff}",
    }
    answer = console.post("olga", "/console/config/resources/new", fields)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/config"
    assert "- id: crm" in draft(console)
    diff = console.get("olga", "/console/config/diff")
    assert '<span class="diff-add">+    rule: staff</span>' in diff.text
    home = console.get("olga", "/console/config")
    assert "The draft differs from what is published" in text(home)
    assert 'href="/console/config/publish"' in home.text
    # The audit names the person.
    entries = console.run(console.service.audit(5, None))
    assert any(e.who == "olga" and e.action.startswith("draft") for e in entries), entries


def test_the_yaml_editor_shows_problems_with_their_line(console: Console) -> None:
    if "- id: crm" not in draft(console):  # run alone, not after the test above
        fields = {"id": "crm", "path_prefix": "/crm", "backends": "http://127.0.0.1:9001"}
        assert console.post("olga", "/console/config/resources/new", fields).status_code == 303
    text_ = draft(console).replace("http://127.0.0.1:9001", "nope")
    answer = console.post("olga", "/console/config/draft", {"text": text_})
    assert answer.status_code == 422
    line = next(i for i, ln in enumerate(text_.splitlines(), 1) if "- nope" in ln)
    assert f"(line {line})" in answer.text
    assert "resources[2].backends[0]" in answer.text


def test_publish_then_the_acknowledgements_and_rollback(console: Console) -> None:
    fields = {"id": "wiki", "path_prefix": "/wiki", "backends": "http://127.0.0.1:9002"}
    assert console.post("olga", "/console/config/resources/new", fields).status_code == 303
    answer = console.post("olga", "/console/config/publish", {"comment": "wiki"})
    assert answer.status_code == 303, answer.text
    number = console.service.latest.number  # type: ignore[union-attr]
    assert answer.headers["location"] == f"/console/config/publish/{number}"
    status = console.get("olga", f"/console/config/publish/{number}/status.json").json()
    assert status["version"] == number
    assert [s["id"] for s in status["services"]] == ["ap1", "ps1", "auth1"]
    assert {s["state"] for s in status["services"]} == {"not_enrolled"}
    page = console.get("olga", f"/console/config/publish/{number}")
    assert "0 of 3 applied — every enrolled service has answered" in text(page)
    versions = console.get("olga", "/console/config/versions")
    assert f"/console/config/versions/{number - 1}/rollback" in versions.text
    answer = console.post("olga", f"/console/config/versions/{number - 1}/rollback", {})
    assert answer.status_code == 303
    assert console.service.latest.number == number + 1  # type: ignore[union-attr]
    assert console.run(console.service.version(number + 1)).rollback_of == number - 1


def test_a_helpdesk_user_cannot_publish(console: Console) -> None:
    home = console.get("hugo", "/console/config")
    assert home.status_code == 200
    assert 'href="/console/config/publish"' not in home.text
    assert "/resources/new" not in home.text
    before = console.service.latest.number  # type: ignore[union-attr]
    for answer in (
        console.get("hugo", "/console/config/publish"),
        console.post("hugo", "/console/config/publish", {"comment": "sneaky"}),
        console.post("hugo", "/console/config/versions/1/rollback", {}),
        console.post("hugo", "/console/config/draft", {"text": "services: []"}),
    ):
        assert answer.status_code == 403
        assert "config." in answer.text
    assert console.service.latest.number == before  # type: ignore[union-attr]


# --- users, tokens, nodes -----------------------------------------------------------------------


def test_users_added_disabled_reset_and_their_errors(console: Console) -> None:
    answer = console.post("hugo", "/console/users", {"username": "bad name"})
    assert answer.status_code == 422
    assert '<a href="#field-username">' in answer.text
    answer = console.post("hugo", "/console/users", {"username": "bob", "email": "x@"})
    assert '<a href="#field-email">' in answer.text
    answer = console.post("hugo", "/console/users", {"username": "bob", "email": "bob@example.org"})
    assert answer.status_code == 200
    password = re.search(r'id="new-password"[^>]*>([^<]+)<', answer.text)
    assert password
    assert len(password.group(1)) == 24
    assert answer.headers["cache-control"] == "no-store"
    assert console.post("hugo", "/console/groups", {"name": "staff"}).status_code == 303
    answer = console.post("hugo", "/console/users/bob/groups/add", {"group": "staff"})
    assert answer.status_code == 303
    answer = console.post("hugo", "/console/users/bob/disable")
    assert answer.status_code == 303
    page = console.get("hugo", "/console/users/bob")
    assert "disabled" in page.text
    assert "staff" in page.text
    answer = console.post("hugo", "/console/users/bob/password")
    assert re.search(r'id="new-password"[^>]*>[A-Za-z0-9_-]{24}<', answer.text)
    assert console.post("hugo", "/console/users/bob/unlock").status_code == 303
    listing = console.get("hugo", "/console/users?q=bo")
    assert "/console/users/bob" in listing.text
    assert "/console/users/alice" not in listing.text
    assert console.get("olga", "/console/users").status_code == 403


def test_tokens_assigned_disabled_resynced_and_invitations(console: Console) -> None:
    body = {"content": f"T1, {SEED_HEX}, hotp\n"}
    backend = HomeTokens(console.home)
    try:
        tokens = console.run(backend.admin())
        parsed = parse_import(body["content"].encode(), "csv", None)
        console.run(tokens.import_tokens(parsed, None, "t"))
    finally:
        console.run(backend.close())
    page = console.get("hugo", "/console/tokens")
    assert "/console/tokens/T1" in page.text
    answer = console.post("hugo", "/console/tokens/T1/assign", {"user": "nobody"})
    assert answer.status_code == 422
    assert '<a href="#field-user">' in answer.text
    assert "nobody" in answer.text
    assert console.post("hugo", "/console/tokens/T1/assign", {"user": "alice"}).status_code == 303
    answer = console.post("hugo", "/console/tokens/T1/resync", {"code1": "1", "code2": "2"})
    assert answer.status_code == 422
    assert '<a href="#field-code1">' in answer.text
    assert console.post("hugo", "/console/tokens/T1/disable").status_code == 303
    page = console.get("hugo", "/console/tokens/T1")
    assert 'id="token-state">disabled' in page.text
    assert console.post("hugo", "/console/tokens/T1/enable").status_code == 303
    assert console.post("hugo", "/console/tokens/T1/unlock").status_code == 303
    # alice has no e-mail address: said at the user field.
    answer = console.post(
        "hugo", "/console/tokens/invitations", {"user": "alice", "lifetime": "72h"}
    )
    assert answer.status_code == 422
    assert "no e-mail address" in answer.text
    answer = console.post("hugo", "/console/tokens/invitations", {"user": "bob", "lifetime": "72h"})
    assert answer.status_code == 303, answer.text
    page = console.get("hugo", "/console/tokens?user=bob")
    assert "b***@example.org" in page.text or "@example.org" in page.text


def test_join_tokens_are_shown_once_and_nodes_need_their_permission(console: Console) -> None:
    answer = console.post(
        "sam", "/console/nodes/join-tokens", {"role": "policy", "service_id": "Bad Id"}
    )
    assert answer.status_code == 422
    assert '<a href="#field-service_id">' in answer.text
    answer = console.post(
        "sam", "/console/nodes/join-tokens", {"role": "policy", "service_id": "ps2", "ttl": "1h"}
    )
    assert answer.status_code == 200
    token = re.search(r'id="join-token"[^>]*>(ghj1\.[^<]+)<', answer.text)
    assert token, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert console.get("olga", "/console/nodes").status_code == 200
    refused = console.post(
        "olga", "/console/nodes/join-tokens", {"role": "policy", "service_id": "ps3"}
    )
    assert refused.status_code == 403
    assert console.get("hugo", "/console/nodes").status_code == 403


def test_sessions_are_read_from_the_session_db_when_no_policy_service_answers(
    console: Console,
) -> None:
    page = console.get("hugo", "/console/sessions?q=alice")
    assert page.status_code == 200
    assert "0 of 0 live sessions (from the session database)" in text(page)
    answer = console.post("hugo", "/console/sessions/not-a-hash/revoke", {"next": "//evil"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sessions"  # never another site
    assert "Nothing changed" in urllib.parse.unquote(answer.cookies["gatehouse_console_flash"])
    entries = console.run(console.service.audit(20, None))
    assert not [e for e in entries if e.action == "session.revoke"]
    assert console.get("olga", "/console/sessions").status_code == 403


def test_helpdesk_cannot_take_over_an_administrators_sign_in(console: Console) -> None:
    """Resetting an administrator's password or giving them a token whose seed one knows
    would be a way in: those need admins.write (a superadmin)."""
    for path, fields in (
        ("/console/users/sam/password", {}),
        ("/console/users/sam/disable", {}),
        ("/console/users/olga/groups/add", {"group": "staff"}),
        ("/console/tokens/T1/assign", {"user": "sam"}),
    ):
        answer = console.post("hugo", path, fields)
        assert answer.status_code == 403, (path, answer.text)
        assert "admins.write" in answer.text
    # Unlocking is no way in: allowed.
    assert console.post("hugo", "/console/users/sam/unlock").status_code == 303

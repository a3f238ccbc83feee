"""Named administrators over the admin API, in-process: the one-time bootstrap, personal
tokens (shown once, stored as hashes, listed, expiring, revoked), each route's permission,
the last superadmin kept, and every audit event naming the person."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gatehouse.administration.tables import AuditRow, PersonalTokenRow
from gatehouse.storage.types import utcnow
from tests.administration.test_api import as_yaml, single_node
from tests.console.support import TOKEN, Console, console_app


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    with console_app(tmp_path) as made:
        yield made


def call(
    console: Console, method: str, path: str, token: str = TOKEN, body: Any = None
) -> tuple[int, Any]:
    answer = console.client.request(method, path, headers=console.bearer(token), json=body)
    return answer.status_code, answer.json()


def token_for(console: Console, name: str, ttl: float = 3600) -> str:
    status, answer = call(console, "POST", f"/api/v1/admins/{name}/tokens", body={"ttl": ttl})
    assert status == 200, answer
    secret: str = answer["secret"]
    return secret


def audit(console: Console) -> list[tuple[str, str]]:
    async def rows() -> list[tuple[str, str]]:
        async with console.service.store.db.session() as session:
            found = await session.execute(select(AuditRow.who, AuditRow.action))
            return [(who, action) for who, action in found]

    return console.client.portal.call(rows)  # type: ignore[union-attr]


def test_the_bootstrap_makes_the_first_superadmin_once(console: Console) -> None:
    status, answer = call(console, "POST", "/api/v1/admins/bootstrap", body={"name": "root"})
    assert status == 200, answer
    assert (answer["name"], answer["role"], answer["created_by"]) == (
        "root",
        "superadmin",
        "admin-token",
    )
    creds = answer["credentials"]
    assert len(creds["password"]) >= 20
    assert creds["otpauth_uri"].startswith("otpauth://totp/Gatehouse:root?secret=")
    assert creds["otp_secret"] in creds["otpauth_uri"]
    status, again = call(console, "POST", "/api/v1/admins/bootstrap", body={"name": "other"})
    assert status == 409
    assert "bootstrap is done" in again["message"]
    # The bootstrap is the break-glass identity's: a superadmin's personal token cannot.
    root = token_for(console, "root")
    assert call(console, "POST", "/api/v1/admins/bootstrap", root, {"name": "x"})[0] == 403
    assert ("admin-token", "admin.bootstrap") in audit(console)


def test_personal_tokens_are_shown_once_stored_hashed_listed_expire_and_are_revoked(
    console: Console,
) -> None:
    console.make_admin("olga", "operator")
    secret = token_for(console, "olga", ttl=600)
    assert secret.startswith("gha1_")
    status, me = call(console, "GET", "/api/v1/me", secret)
    assert (status, me["name"], me["role"], me["via"]) == (200, "olga", "operator", "token")
    assert "config.publish" in me["permissions"]
    assert "admins.write" not in me["permissions"]

    async def stored() -> list[PersonalTokenRow]:
        async with console.service.store.db.session() as session:
            return list((await session.execute(select(PersonalTokenRow))).scalars())

    (row,) = console.client.portal.call(stored)  # type: ignore[union-attr]
    assert secret not in repr(vars(row))
    assert row.hash != secret
    assert len(row.hash) == 64

    status, listed = call(console, "GET", "/api/v1/me/tokens", secret)
    assert status == 200
    assert [(t["id"], t["state"]) for t in listed] == [(row.id, "active")]
    assert "secret" not in listed[0]
    assert secret not in str(listed)

    # Expiry: ten minutes later it is refused.
    later = utcnow() + timedelta(minutes=11)
    console.service.admins.clock = lambda: later
    assert call(console, "GET", "/api/v1/me", secret)[0] == 401
    console.service.admins.clock = utcnow

    # Revoked by its owner: refused at once.
    status, _ = call(console, "POST", f"/api/v1/me/tokens/{row.id}/revoke", secret)
    assert status == 200
    status, refused = call(console, "GET", "/api/v1/me", secret)
    assert status == 401
    assert "personal token" in refused["message"]
    status, everyone = call(console, "GET", "/api/v1/admins/tokens")
    assert [t["state"] for t in everyone] == ["revoked"]
    assert call(console, "GET", "/api/v1/me", "gha1_abcdefghijkl_" + "A" * 43)[0] == 401


def test_each_role_gets_only_its_routes_and_the_refusal_names_the_permission(
    console: Console,
) -> None:
    tokens = {}
    for name, role in (("olga", "operator"), ("hugo", "helpdesk"), ("aude", "auditor")):
        console.make_admin(name, role)
        tokens[role] = token_for(console, name)
    draft = {"text": as_yaml(single_node())}
    assert call(console, "PUT", "/api/v1/draft", tokens["operator"], draft)[0] == 200
    status, refused = call(console, "POST", "/api/v1/publish", tokens["helpdesk"], {})
    assert status == 403
    assert "config.publish" in refused["message"]
    assert "hugo (helpdesk)" in refused["message"]
    assert call(console, "PUT", "/api/v1/draft", tokens["auditor"], draft)[0] == 403
    assert call(console, "GET", "/api/v1/draft", tokens["auditor"])[0] == 200
    assert call(console, "GET", "/api/v1/audit", tokens["auditor"])[0] == 200
    assert call(console, "GET", "/api/v1/audit", tokens["helpdesk"])[0] == 403
    status, refused = call(
        console, "POST", "/api/v1/admins", tokens["operator"], {"name": "eve", "role": "superadmin"}
    )
    assert (status, "admins.write" in refused["message"]) == (403, True)
    assert call(console, "POST", "/api/v1/publish", tokens["operator"], {})[0] == 200
    assert call(console, "GET", "/api/v1/services", tokens["helpdesk"])[0] == 403


def test_every_audit_event_names_the_person_and_the_break_glass_token_says_so(
    console: Console,
) -> None:
    console.make_admin("olga", "operator")
    olga = token_for(console, "olga")
    config = single_node()
    assert call(console, "PUT", "/api/v1/draft", olga, {"text": as_yaml(config)})[0] == 200
    assert call(console, "POST", "/api/v1/publish", olga, {"comment": "first"})[0] == 200
    config["global_rule"] = "authenticated"
    assert call(console, "PUT", "/api/v1/draft", body={"text": as_yaml(config)})[0] == 200
    _, draft = call(console, "GET", "/api/v1/draft", olga)
    assert draft["updated_by"] == "admin-token"
    _, versions = call(console, "GET", "/api/v1/versions", olga)
    assert [v["created_by"] for v in versions] == ["olga"]
    events = audit(console)
    assert ("olga", "version.publish") in events
    assert ("olga", "draft.save") in events
    assert ("admin-token", "draft.save") in events
    assert ("admin-token", "admin.token_create") in events


def test_the_last_superadmin_stays_and_removal_revokes_tokens(console: Console) -> None:
    console.make_admin("root", "superadmin")
    assert call(console, "DELETE", "/api/v1/admins/root")[0] == 409
    status, refused = call(console, "PUT", "/api/v1/admins/root/role", body={"role": "auditor"})
    assert status == 409
    assert "last superadmin" in refused["message"]
    assert call(console, "PUT", "/api/v1/admins/root/role", body={"role": "king"})[0] == 400
    console.make_admin("sam", "superadmin")
    sam = token_for(console, "sam")
    assert call(console, "DELETE", "/api/v1/admins/root", sam)[0] == 200
    status, listed = call(console, "GET", "/api/v1/admins", sam)
    assert [a["name"] for a in listed] == ["sam"]
    console.make_admin("olga", "operator")
    olga = token_for(console, "olga")
    assert call(console, "DELETE", "/api/v1/admins/olga", sam)[0] == 200
    assert call(console, "GET", "/api/v1/me", olga)[0] == 401
    assert ("sam", "admin.remove") in audit(console)


def test_the_break_glass_token_has_no_personal_tokens(console: Console) -> None:
    status, refused = call(console, "POST", "/api/v1/me/tokens", body={})
    assert status == 400
    assert "--for NAME" in refused["message"]
    status, me = call(console, "GET", "/api/v1/me")
    assert (me["name"], me["via"]) == ("admin-token", "break-glass")
    assert call(console, "POST", "/api/v1/admins/nobody/tokens", body={})[0] == 404
    assert call(console, "POST", "/api/v1/admins/x/tokens", body={"ttl": "10s"})[0] == 400


def test_helpdesk_cannot_change_an_administrators_tokens(console: Console) -> None:
    """Tokens of a user who is an administrator need admins.write: otherwise helpdesk could
    give a superadmin's account a token whose seed it knows (or take the real one away)."""
    from gatehouse.storage import directory
    from gatehouse.storage.engine import Database
    from gatehouse.storage.home import database_urls
    from gatehouse.storage.migrate import upgrade

    async def add_users() -> None:
        url = database_urls(console.home).user_db
        await upgrade(url, "user")
        db = Database(url)
        try:
            async with db.session() as session:
                for name in ("sam", "carl"):
                    await directory.add_user(session, name, None)
        finally:
            await db.dispose()

    console.client.portal.call(add_users)  # type: ignore[union-attr]
    console.make_admin("sam", "superadmin")
    console.make_admin("hugo", "helpdesk")
    helpdesk = token_for(console, "hugo")
    seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    status, refused = call(
        console, "POST", "/api/v1/tokens", helpdesk, {"user": "sam", "secret": seed}
    )
    assert status == 403, refused
    assert "admins.write" in refused["message"]
    assert "sam is an administrator (superadmin)" in refused["message"]
    # An ordinary user's token: allowed; moving it to the administrator: refused.
    status, added = call(console, "POST", "/api/v1/tokens", helpdesk, {"user": "carl"})
    assert status == 200, added
    serial = added["token"]["serial"]
    path = f"/api/v1/tokens/{serial}"
    assert call(console, "POST", f"{path}/unassign", helpdesk)[0] == 200
    assert call(console, "POST", f"{path}/assign", helpdesk, {"user": "sam"})[0] == 403
    assert call(console, "POST", f"{path}/assign", TOKEN, {"user": "sam"})[0] == 200
    # Now the superadmin's: helpdesk may unlock it, not disable, unassign or delete it.
    assert call(console, "POST", f"{path}/unlock", helpdesk)[0] == 200
    for action in ("disable", "unassign"):
        assert call(console, "POST", f"{path}/{action}", helpdesk)[0] == 403
    assert console.client.delete(path, headers=console.bearer(helpdesk)).status_code == 403
    status, invited = call(console, "POST", "/api/v1/token-invitations", helpdesk, {"user": "sam"})
    assert status == 403, invited

"""The Administration service's token invitation routes, in-process (its Starlette app with a
real store and home): invite, list, revoke; the admin token required; audited in both logs;
no answer carries the link or its secret (it is only in the OATH DB, sealed, until sent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.cli import main
from gatehouse.oath.invitations import InvitationStore, sealing_aad
from gatehouse.oath.seeds import KEYRING_FILE, Keyring
from gatehouse.storage.engine import create_engine
from gatehouse.storage.home import database_urls
from tests.administration.test_tokens_api import Client, run, user_db_audit


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    home = tmp_path / "home"
    assert main(["users", "add", "alice", "--email", "alice@example.org", "--home", str(home)]) == 0
    assert main(["users", "add", "bob", "--home", str(home)]) == 0
    capsys.readouterr()
    return home


async def sealed_secret(home: Path, invitation_id: str) -> str:
    engine = create_engine(database_urls(home).oath_db)
    try:
        row = await InvitationStore(engine).get(invitation_id)
    finally:
        await engine.dispose()
    assert row is not None
    assert row.key_id is not None
    assert row.sealed is not None
    ring = Keyring.load(home / KEYRING_FILE)
    return ring.decrypt(row.key_id, row.sealed, sealing_aad(row.id)).decode()


def test_the_operator_invites_lists_and_revokes(home: Path) -> None:
    async def body(client: Client) -> None:
        path = "/api/v1/token-invitations"
        status, _ = await client("POST", path, {"user": "alice"}, token=None)
        assert status == 401
        invited = await client.ok("POST", path, {"user": "alice", "lifetime": "2h"})
        assert invited["user"] == "alice"
        assert invited["to"] == "a***@example.org"
        assert invited["state"] == "unsent"
        assert invited["sent_at"] is None
        secret = await sealed_secret(home, invited["id"])
        assert all(secret.encode() not in answer for answer in client.answers)
        listed = await client.ok("GET", f"{path}?user=alice")
        assert [row["id"] for row in listed] == [invited["id"]]
        assert await client.ok("GET", f"{path}?user=bob") == []
        revoked = await client.ok("POST", f"{path}/{invited['id']}/revoke")
        assert revoked["state"] == "revoked"
        status, answer = await client("POST", f"{path}/{invited['id']}/revoke")
        assert (status, answer["message"]) == (400, f"invitation {invited['id']} is revoked")
        audit = await client.ok("GET", "/api/v1/audit?limit=10")
        assert [entry["action"] for entry in audit[:2]] == [
            "token.revoke_invitation",
            "token.invite",
        ]
        events = [
            (event, user, detail.get("by")) for event, user, detail in await user_db_audit(home)
        ]
        assert ("token_invitation_created", "alice", "admin-api") in events
        assert ("token_invitation_revoked", "alice", "admin-api") in events

    run(home, body)


def test_invitation_errors_name_what_is_wrong(home: Path) -> None:
    async def body(client: Client) -> None:
        path = "/api/v1/token-invitations"
        for payload, status, message in (
            ({"user": "carol"}, 404, "user 'carol' does not exist"),
            ({"user": "bob"}, 400, "user 'bob' has no e-mail address"),
            ({"user": "alice", "lifetime": "1m"}, 400, "lifetime: between 5 minutes"),
            ({"user": "alice", "lifetime": "soon"}, 400, "lifetime"),
            ({"user": "no such/name"}, 400, "user:"),
        ):
            got, answer = await client("POST", path, payload)
            assert got == status, (payload, answer)
            assert message in answer["message"], (payload, answer)
        got, answer = await client("POST", f"{path}/0123abcd/revoke")
        assert (got, answer["message"]) == (404, "no invitation has id '0123abcd'")
        assert await client.ok("GET", path) == []

    run(home, body)


def test_an_invitation_through_the_api_is_sealed_until_sent(home: Path) -> None:
    async def body(client: Client) -> str:
        invited = await client.ok("POST", "/api/v1/token-invitations", {"user": "alice"})
        return await sealed_secret(home, invited["id"])

    secret = run(home, body)
    data = b"".join(path.read_bytes() for path in home.glob("*.db*"))
    assert secret.encode() not in data

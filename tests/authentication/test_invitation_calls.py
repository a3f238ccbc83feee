"""The token invitation calls: wire formats both ways from one declaration each, and an
in-process Authentication service (ASGI, no sockets, SQLite) answering them: what a link is,
enrolment for the invited user only (even with self-enrolment off), and single use."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatehouse.authentication.invitation_calls import (
    INVITATION_CHECK,
    INVITATION_CONFIRM,
    INVITATION_ENROL,
    InvitationAnswer,
    InvitationCheck,
    InvitationConfirm,
    InvitationEnrol,
    InvitationEnrolAnswer,
    InvitationRequest,
)
from gatehouse.authentication.invitations import InvitationCalls
from gatehouse.internal.calls import Call
from gatehouse.internal.errors import ServiceError
from gatehouse.oath.invitation_admin import InvitationAdmin
from gatehouse.oath.invitations import InvitationStore, new_secret, sealing_aad
from gatehouse.oath.otp import totp
from tests.authentication.test_otp_support import App, running

IP = "192.0.2.9"
SECRET = new_secret()


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (INVITATION_CHECK, InvitationRequest(SECRET)),
        (INVITATION_ENROL, InvitationEnrol(SECRET, "alice", "Example Corp")),
        (
            INVITATION_CONFIRM,
            InvitationConfirm(SECRET, "alice", "TOTP1", "123456", IP, "attempt-0000000001"),
        ),
    ],
)
def test_requests_round_trip(call: Call[Any, Any], value: object) -> None:
    assert call.request.decode(call.request.encode(value)) == value
    assert SECRET not in repr(value)  # never in a log line


@pytest.mark.parametrize(
    ("call", "value"),
    [
        (INVITATION_CHECK, InvitationCheck("unknown")),
        (INVITATION_CHECK, InvitationCheck("valid", "alice", datetime(2030, 1, 2, tzinfo=UTC))),
        (INVITATION_ENROL, InvitationEnrolAnswer("ok", "TOTP1", "otpauth://totp/x", "AAAA")),
        (INVITATION_ENROL, InvitationEnrolAnswer("foreign")),
        (INVITATION_CONFIRM, InvitationAnswer("ok", "TOTP1")),
        (INVITATION_CONFIRM, InvitationAnswer("locked", retry_after=30.0)),
        (INVITATION_CONFIRM, InvitationAnswer("used")),
    ],
)
def test_answers_round_trip(call: Call[Any, Any], value: object) -> None:
    assert call.answer.decode(call.answer.encode(value)) == value


def test_a_malformed_secret_is_an_unknown_link_not_an_error() -> None:
    body = orjson.dumps({"invitation": "x" * 500})
    assert INVITATION_CHECK.request.decode(body).invitation == "x" * 64
    with pytest.raises(ServiceError, match="invitation: missing"):
        INVITATION_CHECK.request.decode(b"{}")


class Invited:
    """An in-process service, its OATH DB's invitations, and a link made for alice."""

    def __init__(self, app: App, secret: str, invitation_id: str) -> None:
        self.app = app
        self.secret = secret
        self.id = invitation_id

    async def call(self, call: Call[Any, Any], **body: Any) -> Any:
        status, answer = await self.app.call(call, {"invitation": self.secret, **body})
        assert status == 200, answer
        return answer


async def invite(app: App, lifetime: float = 3600.0) -> Invited:
    service = app.service
    assert service.oath_db is not None
    assert service.otp is not None
    store = InvitationStore(service.oath_db.engine)

    async def contact(username: str) -> tuple[bool, str | None]:
        return True, f"{username}@example.org"

    async def record(event: str, username: str | None, detail: dict[str, object]) -> None:
        return None

    keyring = service.otp.keys.get()
    admin = InvitationAdmin(store, keyring, contact, record, app.clock)
    row = await admin.invite("alice", lifetime)
    assert row.key_id is not None
    assert row.sealed is not None
    secret = keyring.decrypt(row.key_id, row.sealed, sealing_aad(row.id)).decode()
    # The calls see the test's clock too.
    service._invitation_calls = InvitationCalls(service, app.clock)  # type: ignore[attr-defined]
    return Invited(app, secret, row.id)


def run(tmp: Path, body: Any, **settings: Any) -> None:
    async def go() -> None:
        async with running(tmp, **settings) as app:
            await body(app)

    asyncio.run(go())


def test_check_enrol_confirm_once(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        link = await invite(app)
        check = await link.call(INVITATION_CHECK)
        assert check["state"] == "valid"
        assert check["username"] == "alice"
        assert datetime.fromisoformat(check["expires_at"]).timestamp() == app.clock.now + 3600
        unknown = await link.app.call(INVITATION_CHECK, {"invitation": new_secret()})
        assert unknown == (200, {"state": "unknown", "username": None, "expires_at": None})
        # Another user is refused by the service itself, whatever the portal checked.
        assert await link.call(INVITATION_ENROL, username="bob", issuer="X") == {
            "result": "foreign"
        }
        enrolled = await link.call(INVITATION_ENROL, username="alice", issuer="Example")
        assert enrolled["result"] == "ok"
        seed = base64.b32decode(enrolled["secret"] + "=" * (-len(enrolled["secret"]) % 8))
        serial = enrolled["serial"]
        token = await app.store.get(serial)
        assert (token.owner, token.state, token.description) == ("alice", "pending", "invited")

        def confirm(code: str, attempt: str, username: str = "alice") -> Any:
            return link.call(
                INVITATION_CONFIRM,
                username=username,
                serial=serial,
                code=code,
                client_ip=IP,
                attempt=attempt,
            )

        good = totp(seed, app.clock.now, 30, 6, "sha1")
        assert await confirm(good, "attempt-bob-000001", "bob") == {"result": "foreign"}
        wrong = "000000" if good != "000000" else "111111"
        assert await confirm(wrong, "attempt-alice-00001") == {"result": "invalid"}
        assert (await link.call(INVITATION_CHECK))["state"] == "valid"
        assert await confirm(good, "attempt-alice-00002") == {"result": "ok", "serial": serial}
        assert (await app.store.get(serial)).state == "active"
        # A retry of that submission (its answer lost): ok again; any other: used.
        assert await confirm(good, "attempt-alice-00002") == {"result": "ok", "serial": serial}
        assert await confirm(good, "attempt-alice-00003") == {"result": "used"}
        assert await link.call(INVITATION_ENROL, username="alice", issuer="X") == {"result": "used"}
        assert (await link.call(INVITATION_CHECK))["state"] == "used"
        events = [event for event, user, _ in await app.events() if user == "alice"]
        assert events.count("token_invitation_used") == 1

    run(tmp_path, body, otp={"self_enrolment": False})


def test_an_expired_link(tmp_path: Path) -> None:
    async def body(app: App) -> None:
        link = await invite(app, lifetime=300)
        app.clock.now += 301
        assert (await link.call(INVITATION_CHECK))["state"] == "expired"
        assert await link.call(INVITATION_ENROL, username="alice", issuer="X") == {
            "result": "expired"
        }

    run(tmp_path, body)

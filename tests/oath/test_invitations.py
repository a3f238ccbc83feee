"""Token invitations in the OATH DB (gatehouse.oath.invitations, invitation_admin) and the
Authentication service's sender (gatehouse.authentication.invitations), on real SQLite and
PostgreSQL databases; the Distribution service is played by a recorder of what was submitted."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from gatehouse.authentication.code_checks import DistributionRefused
from gatehouse.authentication.invitations import REFUSED_RETRY, InvitationSender, message_key
from gatehouse.distribution.calls import SubmitAnswer, SubmitRequest, parse_submit, render_submit
from gatehouse.oath.invitation_admin import InvitationAdmin, InvitationError
from gatehouse.oath.invitations import (
    SECRET_LENGTH,
    InvitationRow,
    InvitationStore,
    link,
    new_secret,
    sealing_aad,
    secret_hash,
)
from gatehouse.oath.seeds import Keyring
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]

T = TypeVar("T")
START = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
USERS = {"alice": "alice@example.org", "bob": None, "eve": "eve@example.org"}


class Clock:
    def __init__(self) -> None:
        self.now = START.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """Distribution as the sender sees it: SUBMIT, idempotent by key, through the wire codec."""

    def __init__(self, fail: int = 0, refuse: int = 0) -> None:
        self.requests: list[SubmitRequest] = []
        self.fail = fail
        self.refuse = refuse
        self.ids: dict[str, str] = {}

    async def submit(self, request: SubmitRequest) -> SubmitAnswer:
        checked = parse_submit(render_submit(request))  # the service's own checks
        if self.fail:
            self.fail -= 1
            raise ConnectionError("distribution unavailable")
        if self.refuse:
            self.refuse -= 1
            raise DistributionRefused("email: the domain after '@' is not a host name")
        self.requests.append(checked)
        message_id = self.ids.setdefault(checked.key, f"msg{len(self.ids):019d}")
        return SubmitAnswer(message_id, "accepted")


@pytest.fixture(params=["sqlite", "postgresql"])
def oath_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    asyncio.run(upgrade(url, "oath"))
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}"
    asyncio.run(upgrade(url, "oath"))
    return url


class Setup:
    def __init__(self, store: InvitationStore, keyring: Keyring, clock: Clock) -> None:
        self.store = store
        self.keyring = keyring
        self.clock = clock
        self.audit: list[tuple[str, str | None, dict[str, object]]] = []

        async def contact(username: str) -> tuple[bool, str | None]:
            return (username in USERS, USERS.get(username))

        async def record(event: str, username: str | None, detail: dict[str, object]) -> None:
            self.audit.append((event, username, detail))

        self.admin = InvitationAdmin(store, keyring, contact, record, clock)

    def sender(self) -> InvitationSender:
        return InvitationSender(self.store, lambda: self.keyring, self.clock)

    def secret_of(self, row: InvitationRow) -> str:
        """The link's secret, opened as the sender opens it (only while the row is unsent)."""
        assert row.key_id is not None
        assert row.sealed is not None
        return self.keyring.decrypt(row.key_id, row.sealed, sealing_aad(row.id)).decode()


def run(url: str, tmp_path: Path, body: Callable[[Setup], Awaitable[T]]) -> T:
    async def go() -> T:
        db = Database(url)
        try:
            keyring = Keyring.load_or_create(tmp_path / "oath-seeds.key")
            return await body(Setup(InvitationStore(db.engine), keyring, Clock()))
        finally:
            await db.dispose()

    return asyncio.run(go())


def now_of(setup: Setup) -> datetime:
    return datetime.fromtimestamp(setup.clock(), UTC)


# --- pure pieces ---------------------------------------------------------------------------


def test_secrets_and_their_hash() -> None:
    secret = new_secret()
    assert len(secret) == SECRET_LENGTH
    raw = base64.urlsafe_b64decode(secret + "=")
    assert len(raw) == 32
    assert secret_hash(secret) == hashlib.sha256(raw).digest()
    assert new_secret() != secret
    for bad in ("", "x" * 42, "x" * 44, secret[:-1] + "!", secret[:-1] + "=", "é" * 43):
        assert secret_hash(bad) is None, bad
    # The same 32 bytes written with other (padding) bits in the last character: no link.
    zeros = base64.urlsafe_b64encode(bytes(32)).rstrip(b"=").decode()
    assert secret_hash(zeros) == hashlib.sha256(bytes(32)).digest()
    assert secret_hash(zeros[:-1] + "B") is None


def test_link() -> None:
    assert (
        link("http://127.0.0.1:8080/", "/_gatehouse/", "abc-_")
        == "http://127.0.0.1:8080/_gatehouse/enrol/invite?t=abc-_"
    )
    assert link("https://gate.example.org", "/auth", "s") == (
        "https://gate.example.org/auth/enrol/invite?t=s"
    )


# --- inviting ------------------------------------------------------------------------------


def test_invite_stores_only_the_hash_and_the_sealed_secret(tmp_path: Path) -> None:
    db_file = tmp_path / "oath.db"
    url = f"sqlite+aiosqlite:///{db_file}"
    asyncio.run(upgrade(url, "oath"))

    async def body(setup: Setup) -> tuple[InvitationRow, str]:
        row = await setup.admin.invite("alice", 3600)
        return row, setup.secret_of(row)

    row, secret = run(url, tmp_path, body)
    assert row.username == "alice"
    assert row.email == "alice@example.org"
    assert row.state == "unsent"
    assert row.expires_at == START + timedelta(hours=1)
    raw = base64.urlsafe_b64decode(secret + "=")
    data = db_file.read_bytes()
    for wal in tmp_path.glob("oath.db-*"):
        data += wal.read_bytes()
    assert secret.encode() not in data
    assert raw not in data
    assert hashlib.sha256(raw).digest() in data  # what is kept for good
    assert "sealed=" not in repr(row)


def test_invite_refusals(sqlite_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> list[str]:
        messages = []
        for username, lifetime in (("carol", 3600.0), ("bob", 3600.0), ("alice", 10.0)):
            with pytest.raises(InvitationError) as caught:
                await setup.admin.invite(username, lifetime)
            messages.append(str(caught.value))
        assert await setup.store.list_invitations() == []
        return messages

    unknown, no_mail, short = run(sqlite_url, tmp_path, body)
    assert "user 'carol' does not exist" in unknown
    assert "has no e-mail address" in no_mail
    assert "gatehouse users set bob --email" in no_mail
    assert short.startswith("lifetime: between 5 minutes and 30 days")


def test_audit_never_holds_the_secret(sqlite_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice")
        secret = setup.secret_of(row)
        await setup.admin.revoke(row.id)
        text = repr(setup.audit)
        assert secret not in text
        assert "alice@example.org" not in text  # masked
        assert [event for event, _, _ in setup.audit] == [
            "token_invitation_created",
            "token_invitation_revoked",
        ]
        assert setup.audit[0][2]["to"] == "a***@example.org"
        # A revoked link is dead.
        hashed = secret_hash(secret)
        assert hashed is not None
        found = await setup.store.find(hashed)
        assert found is not None
        assert found.link_state(now_of(setup)) == "revoked"
        assert found.sealed is None
        with pytest.raises(InvitationError, match="is revoked"):
            await setup.admin.revoke(row.id)

    run(sqlite_url, tmp_path, body)


# --- using ---------------------------------------------------------------------------------


def test_a_link_is_used_once(oath_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice", 3600)
        hashed = secret_hash(setup.secret_of(row))
        assert hashed is not None
        now = now_of(setup)
        assert not await setup.store.use(hashed, "eve", "attempt-eve-000001", "TOTP1", now)
        assert await setup.store.use(hashed, "alice", "attempt-alice-0001", "TOTP1", now)
        # The same submission again (a retry after a lost answer): ok, nothing more.
        assert await setup.store.use(hashed, "alice", "attempt-alice-0001", "TOTP1", now)
        assert not await setup.store.use(hashed, "alice", "attempt-alice-0002", "TOTP2", now)
        used = await setup.store.find(hashed)
        assert used is not None
        assert used.state == "used"
        assert used.serial == "TOTP1"
        assert used.sealed is None
        assert used.key_id is None
        assert used.link_state(now) == "used"

    run(oath_url, tmp_path, body)


def test_simultaneous_uses_one_wins(oath_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice", 3600)
        hashed = secret_hash(setup.secret_of(row))
        assert hashed is not None
        now = now_of(setup)
        other = Database(oath_url)
        try:
            second = InvitationStore(other.engine)
            results = await asyncio.gather(
                *(
                    (setup.store if i % 2 else second).use(
                        hashed, "alice", f"attempt-{i:012d}", f"TOTP{i}", now
                    )
                    for i in range(10)
                )
            )
        finally:
            await other.dispose()
        assert sum(results) == 1

    run(oath_url, tmp_path, body)


def test_an_expired_link_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice", 300)
        hashed = secret_hash(setup.secret_of(row))
        assert hashed is not None
        setup.clock.advance(301)
        now = now_of(setup)
        assert not await setup.store.use(hashed, "alice", "attempt-alice-0001", "TOTP1", now)
        found = await setup.store.find(hashed)
        assert found is not None
        assert found.link_state(now) == "expired"
        # Never sent in its lifetime: expired for good, its sealed secret erased.
        sender = setup.sender()
        recorder = Recorder()
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 0
        assert recorder.requests == []
        gone = await setup.store.get(row.id)
        assert gone is not None
        assert gone.state == "expired"
        assert gone.sealed is None

    run(sqlite_url, tmp_path, body)


# --- sending -------------------------------------------------------------------------------


def test_the_sender_hands_the_link_to_distribution(oath_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice", 72 * 3600)
        secret = setup.secret_of(row)
        recorder = Recorder()
        sender = setup.sender()
        assert await sender.send_due(recorder, "https://gate.example.org", "/_gatehouse/") == 1
        [request] = recorder.requests
        assert request.key == message_key(row.id)
        assert request.purpose == "invitation"
        assert request.email == "alice@example.org"
        assert request.phone is None
        assert request.channels == ["email"]
        assert request.ttl == 86400  # 72 h left; a message lives a day at most
        assert request.username == "alice"
        url = f"https://gate.example.org/_gatehouse/enrol/invite?t={secret}"
        assert url in request.text
        assert "sign in as alice" in request.text
        sent = await setup.store.get(row.id)
        assert sent is not None
        assert sent.state == "sent"
        assert sent.sealed is None
        assert sent.key_id is None
        assert sent.message_id == "msg0000000000000000000"
        assert sent.link_state(now_of(setup)) == "valid"  # still usable: it was only sent
        # Nothing more to send.
        assert await sender.send_due(recorder, "https://gate.example.org", "/_gatehouse/") == 0
        assert len(recorder.requests) == 1

    run(oath_url, tmp_path, body)


def test_the_ttl_is_the_remaining_lifetime(sqlite_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        await setup.admin.invite("alice", 3600)
        setup.clock.advance(600)
        recorder = Recorder()
        assert await setup.sender().send_due(recorder, "http://gw.test", "/p/") == 1
        assert recorder.requests[0].ttl == 3000
        assert "http://gw.test/p/enrol/invite?t=" in recorder.requests[0].text

    run(sqlite_url, tmp_path, body)


def test_a_failed_submission_is_retried(sqlite_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice", 3600)
        recorder = Recorder(fail=1)
        sender = setup.sender()
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 0
        waiting = await setup.store.get(row.id)
        assert waiting is not None
        assert waiting.state == "unsent"
        assert waiting.sealed is not None
        # Not before the retry delay, then yes.
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 0
        setup.clock.advance(5)
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 1
        assert len(recorder.requests) == 1

    run(sqlite_url, tmp_path, body)


def test_a_refused_submission_waits_longer(sqlite_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        await setup.admin.invite("alice", 3600)
        recorder = Recorder(refuse=1)
        sender = setup.sender()
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 0
        setup.clock.advance(REFUSED_RETRY - 1)
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 0
        setup.clock.advance(1)
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 1

    run(sqlite_url, tmp_path, body)


def test_without_distribution_invitations_wait(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice", 3600)
        sender = setup.sender()
        for _ in range(3):
            assert await sender.send_due(None, "http://gw.test", "/_gatehouse/") == 0
            setup.clock.advance(60)
        said = [r.getMessage() for r in caplog.records if "wait to be sent" in r.getMessage()]
        assert said == [
            "1 token invitations wait to be sent, and no Distribution service is configured "
            "(authentication.distribution)"
        ]
        waiting = await setup.store.get(row.id)
        assert waiting is not None
        assert waiting.state == "unsent"
        assert waiting.sealed is not None

    run(sqlite_url, tmp_path, body)


def test_two_senders_never_both_submit(oath_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        rows = [await setup.admin.invite("alice", 3600) for _ in range(12)]
        other = Database(oath_url)
        recorder = Recorder()
        try:
            second = InvitationSender(
                InvitationStore(other.engine), lambda: setup.keyring, setup.clock
            )
            first = setup.sender()
            for _ in range(3):
                await asyncio.gather(
                    first.send_due(recorder, "http://gw.test", "/_gatehouse/"),
                    second.send_due(recorder, "http://gw.test", "/_gatehouse/"),
                )
        finally:
            await other.dispose()
        keys = [request.key for request in recorder.requests]
        assert sorted(keys) == sorted(message_key(row.id) for row in rows)
        states = {row.state for row in await setup.store.list_invitations()}
        assert states == {"sent"}

    run(oath_url, tmp_path, body)


def test_a_link_used_before_it_was_marked_sent_stays_used(sqlite_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice", 3600)
        hashed = secret_hash(setup.secret_of(row))
        assert hashed is not None
        claimed = await setup.store.claim(now_of(setup), now_of(setup) + timedelta(seconds=30))
        assert [c.id for c in claimed] == [row.id]
        # The mail was faster than the sender's bookkeeping.
        assert await setup.store.use(hashed, "alice", "attempt-alice-0001", "T1", now_of(setup))
        await setup.store.mark_sent(row.id, "m1", now_of(setup))
        final = await setup.store.get(row.id)
        assert final is not None
        assert final.state == "used"
        assert final.message_id == "m1"

    run(sqlite_url, tmp_path, body)


def test_the_claim_of_a_service_that_died_runs_out(sqlite_url: str, tmp_path: Path) -> None:
    async def body(setup: Setup) -> None:
        row = await setup.admin.invite("alice", 3600)
        # Another service claimed it, and died (before or after its SUBMIT was accepted).
        held = await setup.store.claim(now_of(setup), now_of(setup) + timedelta(seconds=30))
        assert [c.id for c in held] == [row.id]
        recorder = Recorder()
        sender = setup.sender()
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 0
        setup.clock.advance(30)
        assert await sender.send_due(recorder, "http://gw.test", "/_gatehouse/") == 1
        # The same key as the dead service's: Distribution answers its message, no second mail.
        assert [r.key for r in recorder.requests] == [message_key(row.id)]

    run(sqlite_url, tmp_path, body)

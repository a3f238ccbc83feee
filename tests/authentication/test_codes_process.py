"""One-time codes by e-mail and SMS through real processes: two Authentication services
sharing a user DB and an OATH DB, a real Distribution service, an aiosmtpd SMTP server and an
HTTP SMS gateway on loopback. The code is read from the mail (or SMS) that arrived."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.authentication.conftest import StartAuth, add_user
from tests.authentication.dbquery import rows
from tests.authentication.http import call
from tests.support.processes import Service, free_port

support = pytest.importorskip("tests.distribution.support", reason="Distribution test support")
MailSink = support.MailSink
SmsGateway = support.SmsGateway

IP = "192.0.2.30"
CODE = re.compile(r"\b(\d{6,8})\b")


def post(auth: Service, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _raw, data = call(auth, "POST", f"/internal/v1/codes/{path}", json.dumps(body).encode())
    return status, data


def send(
    auth: Service, user: str = "alice", method: str = "email_otp", key: str | None = None
) -> tuple[int, dict[str, Any]]:
    body = {
        "username": user,
        "method": method,
        "key": key or f"send-{time.monotonic_ns()}",
        "client_ip": IP,
    }
    return post(auth, "send", body)


def verify(
    auth: Service, code: str, attempt: str, user: str = "alice", method: str = "email_otp"
) -> str:
    body = {"username": user, "method": method, "code": code, "client_ip": IP, "attempt": attempt}
    status, data = post(auth, "verify", body)
    assert status == 200, data
    return str(data["result"])


def code_in(text: str) -> str:
    match = CODE.search(text)
    assert match, text
    return match.group(1)


@pytest.fixture
def sink() -> Iterator[Any]:
    server = MailSink().start()
    yield server
    server.stop()


@pytest.fixture
def sms() -> Iterator[Any]:
    gateway = SmsGateway().start()
    yield gateway
    gateway.stop()


@pytest.fixture
def dist(tmp_path: Path, sink: Any, sms: Any) -> Iterator[Service]:
    svc = support.start_distribution(
        tmp_path,
        "dist1",
        [support.smtp_channel(sink.port), support.sms_channel(sms.url)],
        home=tmp_path / "dist-home",
    )
    yield svc
    svc.stop()


FAST_CODES = {"resend_interval": "1s", "resend_max": 3, "resend_window": "1m", "max_attempts": 3}


def test_a_code_by_mail_is_accepted_once_and_a_retry_on_the_other_service_is_ok(
    sqlite_user_db: str, start_auth: StartAuth, dist: Service, sink: Any, tmp_path: Path
) -> None:
    add_user(sqlite_user_db, "alice", "pw-alice-1", email="alice@example.org")
    urls = [f"http://127.0.0.1:{dist.port}"]
    auth1 = start_auth(sqlite_user_db, "auth1", distribution=urls, codes=FAST_CODES)
    auth2 = start_auth(sqlite_user_db, "auth2", distribution=urls, codes=FAST_CODES)
    status, sent = send(auth1, key="first-send-key-0001")
    assert status == 200, sent
    assert sent["result"] == "accepted"
    assert sent["recipient_hint"] == "a***@example.org"
    # A retry of the same send (the same key) on the other service: the same message, no
    # second code, no second mail.
    status, again = send(auth2, key="first-send-key-0001")
    assert (status, again["id"]) == (200, sent["id"])
    mail = sink.wait_for(1)[0]
    assert mail.recipients == ("alice@example.org",)
    code = code_in(mail.text)
    assert len(code) == 6
    # The mail arrived; Distribution marks it sent right after.
    deadline = time.monotonic() + 5
    while True:
        status, state = post(auth1, "status", {"username": "alice", "id": sent["id"]})
        if state.get("status") != "accepted" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert (status, state["status"], state["recipient_hint"]) == (200, "sent", "a***@example.org")
    # Another user cannot ask about this message.
    assert post(auth1, "status", {"username": "bob", "id": sent["id"]})[1]["status"] == "unknown"
    time.sleep(0.5)
    assert len(sink.mails()) == 1

    assert verify(auth1, code, "attempt-one-000001") == "ok"
    # The same submission retried on the other service (the first died before answering).
    assert verify(auth2, code, "attempt-one-000001") == "ok"
    # Any other submission of that code: single use.
    assert verify(auth2, code, "attempt-two-000002") == "invalid"
    assert verify(auth1, code, "attempt-thr-000003", method="sms_otp") == "expired"
    # Nothing stored holds the code in clear, nothing logged holds it.
    oath = (tmp_path / "home" / "oath.db").read_bytes()
    assert code.encode() not in oath
    for log in (auth1.log_path, auth2.log_path, dist.log_path):
        assert code not in Path(log).read_text(errors="replace"), log
    # The audit log tells what happened, never the code.
    events = rows(sqlite_user_db, "SELECT event, detail FROM audit_events ORDER BY id")
    names = [e["event"] for e in events]
    assert names.count("code_sent") == 1
    assert names.count("code_ok") == 2  # the first and its retry (marked so)
    assert "code_replay" in names
    assert all(code not in str(e["detail"]) for e in events)


def test_wrong_codes_are_bounded_and_resends_throttled(
    sqlite_user_db: str, start_auth: StartAuth, dist: Service, sink: Any
) -> None:
    add_user(sqlite_user_db, "alice", "pw-alice-1", email="alice@example.org")
    auth = start_auth(
        sqlite_user_db, distribution=[f"http://127.0.0.1:{dist.port}"], codes=FAST_CODES
    )
    assert send(auth)[1]["result"] == "accepted"
    code = code_in(sink.wait_for(1)[0].text)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert verify(auth, wrong, "wrong-attempt-0001") == "invalid"
    assert verify(auth, wrong, "wrong-attempt-0002") == "invalid"
    assert verify(auth, wrong, "wrong-attempt-0003") == "locked"
    # Dead: the right code no longer works either.
    assert verify(auth, code, "right-attempt-0001") == "locked"
    # Throttled: at once again is too soon (one per second here)...
    status, throttled = send(auth)
    assert (status, throttled["result"]) == (200, "throttled")
    assert throttled["retry_after"] >= 1
    assert throttled["id"] is None  # the only code is dead: none to use instead
    time.sleep(1.1)
    assert send(auth)[1]["result"] == "accepted"
    fresh = code_in(sink.wait_for(2)[-1].text)
    time.sleep(1.1)
    latest = send(auth)[1]
    assert latest["result"] == "accepted"
    time.sleep(1.1)
    # ... and three per minute at most.
    status, throttled = send(auth)
    assert throttled["result"] == "throttled"
    assert throttled["retry_after"] > 30
    assert throttled["id"] == latest["id"]  # the newest live code, to use instead
    # The second code still works (every live code of the user answers).
    assert verify(auth, fresh, "fresh-attempt-0001") == "ok"


def test_an_expired_code_is_refused(
    sqlite_user_db: str, start_auth: StartAuth, dist: Service, sink: Any
) -> None:
    add_user(sqlite_user_db, "alice", "pw-alice-1", email="alice@example.org")
    auth = start_auth(
        sqlite_user_db,
        distribution=[f"http://127.0.0.1:{dist.port}"],
        codes={**FAST_CODES, "lifetime": "30s"},
    )
    assert send(auth)[1]["result"] == "accepted"
    mail = sink.wait_for(1)[0]
    code = code_in(mail.text)
    assert "valid for 1 minute" in mail.text
    time.sleep(31)
    assert verify(auth, code, "late-attempt-00001") == "expired"


def test_sms_first_for_sms_otp_and_no_contact_data(
    sqlite_user_db: str, start_auth: StartAuth, dist: Service, sink: Any, sms: Any
) -> None:
    add_user(
        sqlite_user_db, "alice", "pw-alice-1", email="alice@example.org", phone="+4915112345612"
    )
    add_user(sqlite_user_db, "nobody", "pw-nobody-1")
    auth = start_auth(sqlite_user_db, distribution=[f"http://127.0.0.1:{dist.port}"])
    status, sent = send(auth, method="sms_otp")
    assert (status, sent["result"], sent["recipient_hint"]) == (200, "accepted", "+49*********12")
    request = sms.wait_for(1)[0]
    body = json.loads(request.body)
    assert body["to"] == "+4915112345612"
    assert verify(auth, code_in(body["text"]), "sms-attempt-00001", method="sms_otp") == "ok"
    assert sink.mails() == []
    status, none = send(auth, user="nobody")
    assert (status, none["result"]) == (200, "no_contact")
    assert "no e-mail address" in none["message"]


def test_no_distribution_service_accepting_is_a_503(
    sqlite_user_db: str, start_auth: StartAuth
) -> None:
    add_user(sqlite_user_db, "alice", "pw-alice-1", email="alice@example.org")
    down = free_port()
    auth = start_auth(sqlite_user_db, distribution=[f"http://127.0.0.1:{down}"])
    status, data = send(auth)
    assert status == 503, data
    assert data["error"] == "unavailable"
    none = start_auth(sqlite_user_db, "auth-none")
    status, data = send(none)
    assert status == 503
    assert "authentication.distribution" in data["message"]


def test_over_mutual_tls_with_the_distribution_role(
    sqlite_user_db: str, sink: Any, tmp_path: Path
) -> None:
    """The Authentication service calls Distribution with its own certificate (role
    authentication, allowed to submit) and checks the server is a Distribution service."""
    from gatehouse.trust.ca import CertificateAuthority
    from gatehouse.trust.identity import Identity
    from gatehouse.trust.tls import Credentials, write_credentials
    from tests.support.processes import write_config

    ca = CertificateAuthority.create()

    def credentials(role: str, name: str) -> Path:
        directory = tmp_path / "tls" / name
        key, cert = ca.issue_key_pair(Identity(role, name))
        write_credentials(directory, ca.certificate_pem, cert, key)
        return directory

    add_user(sqlite_user_db, "alice", "pw-alice-1", email="alice@example.org")
    dist = support.start_distribution(
        tmp_path,
        "dist1",
        [support.smtp_channel(sink.port)],
        home=tmp_path / "dist-home",
        tls=credentials("distribution", "dist1"),
    )
    port = free_port()
    config = write_config(
        tmp_path / "auth-tls.yaml",
        {
            "authentication": {
                "id": "auth1",
                "listen": f"127.0.0.1:{port}",
                "user_db": sqlite_user_db,
                "distribution": [f"https://127.0.0.1:{dist.port}"],
            }
        },
    )
    args = ["authentication", "--config", str(config), "--home", str(tmp_path / "home")]
    auth = Service(
        [*args, "--tls", str(credentials("authentication", "auth1"))],
        tmp_path / "auth-tls.log",
        "127.0.0.1",
        port,
    ).wait_ready()
    try:
        policy = Credentials(credentials("policy", "ps1"))
        auth.tls_context = policy.client  # type: ignore[attr-defined]
        status, sent = send(auth)
        assert (status, sent["result"]) == (200, "accepted"), sent
        code = code_in(sink.wait_for(1)[0].text)
        assert verify(auth, code, "tls-attempt-000001") == "ok"
        # An Access Point's certificate may not ask for codes.
        auth.tls_context = Credentials(credentials("access_point", "ap1")).client  # type: ignore[attr-defined]
        status, _raw, refused = call(auth, "POST", "/internal/v1/codes/send", b"{}")
        assert (status, refused["error"]) == (403, "forbidden")
    finally:
        auth.stop()
        dist.stop()


def test_a_send_resumed_after_its_first_service_died_sends_the_same_code(
    sqlite_user_db: str, start_auth: StartAuth, dist: Service, sink: Any, tmp_path: Path
) -> None:
    """The first Authentication service made the code (the row committed, the code sealed)
    and died before Distribution had it: the retry on another service submits that very code
    (unsealed with the shared key file), once."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from gatehouse.authentication.code_store import CodeStore, NewCode
    from gatehouse.authentication.codes import code_hash, hash_key
    from gatehouse.authentication.config import CodeSettings
    from gatehouse.oath.seeds import Keyring
    from gatehouse.storage.engine import Database

    add_user(sqlite_user_db, "alice", "pw-alice-1", email="alice@example.org")
    auth = start_auth(sqlite_user_db, distribution=[f"http://127.0.0.1:{dist.port}"])
    home = tmp_path / "home"
    ring = Keyring.load(home / "oath-seeds.key")
    key = "died-before-submit-01"
    code = "031337"
    key_id, sealed = ring.encrypt(code.encode(), key.encode())
    now = datetime.now(UTC)
    row = NewCode(
        username="alice",
        method="email_otp",
        send_key=key,
        key_id=key_id,
        code_hash=code_hash(hash_key(ring.keys[key_id]), "alice", "email_otp", code),
        sealed=sealed,
        digits=6,
        recipient_hint="a***@example.org",
        created_at=now,
        expires_at=now + timedelta(minutes=5),
    )

    async def crashed_first_try() -> None:
        db = Database(f"sqlite+aiosqlite:///{home / 'oath.db'}")
        try:
            await CodeStore(db.engine).create(row, CodeSettings(), now.timestamp())
        finally:
            await db.dispose()

    asyncio.run(crashed_first_try())
    status, sent = send(auth, key=key)
    assert (status, sent["result"]) == (200, "accepted"), sent
    assert code_in(sink.wait_for(1)[0].text) == code
    assert send(auth, key=key)[1]["id"] == sent["id"]
    time.sleep(0.5)
    assert len(sink.mails()) == 1
    assert verify(auth, code, "resumed-attempt-001") == "ok"


def test_a_hung_distribution_service_is_failed_over(
    sqlite_user_db: str, start_auth: StartAuth, dist: Service, sink: Any
) -> None:
    """The preferred Distribution service accepts connections and never answers: the send
    goes to the next one within the failover timeout (2 s), well inside the time the Policy
    service gives a send (8 s)."""
    import socket

    from gatehouse.policy.service import CODE_CALL_TIMEOUT

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        add_user(sqlite_user_db, "alice", "pw-alice-1", email="alice@example.org")
        urls = [f"http://127.0.0.1:{hung.getsockname()[1]}", f"http://127.0.0.1:{dist.port}"]
        auth = start_auth(sqlite_user_db, distribution=urls)
        started = time.monotonic()
        status, sent = send(auth)
        took = time.monotonic() - started
        assert (status, sent["result"]) == (200, "accepted"), sent
        assert took < CODE_CALL_TIMEOUT - 2, took
        sink.wait_for(1)
        # The hung one is down now: the next call goes straight to the other.
        started = time.monotonic()
        status, state = post(auth, "status", {"username": "alice", "id": sent["id"]})
        assert status == 200
        assert state["status"] in ("accepted", "sent")  # the mail arrived; marked sent after
        assert time.monotonic() - started < 1.0
    finally:
        hung.close()


def test_codes_survive_a_rotation_of_the_key_file(
    sqlite_user_db: str, start_auth: StartAuth, tmp_path: Path
) -> None:
    """A code hashed under the key that was current keeps working after ``gatehouse tokens
    rekey`` adds a new one, and one hashed under a key the running service has not read yet
    makes it read the file again."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from gatehouse.authentication.code_store import CodeStore, NewCode
    from gatehouse.authentication.codes import code_hash, hash_key
    from gatehouse.authentication.config import CodeSettings
    from gatehouse.oath.seeds import Keyring
    from gatehouse.storage.engine import Database

    auth = start_auth(sqlite_user_db)
    home = tmp_path / "home"
    path = home / "oath-seeds.key"

    def store_code(user: str, code: str) -> None:
        ring = Keyring.load(path)
        now = datetime.now(UTC)
        row = NewCode(
            username=user,
            method="email_otp",
            send_key=f"rotation-{user}-0000001",
            key_id=ring.current,
            code_hash=code_hash(hash_key(ring.keys[ring.current]), user, "email_otp", code),
            sealed=b"-",
            digits=6,
            recipient_hint="",
            created_at=now,
            expires_at=now + timedelta(minutes=5),
        )

        async def go() -> None:
            db = Database(f"sqlite+aiosqlite:///{home / 'oath.db'}")
            try:
                await CodeStore(db.engine).create(row, CodeSettings(), now.timestamp())
            finally:
                await db.dispose()

        asyncio.run(go())

    store_code("alice", "111222")
    assert verify(auth, "999999", "warm-attempt-000001", user="nobody") == "expired"
    Keyring.load(path).rotate()  # what gatehouse tokens rekey does to the file
    store_code("bob", "333444")
    assert verify(auth, "111222", "rotation-attempt-01") == "ok"
    assert verify(auth, "333444", "rotation-attempt-02", user="bob") == "ok"

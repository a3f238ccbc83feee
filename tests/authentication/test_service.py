"""``gatehouse authentication`` as a real process: the Auth endpoints of docs/internal-api.md."""

from __future__ import annotations

import re
import time

from tests.authentication.conftest import FAST_LOCKOUT, StartAuth, add_user
from tests.authentication.dbquery import audit_details, audit_events, stored_hash
from tests.authentication.http import call, verify, verify_raw

ALICE = {
    "username": "alice",
    "display_name": "Alice Example",
    "email": "alice@example.org",
    "groups": ["admins", "ops"],
    "enabled": True,
}


def add_alice(url: str) -> None:
    add_user(
        url,
        "alice",
        "correct horse",
        groups=["ops", "admins"],
        email="alice@example.org",
        display_name="Alice Example",
    )


def test_health_and_verify(user_db: str, start_auth: StartAuth) -> None:
    add_alice(user_db)
    add_user(user_db, "bob", "bobs password", enabled=False)
    auth = start_auth(user_db)
    ok = verify(auth, "alice", "correct horse")
    assert ok == {"result": "ok", "user": ALICE, "device": ok["device"]}
    assert re.fullmatch(r"[A-Za-z0-9_-]{11}", ok["device"])
    assert verify(auth, "alice", "wrong horse") == {"result": "invalid"}
    assert verify(auth, "alice", "") == {"result": "invalid"}
    assert verify(auth, "alice", "correct horse", client_ip="2001:db8::1")["result"] == "ok"
    assert call(auth, "GET", "/internal/v1/health")[2] == {
        "status": "ok",
        "role": "authentication",
        "config_version": None,
        "config_source": "file",
    }
    # The user lookup is gone: nothing but tests used it.
    assert call(auth, "GET", "/internal/v1/users/alice")[0] == 404


def test_unknown_disabled_and_wrong_look_the_same(
    sqlite_user_db: str, start_auth: StartAuth
) -> None:
    url = sqlite_user_db
    add_alice(url)
    add_user(url, "bob", "bobs password", enabled=False)
    add_user(url, "nopass", None)
    lockout = {**FAST_LOCKOUT, "account_max_failures": 50, "ip_max_failures": 1000}
    auth = start_auth(url, lockout=lockout)
    verify(auth, "alice", "warm up the dummy hash")

    def timed(username: str, password: str) -> tuple[bytes, float]:
        started = time.perf_counter()
        raw = verify_raw(auth, username, password)
        return raw, time.perf_counter() - started

    cases = [
        ("wrong", "alice", "not it"),
        ("unknown", "nobody", "not it"),
        ("disabled", "bob", "bobs password"),
        ("no password", "nopass", "anything"),
        ("invalid name", "no such/user", "not it"),
    ]
    samples: dict[str, list[tuple[bytes, float]]] = {label: [] for label, _, _ in cases}
    # Round robin, so that a busy moment of the machine slows every path alike, and the
    # fastest of several runs: other processes can only make a run slower.
    for _ in range(7):
        for label, username, password in cases:
            samples[label].append(timed(username, password))
    answers = {
        label: ({raw for raw, _ in runs}, min(t for _, t in runs))
        for label, runs in samples.items()
    }
    assert {frozenset(raws) for raws, _ in answers.values()} == {
        frozenset({b'{"result":"invalid"}'})
    }
    fastest = [best for _, best in answers.values()]
    # Every path runs one argon2 verification (~50 ms): no path is markedly faster.
    assert min(fastest) > 0.5 * max(fastest), answers


def test_account_lockout_and_expiry(user_db: str, start_auth: StartAuth) -> None:
    add_alice(user_db)
    auth = start_auth(user_db)
    for _ in range(3):
        assert verify(auth, "alice", "guess") == {"result": "invalid"}
    locked = verify(auth, "alice", "correct horse")
    assert locked["result"] == "locked"
    assert locked["retry_after"] == 1
    assert verify(auth, "alice", "guess")["result"] == "locked"
    # Another account from the same address is not affected.
    add_user(user_db, "bob", "bobs password")
    assert verify(auth, "bob", "bobs password")["result"] == "ok"
    time.sleep(locked["retry_after"] + 0.2)
    assert verify(auth, "alice", "correct horse")["result"] == "ok"
    # Success cleared the count: two more failures do not lock.
    assert verify(auth, "alice", "guess") == {"result": "invalid"}
    assert verify(auth, "alice", "guess") == {"result": "invalid"}
    assert verify(auth, "alice", "correct horse")["result"] == "ok"
    # Names that do not exist lock the same way, so lockouts do not reveal accounts.
    for _ in range(3):
        assert verify(auth, "ghost", "guess") == {"result": "invalid"}
    assert verify(auth, "ghost", "guess")["result"] == "locked"


def test_ip_lockout(sqlite_user_db: str, start_auth: StartAuth) -> None:
    add_alice(sqlite_user_db)
    lockout = {**FAST_LOCKOUT, "account_max_failures": 100, "ip_max_failures": 4}
    auth = start_auth(sqlite_user_db, lockout=lockout)
    attacker = "2001:db8::7"
    for n in range(4):
        assert verify(auth, f"user{n}", "guess", client_ip=attacker) == {"result": "invalid"}
    assert verify(auth, "alice", "correct horse", client_ip=attacker)["result"] == "locked"
    assert verify(auth, "alice", "correct horse", client_ip="2001:db8::8")["result"] == "ok"
    # The same address written differently is the same key.
    assert (
        verify(auth, "alice", "correct horse", client_ip="2001:DB8:0:0::0007")["result"] == "locked"
    )
    time.sleep(1.2)
    assert verify(auth, "alice", "correct horse", client_ip=attacker)["result"] == "ok"

    # The attacker's own valid account must not wipe the failures of the attacker's IP.
    second = "2001:db8::9"
    verify(auth, "victim", "guess", client_ip=second)
    verify(auth, "victim", "guess", client_ip=second)
    verify(auth, "victim", "guess", client_ip=second)
    assert verify(auth, "alice", "correct horse", client_ip=second)["result"] == "ok"
    verify(auth, "victim", "guess", client_ip=second)
    assert verify(auth, "alice", "correct horse", client_ip=second)["result"] == "locked"


def test_rehash_when_parameters_change(user_db: str, start_auth: StartAuth) -> None:
    add_alice(user_db)
    first = start_auth(user_db, name="auth-a")
    assert verify(first, "alice", "correct horse")["result"] == "ok"
    original = stored_hash(user_db, "alice")
    assert "$m=47104,t=1,p=1$" in original
    first.stop()

    second = start_auth(user_db, name="auth-b", password_hash={"memory_kib": 65536, "time_cost": 2})
    assert verify(second, "alice", "wrong")["result"] == "invalid"
    assert stored_hash(user_db, "alice") == original  # no rehash on a failure
    assert verify(second, "alice", "correct horse")["result"] == "ok"
    upgraded = stored_hash(user_db, "alice")
    assert "$m=65536,t=2,p=1$" in upgraded
    assert verify(second, "alice", "correct horse")["result"] == "ok"
    assert stored_hash(user_db, "alice") == upgraded
    assert audit_details(user_db).count({"rehashed": True}) == 1


def test_two_services_share_counters(user_db: str, start_auth: StartAuth) -> None:
    add_alice(user_db)
    one = start_auth(user_db, name="auth1")
    two = start_auth(user_db, name="auth2")
    assert verify(one, "alice", "guess") == {"result": "invalid"}
    assert verify(two, "alice", "guess") == {"result": "invalid"}
    assert verify(one, "alice", "guess") == {"result": "invalid"}
    assert verify(two, "alice", "correct horse")["result"] == "locked"
    assert verify(one, "alice", "correct horse")["result"] == "locked"


def test_audit_events(user_db: str, start_auth: StartAuth) -> None:
    add_alice(user_db)
    auth = start_auth(user_db)
    verify(auth, "alice", "correct horse", client_ip="::ffff:192.0.2.1")
    verify(auth, "nobody", "x", client_ip="2001:DB8:0::5")
    for _ in range(3):
        verify(auth, "alice", "guess", client_ip="192.0.2.1")
    verify(auth, "alice", "correct horse", client_ip="192.0.2.1")
    assert audit_events(user_db) == [
        ("login_ok", "alice", "192.0.2.1"),
        ("login_failed", "nobody", "2001:db8::5"),
        ("login_failed", "alice", "192.0.2.1"),
        ("login_failed", "alice", "192.0.2.1"),
        ("login_failed", "alice", "192.0.2.1"),
        ("login_locked", "alice", "192.0.2.1"),
    ]
    details = audit_details(user_db)
    assert details[1]["reason"] == "unknown_user"
    assert details[2] == {"reason": "bad_password", "account_failures": 1, "ip_failures": 1}
    assert details[4]["account_locked"] is True
    assert details[5]["retry_after"] == 1


BAD_REQUESTS = [
    (b"{not json", "body is not valid JSON"),
    (b"[]", "body must be a JSON object"),
    (b'{"password": "x", "client_ip": "192.0.2.1"}', "username: missing"),
    (b'{"username": "", "password": "x", "client_ip": "192.0.2.1"}', "username: empty"),
    (b'{"username": "a", "client_ip": "192.0.2.1"}', "password: missing"),
    (b'{"username": "a", "password": "x"}', "client_ip: missing"),
    (b'{"username": 5, "password": "x", "client_ip": "192.0.2.1"}', "username: must be"),
    (b'{"username": "a", "password": null, "client_ip": "192.0.2.1"}', "password: must be"),
    (b'{"username": "a", "password": "x", "client_ip": "nope"}', "client_ip: not an IP"),
    (b"x" * 20000, "body larger than"),
]


def test_bad_requests_and_unknown_paths(sqlite_user_db: str, start_auth: StartAuth) -> None:
    auth = start_auth(sqlite_user_db)
    for body, message in BAD_REQUESTS:
        status, _, answer = call(auth, "POST", "/internal/v1/password/verify", body)
        assert (status, answer["error"]) == (400, "bad_request"), body
        assert answer["message"].startswith(message), (body, answer)
    assert call(auth, "GET", "/nope")[::2] == (404, {"error": "not_found", "message": "Not Found"})
    status, _, answer = call(auth, "GET", "/internal/v1/password/verify")
    assert (status, answer["error"]) == (405, "bad_request")
    assert audit_events(sqlite_user_db) == []

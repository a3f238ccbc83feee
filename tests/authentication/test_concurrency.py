"""The lockout under concurrency and floods, against real ``gatehouse authentication`` processes.

Password checks are counted from the audit log: every check that ran argon2 writes one
``login_ok`` or ``login_failed`` row, every refused attempt one ``login_locked`` row.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any

from gatehouse.authentication import lockout
from gatehouse.authentication.lockout import Rule
from gatehouse.storage.engine import Database
from gatehouse.storage.types import utcnow
from tests.authentication.conftest import StartAuth, add_user
from tests.authentication.dbquery import audit_events, rows
from tests.authentication.http import call
from tests.support.processes import Service

SLOW_LOCKOUT = {
    "insecure_no_rate_cap": True,
    "account_max_failures": 5,
    "account_window": "10m",
    "account_lock": "10m",
    "ip_max_failures": 1000,
    "ip_window": "10m",
    "ip_lock": "10m",
}


def verify_any(svc: Service, username: str, password: str, ip: str, **extra: Any) -> Any:
    body = json.dumps({"username": username, "password": password, "client_ip": ip, **extra})
    status, _, data = call(svc, "POST", "/internal/v1/password/verify", body.encode())
    return status, data


def checks(url: str) -> int:
    return sum(1 for event, _, _ in audit_events(url) if event in ("login_ok", "login_failed"))


def test_simultaneous_guesses_check_at_most_the_limit(user_db: str, start_auth: StartAuth) -> None:
    """40 wrong passwords at once and the right one behind them (the review's attack): on
    SQLite with one service, on PostgreSQL with two sharing the counters."""
    add_user(user_db, "alice", "correct horse")
    services = [start_auth(user_db, name="auth1", lockout=SLOW_LOCKOUT)]
    if user_db.startswith("postgresql"):
        services.append(start_auth(user_db, name="auth2", lockout=SLOW_LOCKOUT))
    go = threading.Barrier(40)

    def guess(n: int) -> Any:
        go.wait()
        return verify_any(services[n % len(services)], "alice", f"guess {n}", f"192.0.2.{n}")

    with ThreadPoolExecutor(41) as pool:
        guesses = [pool.submit(guess, n) for n in range(40)]
        # The right password right behind them: as soon as one guess was refused (the account
        # is locked), while the others are still checked. A fixed pause was not enough on a
        # loaded host: the right password was counted before the lock, signed in, and so
        # rightly started the account's count over (a success forgets its failures).
        pending = set(guesses)
        while pending:
            done, pending = wait(pending, timeout=30, return_when=FIRST_COMPLETED)
            if any(f.result()[1].get("result") == "locked" for f in done):
                break
        right = pool.submit(verify_any, services[-1], "alice", "correct horse", "198.51.100.1")
        answers = [f.result() for f in guesses]
        final = right.result()

    assert {status for status, _ in answers} == {200}
    results = [data["result"] for _, data in answers]
    assert results.count("invalid") <= 5
    assert results.count("invalid") + results.count("locked") == 40
    assert final == (200, {"result": "locked", "retry_after": final[1]["retry_after"]})
    assert checks(user_db) <= 5  # argon2 ran at most account_max_failures times
    assert checks(user_db) == results.count("invalid")


def test_a_trusted_device_is_not_locked_out_by_failures_from_elsewhere(
    sqlite_user_db: str, start_auth: StartAuth
) -> None:
    url = sqlite_user_db
    add_user(url, "alice", "correct horse")
    add_user(url, "bob", "bobs password")
    auth = start_auth(url, lockout=SLOW_LOCKOUT)
    # Signing in issues a device id; signing in with it renews the same one.
    first = verify_any(auth, "alice", "correct horse", "192.0.2.1")[1]
    mine = {"device": first["device"]}
    again = verify_any(auth, "alice", "correct horse", "192.0.2.1", **mine)[1]
    assert again["device"] == first["device"]
    other = {"device": verify_any(auth, "alice", "correct horse", "192.0.2.2")[1]["device"]}
    assert other != mine
    # Five wrong passwords from five addresses lock the account for everyone else...
    for n in range(5):
        assert verify_any(auth, "alice", "guess", f"203.0.113.{n}")[1] == {"result": "invalid"}
    assert verify_any(auth, "alice", "correct horse", "192.0.2.1")[1]["result"] == "locked"
    # ...but not for a browser that signed in to alice before: it has its own counter.
    assert verify_any(auth, "alice", "correct horse", "192.0.2.1", **mine)[1]["result"] == "ok"
    # That counter locks too, on its own: the other trusted device is unaffected.
    for _ in range(5):
        assert verify_any(auth, "alice", "typo", "192.0.2.1", **mine)[1] == {"result": "invalid"}
    assert verify_any(auth, "alice", "correct horse", "192.0.2.1", **mine)[1]["result"] == "locked"
    assert verify_any(auth, "alice", "correct horse", "192.0.2.1", **other)[1]["result"] == "ok"
    # An id this service never issued for alice is no way around her lock, whoever sends it.
    for forged in (
        "AAAAAAAAAAA",
        verify_any(auth, "bob", "bobs password", "192.0.2.3")[1]["device"],
    ):
        answer = verify_any(auth, "alice", "correct horse", "192.0.2.1", device=forged)[1]
        assert answer["result"] == "locked"
    # A device id for a name that is no account changes nothing.
    assert verify_any(auth, "ghost", "x", "192.0.2.1", **mine)[1] == {"result": "invalid"}
    status, answer = verify_any(auth, "alice", "x", "192.0.2.1", device="../../etc")
    assert (status, answer["error"]) == (400, "bad_request")
    assert answer["message"].startswith("device: must be null or a device id")


def test_unknown_names_take_no_row_of_their_own(sqlite_user_db: str, start_auth: StartAuth) -> None:
    url = sqlite_user_db
    add_user(url, "alice", "correct horse")
    limits = {**SLOW_LOCKOUT, "account_max_failures": 100}
    auth = start_auth(url, lockout=limits)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: verify_any(auth, f"ghost-{n}", "x", "192.0.2.5"), range(60)))
    verify_any(auth, "alice", "wrong", "192.0.2.5")
    keys = [r["key"] for r in rows(url, "SELECT key FROM login_failures")]
    assert not [k for k in keys if "ghost" in k], keys
    assert {k.split(":")[0] for k in keys} == {"ip", "unknown", "user"}
    assert len(keys) <= 2 + 60


def test_expired_counters_are_purged(user_db: str, start_auth: StartAuth) -> None:
    async def old_rows() -> None:
        db = Database(user_db)
        try:
            async with db.connect() as conn:
                long_ago = datetime(2020, 1, 1, tzinfo=UTC)
                for n in range(20):
                    await lockout.reserve(conn, f"ip:192.0.2.{n}", long_ago, Rule.of(5, 60, 60))
                await lockout.reserve(conn, "ip:192.0.2.200", utcnow(), Rule.of(5, 3600, 60))
        finally:
            await db.dispose()

    asyncio.run(old_rows())
    start_auth(user_db, lockout=SLOW_LOCKOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        keys = [r["key"] for r in rows(user_db, "SELECT key FROM login_failures")]
        if keys == ["ip:192.0.2.200"]:
            break
        time.sleep(0.2)
    assert keys == ["ip:192.0.2.200"]


def test_a_flood_far_larger_than_the_queue_is_answered_503_overloaded(
    sqlite_user_db: str, start_auth: StartAuth
) -> None:
    url = sqlite_user_db
    add_user(url, "alice", "correct horse")
    limits = {**SLOW_LOCKOUT, "account_max_failures": 1000, "ip_max_failures": 100_000}
    auth = start_auth(url, lockout=limits, verify_queue=2)
    flood = 400
    go = threading.Barrier(100)

    def one(n: int) -> tuple[int, Any]:
        if n < 100:
            go.wait()
        return verify_any(auth, f"user{n}", "guess", f"198.51.100.{n % 250}")

    started = time.monotonic()
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(one, range(flood)))
    took = time.monotonic() - started
    overloaded = [a for a in answers if a[0] == 503]
    assert overloaded, "no request was refused"
    assert {(s, d.get("error")) for s, d in overloaded} == {(503, "overloaded")}
    assert {d["result"] for s, d in answers if s == 200} == {"invalid"}
    # Only admitted checks ran argon2: far fewer than the flood, and the flood is over fast.
    assert checks(url) == flood - len(overloaded)
    assert took < 60
    # Afterwards the service answers as ever.
    assert verify_any(auth, "alice", "correct horse", "192.0.2.9")[1]["result"] == "ok"

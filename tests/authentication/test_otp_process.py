"""``gatehouse authentication`` as a real process with one-time passwords: the OATH DB and the
seed key file default to the installation home, enrolment to sign-in over HTTP, and a key
file that cannot be used stops OTP only."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from gatehouse.oath.otp import totp
from tests.authentication.conftest import StartAuth, add_user
from tests.authentication.http import call, verify
from tests.support.processes import Service

IP = "192.0.2.20"


def post(auth: Service, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _raw, data = call(auth, "POST", f"/internal/v1/otp/{path}", json.dumps(body).encode())
    return status, data


def post_password(auth: Service, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _raw, data = call(
        auth, "POST", "/internal/v1/password/verify", json.dumps(body).encode()
    )
    return status, data


def test_enrol_confirm_and_sign_in_with_the_installation_defaults(
    sqlite_user_db: str, start_auth: StartAuth, tmp_path: Path
) -> None:
    add_user(sqlite_user_db, "alice", "correct horse")
    auth = start_auth(sqlite_user_db)
    home = tmp_path / "home"
    keyring = home / "oath-seeds.key"
    assert keyring.stat().st_mode & 0o777 == 0o600
    assert (home / "oath.db").exists()
    status, enrolled = post(auth, "enrol", {"username": "alice", "issuer": "Example"})
    assert status == 200, enrolled
    secret = enrolled["secret"]
    seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
    assert secret.encode() not in (home / "oath.db").read_bytes()
    code = totp(seed, time.time(), 30, 6, "sha1")
    confirm = {
        "username": "alice",
        "serial": enrolled["serial"],
        "code": code,
        "client_ip": IP,
        "attempt": "confirm-attempt-0001",
    }
    assert post(auth, "confirm", confirm) == (200, {"result": "ok", "serial": enrolled["serial"]})
    assert post(auth, "status", {"username": "alice"}) == (
        200,
        {"active": 1, "pending": None, "enrol_required": False},
    )
    # A password check that asks for it brings the same status (one call for a sign-in);
    # one that does not ask, or a wrong password, brings none.
    password = {"username": "alice", "password": "correct horse", "client_ip": IP}
    status, signed_in = post_password(auth, {**password, "otp": True})
    assert (status, signed_in["result"]) == (200, "ok")
    assert signed_in["otp"] == {"active": 1, "pending": None, "enrol_required": False}
    assert "otp" not in post_password(auth, password)[1]
    assert post_password(auth, {**password, "password": "wrong", "otp": True})[1] == {
        "result": "invalid"
    }
    check = {"username": "alice", "code": code, "client_ip": IP, "attempt": "verify-attempt-01"}
    # The confirming code was consumed: the same code again is a replay.
    assert post(auth, "verify", check) == (200, {"result": "invalid"})
    assert post(auth, "verify", {**check, "username": "bob"}) == (200, {"result": "no_token"})


def test_a_key_file_that_cannot_be_read_stops_otp_only(
    sqlite_user_db: str, start_auth: StartAuth, tmp_path: Path
) -> None:
    add_user(sqlite_user_db, "alice", "correct horse")
    keyring = tmp_path / "keys" / "seeds.key"
    keyring.parent.mkdir()
    keyring.write_text("{}\n")
    keyring.chmod(0o640)
    auth = start_auth(sqlite_user_db, oath_keyring=str(keyring))
    assert verify(auth, "alice", "correct horse")["result"] == "ok"
    check = {"username": "alice", "code": "123456", "client_ip": IP, "attempt": "a" * 16}
    status, answer = post(auth, "verify", check)
    assert status == 503
    assert answer["error"] == "unavailable"
    assert f"seed key file {keyring} is readable by others" in answer["message"]
    assert verify(auth, "alice", "correct horse")["result"] == "ok"

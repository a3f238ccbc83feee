"""The state directory: atomic private writes, admin.json checks, verified last-known-good."""

from __future__ import annotations

import base64
import errno
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatehouse.administration.signing import generate_private_key, public_key_pem, sign_view
from gatehouse.internal import lkg
from gatehouse.internal.lkg import (
    AdminState,
    LastKnownGoodInvalid,
    NotRegistered,
    Snapshot,
    StateDir,
    StateError,
    atomic_write,
    check_service_id,
)

KEY = generate_private_key()
OTHER_KEY = generate_private_key()
VIEW: dict[str, Any] = {"access_point": {"id": "ap1"}, "resources": [{"id": "wiki"}]}
CREATED = "2030-01-02T03:04:05Z"


def admin_state(**changes: Any) -> AdminState:
    values: dict[str, Any] = {
        "admin_urls": ("http://127.0.0.1:8300",),
        "service_id": "ap1",
        "role": "access_point",
        "node": "n1",
        "endpoint": "http://127.0.0.1:8080",
        "public_key": public_key_pem(KEY),
        "registered_at": CREATED,
    }
    values.update(changes)
    return AdminState(**values)


def envelope(version: int = 3, service: str = "ap1", key: Any = KEY) -> bytes:
    return orjson.dumps(sign_view(key, version, service, CREATED, VIEW))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def registered(tmp_path: Path) -> StateDir:
    state_dir = StateDir(tmp_path / "state")
    state_dir.save_admin(admin_state())
    return state_dir


# atomic writes ------------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_with_private_mode_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"old")
    path.chmod(0o644)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode(path) == 0o600
    assert os.listdir(tmp_path) == ["f.json"]
    atomic_write(path, b"public", mode=0o644)
    assert mode(path) == 0o644


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.json"]


def test_state_write_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StateError, match=r"cannot create state directory .*not-a-dir"):
        StateDir(blocker / "state").save_admin(admin_state())
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: the refusal anyone else would get

        def refused(*args: Any, **kwargs: Any) -> Any:
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(lkg.tempfile, "mkstemp", refused)
    with pytest.raises(StateError, match=r"cannot write .*ro/lkg.json: Permission denied"):
        StateDir(read_only).write_lkg(b"{}")


# admin.json ---------------------------------------------------------------------------------


def test_admin_state_round_trip_in_a_private_directory(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path / "deep" / "state")
    assert state_dir.load_admin() is None
    state_dir.save_admin(admin_state())
    assert mode(state_dir.path) == 0o700
    assert mode(state_dir.admin_path) == 0o600
    assert state_dir.load_admin() == admin_state()
    assert state_dir.require_admin() == admin_state()


def test_no_registration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotRegistered, match=r"holds no registration.*join token"):
        StateDir(tmp_path).require_admin()
    with pytest.raises(NotRegistered):
        StateDir(tmp_path).load_last_known_good()


def test_a_readable_admin_file_is_refused(tmp_path: Path) -> None:
    state_dir = registered(tmp_path)
    state_dir.admin_path.chmod(0o644)
    with pytest.raises(StateError, match=r"readable by others \(mode 644\).*chmod 600"):
        state_dir.load_admin()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: b"{not json", "not JSON"),
        (lambda d: b"[]", "not a JSON object"),
        (lambda d: {**d, "endpoint": ""}, "endpoint is missing"),
        (lambda d: {k: v for k, v in d.items() if k != "role"}, "role is missing"),
        (lambda d: {**d, "role": "mailer"}, "role: 'mailer' is not one of"),
        (lambda d: {**d, "service_id": "AP 1"}, "service_id: not a service id"),
        (lambda d: {**d, "admin_urls": []}, "admin_urls is not a non-empty list"),
        (lambda d: {**d, "admin_urls": "http://a:1"}, "admin_urls is not a non-empty list"),
        (lambda d: {**d, "public_key": "nope"}, "public_key: not a PEM public key"),
        (lambda d: {**d, "registered_at": 5}, "registered_at is missing"),
    ],
)
def test_a_broken_admin_file_is_refused_with_the_field(
    tmp_path: Path, change: Any, message: str
) -> None:
    state_dir = registered(tmp_path)
    changed = change(orjson.loads(state_dir.admin_path.read_bytes()))
    data = changed if isinstance(changed, bytes) else orjson.dumps(changed)
    atomic_write(state_dir.admin_path, data)
    with pytest.raises(StateError, match=message) as caught:
        state_dir.load_admin()
    assert str(state_dir.admin_path) in str(caught.value)


@pytest.mark.parametrize("good", ["ap1", "ps-2", "auth.1", "a_b", "0" * 63])
def test_service_ids_accepted(good: str) -> None:
    assert check_service_id(good) == good


@pytest.mark.parametrize("bad", ["", "AP1", "-ap", "ap/1", "ap?x", "ap 1", "a" * 64, "é"])
def test_service_ids_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a service id"):
        check_service_id(bad)


# lkg.json -----------------------------------------------------------------------------------


def test_last_known_good_is_kept_byte_for_byte_and_verified(tmp_path: Path) -> None:
    state_dir = registered(tmp_path)
    assert state_dir.load_last_known_good() is None
    body = envelope(3)
    state_dir.write_lkg(body)
    assert state_dir.read_lkg() == body
    assert mode(state_dir.lkg_path) == 0o600
    snapshot = state_dir.load_last_known_good()
    assert snapshot == Snapshot(3, VIEW)
    version, view = snapshot
    assert (version, view) == (3, VIEW)
    state_dir.remove_lkg()
    state_dir.remove_lkg()  # none is fine
    assert state_dir.load_last_known_good() is None


def _tampered_view(body: bytes) -> bytes:
    data = orjson.loads(body)
    data["view"]["resources"][0]["id"] = "evil"
    return orjson.dumps(data)


def _tampered_version(body: bytes) -> bytes:
    data = orjson.loads(body)
    data["version"] = 99
    return orjson.dumps(data)


def _bad_signature(body: bytes) -> bytes:
    data = orjson.loads(body)
    data["signature"] = base64.b64encode(b"\0" * 64).decode()
    return orjson.dumps(data)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_tampered_view(envelope()), "does not verify with Admin's key"),
        (_tampered_version(envelope()), "does not verify with Admin's key"),
        (_bad_signature(envelope()), "does not verify"),
        (envelope(key=OTHER_KEY), "does not verify"),
        (envelope(service="ap2"), "addressed to 'ap2', not 'ap1'"),
        (envelope()[:-20], "not JSON"),
        (b"", "not JSON"),
        (b'{"version": 3}', "envelope fields"),
    ],
)
def test_a_tampered_last_known_good_is_refused(
    tmp_path: Path, content: bytes, message: str
) -> None:
    state_dir = registered(tmp_path)
    state_dir.write_lkg(content)
    with pytest.raises(LastKnownGoodInvalid, match=message) as caught:
        state_dir.load_last_known_good()
    text = str(caught.value)
    assert str(state_dir.lkg_path) in text
    assert "must not start from it" in text


def test_a_readable_last_known_good_is_refused(tmp_path: Path) -> None:
    state_dir = registered(tmp_path)
    state_dir.write_lkg(envelope())
    state_dir.lkg_path.chmod(0o640)
    with pytest.raises(StateError, match="readable by others"):
        state_dir.load_last_known_good()


def test_an_admin_file_from_before_certificates_still_loads(tmp_path: Path) -> None:
    """A registration written with a service secret: the secret is ignored."""
    state_dir = registered(tmp_path)
    data = orjson.loads(state_dir.admin_path.read_bytes())
    state_dir.admin_path.write_bytes(orjson.dumps({**data, "service_secret": "old"}))
    assert state_dir.load_admin() == admin_state()
    assert b"service_secret" not in admin_state().to_json()


def test_a_last_known_good_signed_before_revocations_still_loads(tmp_path: Path) -> None:
    state_dir = registered(tmp_path)
    state_dir.write_lkg(envelope())  # sign_view without revoked: as written before
    verified = state_dir.load_verified()
    assert verified is not None
    assert (verified.version, verified.revoked) == (3, frozenset())
    assert state_dir.load_last_known_good() == (3, VIEW)

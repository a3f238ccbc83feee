"""Seeds at rest: AES-256-GCM under a keyring file that rotates without losing old keys."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gatehouse.oath.errors import KeyringError, SeedError
from gatehouse.oath.seeds import Keyring, check_seed_length, generate_seed

SEED = bytes.fromhex("3132333435363738393031323334353637383930")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_seeds_are_160_bits_and_fresh() -> None:
    seeds = {generate_seed() for _ in range(50)}
    assert len(seeds) == 50
    assert {len(seed) for seed in seeds} == {20}


def test_seeds_under_128_bits_are_refused() -> None:
    check_seed_length(bytes(16))
    check_seed_length(bytes(64))
    with pytest.raises(SeedError, match=r"seed is 120 bits; at least 128 bits are needed"):
        check_seed_length(bytes(15))
    with pytest.raises(SeedError, match="seed is 0 bits"):
        check_seed_length(b"")


def test_the_key_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "secrets" / "oath-keys.json"
    old_umask = os.umask(0o022)
    try:
        ring = Keyring.load_or_create(path)
    finally:
        os.umask(old_umask)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    document = json.loads(path.read_text())
    assert document["current"] == ring.current
    assert list(document["keys"]) == [ring.current]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    again = Keyring.load_or_create(path)
    assert again.current == ring.current
    assert dict(again.keys) == dict(ring.keys)
    assert len(ring.keys[ring.current]) == 32


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    Keyring.load_or_create(tmp_path / "keys.json")
    assert _mode(tmp_path) == 0o755


def test_round_trip_hides_the_seed(tmp_path: Path) -> None:
    ring = Keyring.load_or_create(tmp_path / "keys.json")
    key_id, blob = ring.encrypt(SEED, b"serial-1")
    assert key_id == ring.current
    assert SEED not in blob
    assert len(blob) == 12 + len(SEED) + 16
    assert ring.decrypt(key_id, blob, b"serial-1") == SEED
    other_id, other_blob = ring.encrypt(SEED, b"serial-1")
    assert other_blob[:12] != blob[:12]  # a fresh nonce every time
    assert ring.decrypt(other_id, other_blob, b"serial-1") == SEED


def test_a_seed_does_not_open_under_another_serial_or_key(tmp_path: Path) -> None:
    ring = Keyring.load_or_create(tmp_path / "a.json")
    key_id, blob = ring.encrypt(SEED, b"serial-1")
    with pytest.raises(KeyringError, match="belongs to another token"):
        ring.decrypt(key_id, blob, b"serial-2")
    stranger = Keyring({key_id: bytes(32)}, key_id)
    with pytest.raises(KeyringError, match=f"does not decrypt under key '{key_id}'"):
        stranger.decrypt(key_id, blob, b"serial-1")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(KeyringError, match="altered"):
        ring.decrypt(key_id, tampered, b"serial-1")
    with pytest.raises(KeyringError, match="too short"):
        ring.decrypt(key_id, blob[:20], b"serial-1")
    with pytest.raises(KeyringError, match="seed key 'nope' is not in the keyring"):
        ring.decrypt("nope", blob, b"serial-1")


def test_rotation_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ring = Keyring.load_or_create(path)
    first = ring.current
    old_id, old_blob = ring.encrypt(SEED, b"s")
    second = ring.rotate()
    assert second != first
    assert ring.current == second
    new_id, new_blob = ring.encrypt(SEED, b"s")
    assert new_id == second
    assert ring.decrypt(old_id, old_blob, b"s") == SEED
    assert ring.decrypt(new_id, new_blob, b"s") == SEED
    on_disk = Keyring.load(path)
    assert on_disk.current == second
    assert set(on_disk.keys) == {first, second}
    assert on_disk.decrypt(old_id, old_blob, b"s") == SEED
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "keys.json"
    ]


def test_a_running_service_reads_a_key_rotated_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    service = Keyring.load_or_create(path)
    command = Keyring.load(path)
    new_id = command.rotate()
    key_id, blob = command.encrypt(SEED, b"s")
    assert key_id == new_id
    assert new_id not in service.keys
    assert service.decrypt(key_id, blob, b"s") == SEED
    assert service.current == new_id


def test_concurrent_rotations_lose_no_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = Keyring.load_or_create(path).current
    a, b = Keyring.load(path), Keyring.load(path)
    from_a = a.rotate()
    from_b = b.rotate()  # b's copy predates a's rotation; the file is re-read first
    assert set(Keyring.load(path).keys) == {first, from_a, from_b}
    assert Keyring.load(path).current == from_b


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    Keyring.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(KeyringError, match=r"readable by others \(mode 644\); chmod 600 it"):
        Keyring.load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ("[]", "expected an object"),
        ('{"version": 2, "current": "a", "keys": {}}', "version: expected 1"),
        ('{"version": 1, "current": "a", "keys": {}}', "keys: expected a non-empty object"),
        ('{"version": 1, "current": "a", "keys": {"a": "!!"}}', "keys.a: not base64"),
        ('{"version": 1, "current": "a", "keys": {"a": "AAAA"}}', "keys.a: 3 bytes, not 32"),
        (
            '{"version": 1, "current": "b", "keys": {"a": "' + "A" * 43 + '="}}',
            "current: 'b' is not one of the keys",
        ),
    ],
)
def test_malformed_key_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(KeyringError, match=message) as caught:
        Keyring.load(path)
    assert str(path) in str(caught.value)


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match=r"cannot read seed key file .*missing\.json"):
        Keyring.load(tmp_path / "missing.json")

"""Signed envelopes: round trip; tampering, another key or another service are refused;
key files are PEM with mode 0600."""

from __future__ import annotations

import base64
import copy
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from gatehouse.administration.errors import KeyFileError, SignatureInvalid
from gatehouse.administration.signing import (
    DOMAIN,
    generate_private_key,
    load_or_create_private_key,
    load_private_key,
    load_public_key,
    public_key_pem,
    save_private_key,
    sign_version,
    sign_view,
    signing_input,
    verify,
)

VIEWS: dict[str, dict[str, Any]] = {
    "ap1": {"access_point": {"id": "ap1", "workers": 2, "decision_timeout": 2.0}, "resources": []},
    "ps1": {"policy": {"id": "ps1", "decision_ttl": 30.0}, "rules": {"staff": {"users": ["ann"]}}},
}
CREATED = "2030-01-02T03:04:05Z"


@pytest.fixture(scope="module")
def key() -> Any:
    return generate_private_key()


@pytest.fixture(scope="module")
def envelopes(key: Any) -> dict[str, dict[str, Any]]:
    return dict(sign_version(key, 7, CREATED, VIEWS).envelopes)


def test_round_trip(key: Any, envelopes: dict[str, dict[str, Any]]) -> None:
    pem = public_key_pem(key)
    for service, envelope in envelopes.items():
        assert set(envelope) == {
            "version",
            "service",
            "created_at",
            "view",
            "revoked",
            "signature",
        }
        assert envelope["revoked"] == []
        verified = verify(pem, envelope, service=service)
        assert (verified.version, verified.service, verified.created_at) == (7, service, CREATED)
        assert verified.view == VIEWS[service]
        # As it travels: JSON bytes or text.
        assert verify(pem, orjson.dumps(envelope)).view == VIEWS[service]
        assert verify(pem, orjson.dumps(envelope).decode()).version == 7


def test_the_signature_covers_the_domain_and_canonical_json(key: Any) -> None:
    envelope = sign_version(key, 1, CREATED, {"ap1": {"b": 1, "a": 2}}).envelopes["ap1"]
    signed = signing_input(1, "ap1", CREATED, {"a": 2, "b": 1}, [])
    assert signed == DOMAIN + (
        b'{"created_at":"2030-01-02T03:04:05Z","revoked":[],"service":"ap1","version":1,'
        b'"view":{"a":2,"b":1}}'
    )
    key.public_key().verify(base64.b64decode(envelope["signature"]), signed)


def tampered(envelope: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    copied = copy.deepcopy(envelope)
    if field == "view":
        copied["view"]["access_point"]["workers"] = value
    else:
        copied[field] = value
    return copied


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("view", 3),
        ("version", 8),
        ("version", 6),
        ("service", "ap2"),
        ("created_at", "2031-01-01T00:00:00Z"),
    ],
)
def test_tampering_is_refused(
    key: Any, envelopes: dict[str, dict[str, Any]], field: str, value: Any
) -> None:
    with pytest.raises(SignatureInvalid, match="does not verify with Admin's key"):
        verify(public_key_pem(key), tampered(envelopes["ap1"], field, value))


def test_a_float_turned_int_is_tampering(key: Any, envelopes: dict[str, dict[str, Any]]) -> None:
    envelope = copy.deepcopy(envelopes["ap1"])
    envelope["view"]["access_point"]["decision_timeout"] = 2
    with pytest.raises(SignatureInvalid):
        verify(public_key_pem(key), envelope)


def test_an_envelope_from_another_service_is_refused(
    key: Any, envelopes: dict[str, dict[str, Any]]
) -> None:
    with pytest.raises(SignatureInvalid, match="addressed to 'ps1', not 'ap1'"):
        verify(public_key_pem(key), envelopes["ps1"], service="ap1")


def test_another_key_is_refused(envelopes: dict[str, dict[str, Any]]) -> None:
    other = public_key_pem(generate_private_key())
    with pytest.raises(SignatureInvalid, match="version 7 for 'ap1' does not verify"):
        verify(other, envelopes["ap1"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e.pop("signature"), r"missing \['signature'\]"),
        (lambda e: e.update(extra=1), r"unexpected \['extra'\]"),
        (lambda e: e.update(signature="***"), "not base64"),
        (lambda e: e.update(signature=base64.b64encode(b"x" * 63).decode()), "63 bytes, not 64"),
        (lambda e: e.update(version="7"), "version is not a positive integer"),
        (lambda e: e.update(version=True), "version is not a positive integer"),
        (lambda e: e.update(version=0), "version is not a positive integer"),
        (lambda e: e.update(view=[]), "view is not an object"),
        (lambda e: e.update(service=None), "service is not a string"),
    ],
)
def test_malformed_envelopes_are_refused(
    key: Any, envelopes: dict[str, dict[str, Any]], mutate: Any, message: str
) -> None:
    envelope = copy.deepcopy(envelopes["ap1"])
    mutate(envelope)
    with pytest.raises(SignatureInvalid, match=message):
        verify(public_key_pem(key), envelope)


def test_not_json_is_refused(key: Any) -> None:
    with pytest.raises(SignatureInvalid, match="not JSON"):
        verify(public_key_pem(key), b"{nope")
    with pytest.raises(SignatureInvalid, match="not a JSON object"):
        verify(public_key_pem(key), b"[1]")


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "admin-signing.pem"
    key = load_or_create_private_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_or_create_private_key(path)
    assert public_key_pem(again) == public_key_pem(key)
    assert load_public_key(public_key_pem(key)).public_bytes_raw() == (
        key.public_key().public_bytes_raw()
    )
    assert public_key_pem(key).startswith("-----BEGIN PUBLIC KEY-----")
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_saving_replaces_a_key_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("old")
    path.chmod(0o644)
    key = generate_private_key()
    save_private_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public_key_pem(load_private_key(path)) == public_key_pem(key)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    save_private_key(generate_private_key(), path)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match=r"readable by others \(mode 640\); chmod 600"):
        load_private_key(path)


def test_broken_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read signing key"):
        load_private_key(tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM key"):
        load_private_key(garbage)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key("nope")


def test_other_key_types_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_private_key(path)
    public = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_public_key(public)


def test_versions_start_at_one(key: Any) -> None:
    with pytest.raises(ValueError, match="versions start at 1"):
        sign_version(key, 0, CREATED, VIEWS)


def test_revoked_serials_are_signed_with_the_rest(key: Any) -> None:
    pem = public_key_pem(key)
    signed = sign_version(key, 3, CREATED, {"ap1": {}}, revoked={0xABC, 17}).envelopes["ap1"]
    assert signed["revoked"] == ["11", "abc"]
    assert verify(pem, signed).revoked == {0xABC, 17}
    tampered = {**signed, "revoked": ["11"]}
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify(pem, tampered)
    with pytest.raises(SignatureInvalid, match="revoked is not a list"):
        verify(pem, {**signed, "revoked": ["xyz"]})


def test_an_envelope_signed_before_revocations_still_verifies(key: Any) -> None:
    """Last-known-good files written before revocations were published keep loading."""
    pem = public_key_pem(key)
    old = sign_view(key, 2, "ap1", CREATED, {"a": 1})
    assert "revoked" not in old
    verified = verify(pem, old, service="ap1")
    assert (verified.version, verified.revoked) == (2, frozenset())
    with pytest.raises(SignatureInvalid, match="does not verify"):
        verify(pem, {**old, "revoked": []})  # a list added afterwards is not Admin's

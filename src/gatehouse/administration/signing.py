"""Ed25519 signatures over published configuration views (RFC 8032, via ``cryptography``).

Every service gets its view in a signed envelope::

    {"version": 7, "service": "ap1", "created_at": "2030-01-02T03:04:05Z",
     "view": {...}, "signature": "<base64 of 64 bytes>"}

Since the internal CA, an envelope also carries ``"revoked": ["<hex serial>", ...]``, the
serial numbers of every internal certificate revoked and not yet expired, signed with the
rest; an envelope without it (signed before) still verifies and revokes nothing.

The signature covers ``DOMAIN`` followed by the canonical JSON (:mod:`.canonical`) of the
envelope without ``signature``, so the version number, the service id and the time are as
protected as the view: an envelope cannot be replayed to another service or passed off as
another version. ``DOMAIN`` keeps these signatures from meaning anything else should Admin's
key ever sign other documents.

The private key is a PEM (PKCS #8) file of mode 0600; a key file others can read is refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatehouse.administration.canonical import NotCanonical, canonical_json, timestamp
from gatehouse.administration.errors import KeyFileError, SignatureInvalid

DOMAIN = b"gatehouse signed config view v1\n"
ENVELOPE_FIELDS = frozenset({"version", "service", "created_at", "view", "signature"})
#: Optional: absent from envelopes signed before revocations were published.
OPTIONAL_FIELDS = frozenset({"revoked"})
#: At most this many revoked serials in one envelope.
MAX_REVOKED = 100_000
_HEX_SERIAL = re.compile(r"[0-9a-f]{1,40}\Z")
SIGNATURE_BYTES = 64

__all__ = [
    "DOMAIN",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "SignedVersion",
    "VerifiedView",
    "generate_private_key",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "public_key_pem",
    "revoked_list",
    "save_private_key",
    "sign_version",
    "sign_view",
    "signing_input",
    "timestamp",
    "verify",
]


@dataclass(frozen=True, slots=True)
class SignedVersion:
    """One published version: a signed envelope per service, and the key that signed them."""

    version: int
    created_at: str
    public_key: str
    envelopes: Mapping[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class VerifiedView:
    """What a verified envelope says."""

    version: int
    service: str
    created_at: str
    view: dict[str, Any]
    #: Serial numbers of the revoked internal certificates (empty for an older envelope).
    revoked: frozenset[int] = frozenset()


# Keys


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo): what services are given to verify."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Parse a PEM public key; anything but Ed25519 is refused with :class:`KeyFileError`."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"not an Ed25519 public key ({type(key).__name__})")
    return key


def save_private_key(key: Ed25519PrivateKey, path: str | Path) -> None:
    """Write the key as PEM, mode 0600, atomically (a crash leaves the old file or none)."""
    path = Path(path)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)  # O_CREAT's mode does not apply to an existing file
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write signing key {path}: {exc.strerror}") from None


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read the signing key; a file that group or others may read is refused."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read signing key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise KeyFileError(
            f"signing key {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"signing key {path} is not an unencrypted PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"signing key {path} is not an Ed25519 key ({type(key).__name__})")
    return key


def load_or_create_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The key in ``path``, generated and saved first when the file does not exist."""
    path = Path(path)
    if not path.exists():
        save_private_key(generate_private_key(), path)
    return load_private_key(path)


# Signing and verifying


def signing_input(
    version: int,
    service: str,
    created_at: str,
    view: Mapping[str, Any],
    revoked: list[str] | None = None,
) -> bytes:
    """The exact bytes signed for one envelope (``revoked`` None: an envelope without the
    field, as signed before revocations were published)."""
    document: dict[str, Any] = {
        "version": version,
        "service": service,
        "created_at": created_at,
        "view": view,
    }
    if revoked is not None:
        document["revoked"] = revoked
    return DOMAIN + canonical_json(document)


def revoked_list(serials: Collection[int]) -> list[str]:
    """Serial numbers as an envelope lists them: lowercase hex, sorted."""
    return sorted(f"{serial:x}" for serial in serials)


def sign_view(
    private_key: Ed25519PrivateKey,
    version: int,
    service: str,
    created_at: str,
    view: Mapping[str, Any],
    revoked: Collection[int] | None = None,
) -> dict[str, Any]:
    """One service's signed envelope; ``revoked``: the revoked certificates' serials."""
    listed = None if revoked is None else revoked_list(revoked)
    signature = private_key.sign(signing_input(version, service, created_at, view, listed))
    envelope: dict[str, Any] = {
        "version": version,
        "service": service,
        "created_at": created_at,
        "view": dict(view),
    }
    if listed is not None:
        envelope["revoked"] = listed
    envelope["signature"] = base64.b64encode(signature).decode("ascii")
    return envelope


def sign_version(
    private_key: Ed25519PrivateKey,
    version: int,
    created_at: str,
    views: Mapping[str, Mapping[str, Any]],
    revoked: Collection[int] = (),
) -> SignedVersion:
    """Sign every service's view (``views``: service id -> view) as version ``version``,
    each with the serials of the ``revoked`` certificates."""
    if version < 1:
        raise ValueError(f"versions start at 1, not {version}")
    envelopes = {
        service: sign_view(private_key, version, service, created_at, view, revoked)
        for service, view in views.items()
    }
    return SignedVersion(version, created_at, public_key_pem(private_key), envelopes)


def verify(
    public_key: str | bytes | Ed25519PublicKey,
    signed: Mapping[str, Any] | str | bytes,
    *,
    service: str | None = None,
) -> VerifiedView:
    """Check an envelope (as JSON text or parsed) and return what it says.

    Args:
        public_key: Admin's public key (PEM or loaded).
        signed: the envelope.
        service: when given, the envelope must be addressed to this service.

    Raises:
        SignatureInvalid: malformed, signed by another key, altered, or for another service.
    """
    key = public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
    envelope = _parse_envelope(signed)
    try:
        signature = base64.b64decode(envelope["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("signature is not base64") from None
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureInvalid(f"signature is {len(signature)} bytes, not {SIGNATURE_BYTES}")
    version, name, created_at, view = (
        envelope["version"],
        envelope["service"],
        envelope["created_at"],
        envelope["view"],
    )
    listed = envelope.get("revoked")
    try:
        key.verify(signature, signing_input(version, name, created_at, view, listed))
    except (InvalidSignature, NotCanonical):
        raise SignatureInvalid(
            f"signature of version {version} for {name!r} does not verify with Admin's key"
        ) from None
    if service is not None and name != service:
        raise SignatureInvalid(f"version {version} is addressed to {name!r}, not {service!r}")
    revoked = frozenset(int(serial, 16) for serial in listed or ())
    return VerifiedView(version, name, created_at, view, revoked)


def _parse_envelope(signed: Mapping[str, Any] | str | bytes) -> Mapping[str, Any]:
    if isinstance(signed, str | bytes):
        try:
            signed = orjson.loads(signed)
        except orjson.JSONDecodeError as exc:
            raise SignatureInvalid(f"envelope is not JSON: {exc}") from None
    if not isinstance(signed, Mapping):
        raise SignatureInvalid("envelope is not a JSON object")
    fields = set(signed)
    if not ENVELOPE_FIELDS <= fields <= ENVELOPE_FIELDS | OPTIONAL_FIELDS:
        known = ENVELOPE_FIELDS | OPTIONAL_FIELDS
        extra, absent = sorted(fields - known), sorted(ENVELOPE_FIELDS - fields)
        raise SignatureInvalid(f"envelope fields: unexpected {extra}, missing {absent}")
    if "revoked" in signed:
        listed = signed["revoked"]
        if (
            not isinstance(listed, list)
            or len(listed) > MAX_REVOKED
            or not all(isinstance(s, str) and _HEX_SERIAL.match(s) for s in listed)
        ):
            raise SignatureInvalid("envelope revoked is not a list of hexadecimal serial numbers")
    checks = (
        ("version", int, "a positive integer"),
        ("service", str, "a string"),
        ("created_at", str, "a string"),
        ("view", dict, "an object"),
        ("signature", str, "a string"),
    )
    for name, kind, what in checks:
        value = signed[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SignatureInvalid(f"envelope {name} is not {what}")
    if signed["version"] < 1:
        raise SignatureInvalid("envelope version is not a positive integer")
    return signed

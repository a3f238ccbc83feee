"""Token seeds at rest: AES-256-GCM under a keyring kept in a file, never in the database.

Each encrypted seed names the key id it was sealed with, so ``gatehouse tokens rekey`` can add a
new current key (:meth:`Keyring.rotate`) and re-encrypt rows one by one while every row still
decrypts under the key it names: rotation without downtime. The caller passes the token serial
as associated data, so a ciphertext copied onto another token's row does not decrypt.

The key file is JSON, mode 0600, written atomically (temporary file + ``os.replace``)::

    {"version": 1, "current": "20261206-3fa2c1", "keys": {"20261206-3fa2c1": "<base64 32 bytes>"}}
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import time
from collections.abc import Container, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gatehouse.oath.errors import KeyringError, SeedError

#: Seeds are generated at 160 bits (RFC 4226 section 4 recommends it) and refused under 128.
#: The installation's seed keyring: ``HOME/oath-seeds.key`` unless configured elsewhere.
KEYRING_FILE = "oath-seeds.key"
SEED_BYTES = 20
MIN_SEED_BYTES = 16
KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
_FORMAT_VERSION = 1


def generate_seed() -> bytes:
    """A fresh 160-bit seed from the operating system's CSPRNG."""
    return secrets.token_bytes(SEED_BYTES)


def check_seed_length(seed: bytes) -> None:
    """Refuse a seed under 128 bits: it would make the token's codes guessable offline."""
    if len(seed) < MIN_SEED_BYTES:
        raise SeedError(
            f"seed is {len(seed) * 8} bits; at least {MIN_SEED_BYTES * 8} bits are needed "
            f"({SEED_BYTES * 8} recommended)"
        )


class Keyring:
    """Named AES-256 keys, one of them current (used to encrypt); all of them decrypt."""

    def __init__(self, keys: Mapping[str, bytes], current: str, path: Path | None = None) -> None:
        if current not in keys:
            raise KeyringError(f"current key {current!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES:
                raise KeyringError(f"key {key_id!r} is {len(key)} bytes, not {KEY_BYTES}")
        self._keys = dict(keys)
        self._current = current
        self.path = path

    @property
    def current(self) -> str:
        """The id new seeds are encrypted under."""
        return self._current

    @property
    def keys(self) -> Mapping[str, bytes]:
        """Every key id and key (read-only view)."""
        return MappingProxyType(self._keys)

    @classmethod
    def load_or_create(cls, path: str | Path) -> Keyring:
        """The keyring in ``path``; a new one with a single key when the file does not exist.

        The directory is created 0700 when missing. Two processes starting at once keep the
        same key: the file is published with a hard link, which fails if another got there first.
        """
        path = Path(path)
        if not path.exists():
            _make_private_directory(path.parent)
            key_id = _new_key_id(())
            ring = cls({key_id: AESGCM.generate_key(bit_length=256)}, key_id, path)
            temporary = _write_temporary(path, ring._document())
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        return cls.load(path)

    @classmethod
    def load(cls, path: str | Path) -> Keyring:
        """Read the key file; one that group or others may read is refused."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringError(f"cannot read seed key file {path}: {exc.strerror}") from None
        if mode & 0o077:
            raise KeyringError(
                f"seed key file {path} is readable by others (mode {mode & 0o777:o}); chmod 600 it"
            )
        keys, current = _parse(text, path)
        return cls(keys, current, path)

    def encrypt(self, seed: bytes, aad: bytes) -> tuple[str, bytes]:
        """Seal ``seed`` under the current key, bound to ``aad`` (the token serial).

        Returns:
            The key id to store next to the blob, and the blob: nonce (12 bytes) || ciphertext.
        """
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self._keys[self._current]).encrypt(nonce, seed, aad)
        return self._current, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes, aad: bytes) -> bytes:
        """Open a blob from :meth:`encrypt`.

        A key id this process does not know yet (another process rotated) makes it re-read the
        key file once before giving up.

        Raises:
            KeyringError: unknown key id, a truncated blob, or a blob that does not authenticate
                under that key and ``aad`` (wrong key, another token's row, or tampering).
        """
        if key_id not in self._keys and self.path is not None:
            self._refresh()
        key = self._keys.get(key_id)
        if key is None:
            where = f" {self.path}" if self.path else ""
            raise KeyringError(f"seed key {key_id!r} is not in the keyring{where}")
        if len(blob) < NONCE_BYTES + _TAG_BYTES:
            raise KeyringError(f"encrypted seed is {len(blob)} bytes, too short to be one")
        try:
            return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise KeyringError(
                f"encrypted seed does not decrypt under key {key_id!r}: it was altered, or it "
                "belongs to another token"
            ) from None

    def rotate(self) -> str:
        """Add a new key and make it current; old keys stay so their rows still decrypt.

        With a file, the file is re-read under a lock first, so a concurrent rotation's key is
        kept rather than overwritten. Returns the new key id.
        """
        with self._locked():
            if self.path is not None:
                self._keys, self._current = _parse(self.path.read_text(encoding="utf-8"), self.path)
            key_id = _new_key_id(self._keys)
            self._keys[key_id] = AESGCM.generate_key(bit_length=256)
            self._current = key_id
            if self.path is not None:
                temporary = _write_temporary(self.path, self._document())
                os.replace(temporary, self.path)
        return key_id

    def _refresh(self) -> None:
        assert self.path is not None
        try:
            keys, current = _parse(self.path.read_text(encoding="utf-8"), self.path)
        except OSError as exc:
            raise KeyringError(f"cannot read seed key file {self.path}: {exc.strerror}") from None
        self._keys.update(keys)
        self._current = current

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _document(self) -> str:
        keys = {k: base64.b64encode(v).decode("ascii") for k, v in sorted(self._keys.items())}
        body = {"version": _FORMAT_VERSION, "current": self._current, "keys": keys}
        return json.dumps(body, indent=2) + "\n"


def _parse(text: str, path: Path) -> tuple[dict[str, bytes], str]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise KeyringError(f"seed key file {path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KeyringError(f"seed key file {path}: expected an object with current and keys")
    if document.get("version") != _FORMAT_VERSION:
        raise KeyringError(f"seed key file {path}: version: expected {_FORMAT_VERSION}")
    raw_keys = document.get("keys")
    current = document.get("current")
    if not isinstance(raw_keys, dict) or not raw_keys:
        raise KeyringError(f"seed key file {path}: keys: expected a non-empty object")
    keys: dict[str, bytes] = {}
    for key_id, encoded in raw_keys.items():
        try:
            keys[key_id] = base64.b64decode(str(encoded), validate=True)
        except binascii.Error:
            raise KeyringError(f"seed key file {path}: keys.{key_id}: not base64") from None
        if len(keys[key_id]) != KEY_BYTES:
            raise KeyringError(
                f"seed key file {path}: keys.{key_id}: {len(keys[key_id])} bytes, not {KEY_BYTES}"
            )
    if not isinstance(current, str) or current not in keys:
        raise KeyringError(f"seed key file {path}: current: {current!r} is not one of the keys")
    return keys, current


def _new_key_id(taken: Container[str]) -> str:
    """A unique id: the creation date (so operators see a key's age) and 24 random bits."""
    while True:
        key_id = f"{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(3)}"
        if key_id not in taken:
            return key_id


def _make_private_directory(directory: Path) -> None:
    if directory.exists():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # mkdir's mode is filtered by the umask


def _write_temporary(path: Path, text: str) -> Path:
    """``text`` in a fresh 0600 file next to ``path``, flushed to disk; the caller publishes it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise KeyringError(f"cannot write seed key file {path}: {exc.strerror}") from None
    return temporary

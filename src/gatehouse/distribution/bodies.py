"""Message bodies at rest: subject and text sealed together with AES-256-GCM under the outbox
key file (``HOME/outbox.key``, 0600, created if missing), never in the database in clear.

The key file has the format of the OATH seed keyring (:class:`gatehouse.oath.seeds.Keyring`,
reused: named keys, one current, rotation without downtime). The message id is the associated
data, so a ciphertext copied onto another message's row does not open.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gatehouse.oath.errors import KeyringError
from gatehouse.oath.seeds import Keyring

__all__ = ["KEY_FILE", "Body", "BodyKeys", "KeyringError"]

#: The installation's outbox key file unless ``outbox_keyring`` says otherwise.
KEY_FILE = "outbox.key"


@dataclass(frozen=True, slots=True)
class Body:
    subject: str
    text: str = field(repr=False)


class BodyKeys:
    """Seals and opens bodies under one keyring."""

    def __init__(self, ring: Keyring) -> None:
        self.ring = ring

    @classmethod
    def load_or_create(cls, path: Path) -> BodyKeys:
        """Raises :class:`KeyringError` when the file cannot be read, made, or is unsafe."""
        try:
            return cls(Keyring.load_or_create(path))
        except OSError as error:
            raise KeyringError(f"outbox key file {path}: {error.strerror}") from None
        except KeyringError as error:  # worded for the OATH seeds it was made for
            raise KeyringError(str(error).replace("seed key", "outbox key")) from None

    def seal(self, message_id: str, body: Body) -> tuple[str, bytes]:
        """The key id and ciphertext of ``body`` for the message ``message_id``."""
        plain = orjson.dumps({"subject": body.subject, "text": body.text})
        return self.ring.encrypt(plain, message_id.encode("ascii"))

    def open(self, message_id: str, key_id: str, blob: bytes) -> Body:
        """Raises :class:`KeyringError` (unknown key, altered or moved ciphertext)."""
        plain = self.ring.decrypt(key_id, blob, message_id.encode("ascii"))
        try:
            data = orjson.loads(plain)
            return Body(str(data["subject"]), str(data["text"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise KeyringError(f"message {message_id}: the body is not a sealed body") from None

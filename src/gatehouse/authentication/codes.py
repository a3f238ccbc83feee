"""One-time codes sent out of band (``email_otp``, ``sms_otp``): the pure parts.

A code is ``length`` decimal digits from the operating system's CSPRNG
(:func:`new_code`). What is stored of it (:mod:`gatehouse.authentication.code_store`) is a
keyed hash, HMAC-SHA256 over the user, the method and the code, under a key derived with
HKDF-SHA256 from a key of the OATH seed keyring (``HOME/oath-seeds.key``, kept outside the
database and already the same file on every Authentication service sharing the OATH DB). The
row names the keyring key it used, so ``gatehouse tokens rekey`` never breaks a code under
way. With 6-8 digits a hash is only as strong as the key is secret: the database alone
(a backup, a replica) tells nothing about a code, the database and the key file do after at
most 10^8 HMACs, which is why the key stays out of the database.

The resend throttle (:func:`throttle`) is a sliding window over the times codes were sent to
the user: at most ``resend_max`` in any ``resend_window`` and none within
``resend_interval`` of the last.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gatehouse.authentication.config import CodeSettings

CodeMethod = Literal["email_otp", "sms_otp"]
METHODS: tuple[str, ...] = get_args(CodeMethod)
ChannelKind = Literal["email", "sms"]

#: The channel kinds tried per method, in order (the Distribution service skips a kind whose
#: recipient the user does not have).
CHANNELS: dict[str, list[ChannelKind]] = {
    "email_otp": ["email", "sms"],
    "sms_otp": ["sms", "email"],
}
#: HKDF's ``info``: this key hashes codes and nothing else (the keyring's keys seal seeds).
HASH_KEY_INFO = b"gatehouse one-time code hash v1"
SUBJECT = "Your sign-in code"


def new_code(length: int) -> str:
    """``length`` random decimal digits (leading zeros kept), uniform: ``secrets.randbelow``."""
    if not 6 <= length <= 8:
        raise ValueError("a code has 6-8 digits")
    return f"{secrets.randbelow(10**length):0{length}d}"


def hash_key(keyring_key: bytes) -> bytes:
    """The code-hashing key derived from one seed keyring key (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HASH_KEY_INFO).derive(
        keyring_key
    )


def code_hash(key: bytes, username: str, method: str, code: str) -> bytes:
    """HMAC-SHA256 of the code, bound to its user and method (a row's hash is worthless for
    anyone else's)."""
    message = b"\0".join((username.encode(), method.encode(), code.encode()))
    return hmac.new(key, message, hashlib.sha256).digest()


def matches(key: bytes, username: str, method: str, code: str, stored: bytes) -> bool:
    return hmac.compare_digest(code_hash(key, username, method, code), stored)


def well_formed(code: str, length: int) -> bool:
    return code.isascii() and code.isdigit() and 6 <= len(code) <= 8 and len(code) == length


def message_key(send_key: str) -> str:
    """The Distribution message's idempotency key for one send: derived from the caller's key
    (so a retry of the send, on any Authentication service, submits with the same key and
    never makes a second message) but not equal to it."""
    digest = hashlib.sha256(b"gatehouse code message\0" + send_key.encode()).digest()
    return "code-" + base64.urlsafe_b64encode(digest[:24]).decode().rstrip("=")


def message_text(code: str, lifetime: float) -> str:
    minutes = max(1, round(lifetime / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return (
        f"Your sign-in code is {code}. It is valid for {minutes} {unit}.\n"
        "If you did not try to sign in, ignore this message and do not share the code."
    )


@dataclass(frozen=True, slots=True)
class Throttle:
    """What :func:`throttle` decided: ``allowed`` with the send times to store, or not with
    the seconds until the next send would be."""

    allowed: bool
    sends: tuple[float, ...]
    retry_after: float = 0.0


def throttle(sends: Sequence[float], now: float, settings: CodeSettings) -> Throttle:
    """Whether one more code may go to a user who was sent codes at ``sends`` (Unix times)."""
    window = settings.resend_window
    recent = sorted(t for t in sends if now - window < t <= now)
    waits: list[float] = []
    if recent and now - recent[-1] < settings.resend_interval:
        waits.append(recent[-1] + settings.resend_interval - now)
    if len(recent) >= settings.resend_max:
        waits.append(recent[-settings.resend_max] + window - now)
    if waits:
        return Throttle(False, tuple(recent), float(max(1, math.ceil(max(waits)))))
    kept = recent[-(settings.resend_max - 1) :] if settings.resend_max > 1 else []
    return Throttle(True, (*kept, now))


__all__ = [
    "CHANNELS",
    "METHODS",
    "SUBJECT",
    "CodeMethod",
    "Throttle",
    "code_hash",
    "hash_key",
    "matches",
    "message_key",
    "message_text",
    "new_code",
    "throttle",
    "well_formed",
]

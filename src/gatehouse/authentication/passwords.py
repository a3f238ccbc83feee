"""Password hashing with argon2id, the password policy, and generated passwords.

argon2 is deliberately slow and memory-hungry, so it runs in worker threads (never on the
event loop) and at most one hash per CPU at a time, which bounds memory to cores x memory_kib.
The checks waiting for a slot are bounded too (:meth:`Passwords.admission`): past
``max_waiting`` a check is refused at once with :class:`Overloaded`, so a login flood costs
a fixed amount of memory and gets fast answers instead of an ever longer queue.

Hashes are made by argon2-cffi (the reference implementation). A stored argon2id hash with one
lane (``p=1``, the default) is verified by libsodium (PyNaCl): the same algorithm and the same
encoded string (RFC 9106, PHC format), computed with the vector instructions the CPU has
(libsodium picks AVX-512, AVX2 or SSSE3 at run time), where argon2-cffi's wheels are built for
SSE2 only: about 0.6x the CPU per check on an AVX-512 machine (docs/benchmarks.md, "one
password check"). Hashes with several lanes, which libsodium does not compute, stay with
argon2-cffi. Every check of one configuration (right, wrong, unknown user's dummy) takes the
same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Iterator

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from nacl.bindings import crypto_pwhash_str_verify
from nacl.exceptions import InvalidkeyError

from gatehouse.authentication.config import PasswordHash
from gatehouse.errors import GatehouseError

log = logging.getLogger("gatehouse.authentication")

#: ASVS 5 (V6.2): at least 8 characters, at least 64 allowed; we allow up to 128.
MIN_LENGTH = 8
MAX_LENGTH = 128


class PasswordPolicyError(GatehouseError):
    """A new password that the policy refuses."""


class Overloaded(GatehouseError):
    """Too many password checks at once: every slot busy and the waiting line full."""


def check_policy(password: str) -> str:
    """Refuse passwords shorter than 8 or longer than 128 characters (Unicode code points)."""
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"password too short: at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"password too long: at most {MAX_LENGTH} characters")
    return password


def generate() -> str:
    """A random password of 24 URL-safe characters (144 bits)."""
    return secrets.token_urlsafe(18)


#: What libsodium's argon2id verifies (its limits, as argon2's reference: RFC 9106 §3.1): one
#: lane, version 1.3, an encoded string of at most 127 bytes.
_SODIUM_MAX_ENCODED = 127


def sodium_verifies(stored: str) -> bool:
    """Whether libsodium checks ``stored`` (else argon2-cffi does); raises
    :class:`InvalidHashError` when it is no argon2 hash at all."""
    params = extract_parameters(stored)
    return (
        params.type is Type.ID
        and params.version == 19
        and params.parallelism == 1
        and params.hash_len >= 16
        and params.salt_len >= 8
        and params.memory_cost >= 8
        and len(stored) <= _SODIUM_MAX_ENCODED
    )


class Passwords:
    """argon2id with the configured parameters."""

    def __init__(
        self, params: PasswordHash, max_concurrent: int | None = None, max_waiting: int = 64
    ) -> None:
        self.hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        slots = max_concurrent or os.cpu_count() or 1
        self._slots = asyncio.Semaphore(slots)
        #: Checks admitted at once: running plus waiting.
        self.capacity = slots + max_waiting
        self._admitted = 0
        self._dummy: str | None = None

    @property
    def admitted(self) -> int:
        return self._admitted

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of :attr:`capacity` places for a whole check (its database work too);
        raises :class:`Overloaded` at once when none is free."""
        if self._admitted >= self.capacity:
            raise Overloaded("too many password checks at once")
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    def hash_sync(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify_sync(self, stored: str, password: str) -> tuple[bool, str | None]:
        """``(ok, new_hash)``: new_hash is set when the stored hash used older parameters."""
        try:
            if sodium_verifies(stored):
                crypto_pwhash_str_verify(stored.encode(), password.encode())
            else:
                self.hasher.verify(stored, password)
        except (VerifyMismatchError, InvalidkeyError):
            return False, None
        except (InvalidHashError, VerificationError) as error:
            log.warning("unusable stored password hash (%s)", type(error).__name__)
            return False, None
        if self.hasher.check_needs_rehash(stored):
            return True, self.hasher.hash(password)
        return True, None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hash_sync, password)

    async def verify(self, stored: str, password: str) -> tuple[bool, str | None]:
        async with self._slots:
            return await asyncio.to_thread(self.verify_sync, stored, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verification, for users that do not exist."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        await self.verify(self._dummy, password)

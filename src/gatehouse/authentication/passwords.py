"""Password hashing with argon2id, the password policy, and generated passwords.

argon2 is deliberately slow and memory-hungry, so it runs in worker threads (never on the
event loop) and at most one hash per CPU at a time, which bounds memory to cores x memory_kib.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gatehouse.authentication.config import PasswordHash
from gatehouse.errors import GatehouseError

log = logging.getLogger("gatehouse.authentication")

#: ASVS 5 (V6.2): at least 8 characters, at least 64 allowed; we allow up to 128.
MIN_LENGTH = 8
MAX_LENGTH = 128


class PasswordPolicyError(GatehouseError):
    """A new password that the policy refuses."""


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


class Passwords:
    """argon2id with the configured parameters."""

    def __init__(self, params: PasswordHash, max_concurrent: int | None = None) -> None:
        self.hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(max_concurrent or os.cpu_count() or 1)
        self._dummy: str | None = None

    def hash_sync(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify_sync(self, stored: str, password: str) -> tuple[bool, str | None]:
        """``(ok, new_hash)``: new_hash is set when the stored hash used older parameters."""
        try:
            self.hasher.verify(stored, password)
        except VerifyMismatchError:
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

"""argon2id hashing, rehash on parameter change, the password policy."""

from __future__ import annotations

import asyncio

import pytest

from gatehouse.authentication.config import PasswordHash
from gatehouse.authentication.passwords import (
    PasswordPolicyError,
    Passwords,
    check_policy,
    generate,
)

DEFAULT = Passwords(PasswordHash())


def test_hash_is_argon2id_with_the_configured_parameters() -> None:
    stored = DEFAULT.hash_sync("correct horse")
    assert stored.startswith("$argon2id$v=19$m=47104,t=1,p=1$")
    assert DEFAULT.verify_sync(stored, "correct horse") == (True, None)
    assert DEFAULT.verify_sync(stored, "correct horsE") == (False, None)


def test_rehash_when_parameters_change() -> None:
    stored = DEFAULT.hash_sync("correct horse")
    stronger = Passwords(PasswordHash(memory_kib=65536, time_cost=2))
    ok, new_hash = stronger.verify_sync(stored, "correct horse")
    assert ok
    assert new_hash is not None
    assert new_hash.startswith("$argon2id$v=19$m=65536,t=2,p=1$")
    assert stronger.verify_sync(new_hash, "correct horse") == (True, None)
    assert stronger.verify_sync(stored, "wrong") == (False, None)


@pytest.mark.parametrize("stored", ["", "plain text", "$argon2id$v=19$m=1,t=1,p=1$bad", "$2b$12$x"])
def test_unusable_stored_hashes_never_match(stored: str) -> None:
    assert DEFAULT.verify_sync(stored, "anything") == (False, None)


def test_async_verify_and_dummy_run_in_threads() -> None:
    async def go() -> tuple[bool, str | None]:
        stored = await DEFAULT.hash("pw-123456")
        await DEFAULT.verify_dummy("whatever")
        return await DEFAULT.verify(stored, "pw-123456")

    assert asyncio.run(go()) == (True, None)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", "too short"),
        ("1234567", "too short"),
        ("x" * 129, "too long"),
    ],
)
def test_policy_refuses(password: str, problem: str) -> None:
    with pytest.raises(PasswordPolicyError, match=problem):
        check_policy(password)


@pytest.mark.parametrize("password", ["12345678", "x" * 128, "pässwörd", "correct horse battery"])
def test_policy_accepts(password: str) -> None:
    assert check_policy(password) == password


def test_generated_passwords_are_long_and_distinct() -> None:
    passwords = {generate() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == 24 and check_policy(p) for p in passwords)

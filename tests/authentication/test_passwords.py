"""argon2id hashing, rehash on parameter change, the password policy."""

from __future__ import annotations

import asyncio

import pytest
from argon2 import PasswordHasher, Type
from argon2.exceptions import VerifyMismatchError

from gatehouse.authentication import passwords
from gatehouse.authentication.config import PasswordHash
from gatehouse.authentication.passwords import (
    PasswordPolicyError,
    Passwords,
    check_policy,
    generate,
    sodium_verifies,
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


@pytest.mark.parametrize(
    ("memory_kib", "time_cost", "parallelism", "hash_len", "salt_len", "by_sodium"),
    [
        (47104, 1, 1, 32, 16, True),  # the default
        (19456, 2, 1, 32, 16, True),  # OWASP's other argon2id setting
        (8, 3, 1, 16, 8, True),  # the smallest libsodium computes
        (1024, 1, 1, 48, 16, True),
        (1024, 1, 1, 64, 32, False),  # longer than libsodium's 127-byte string: argon2-cffi
        (1024, 1, 2, 32, 16, False),  # two lanes: argon2-cffi
        (4096, 1, 4, 32, 16, False),
    ],
)
def test_libsodium_and_argon2_cffi_agree(
    monkeypatch: pytest.MonkeyPatch,
    memory_kib: int,
    time_cost: int,
    parallelism: int,
    hash_len: int,
    salt_len: int,
    by_sodium: bool,
) -> None:
    """A hash made by argon2-cffi is checked by libsodium when it has one lane, and both
    answer alike: the right password, a wrong one, one character off, the empty one."""
    maker = PasswordHasher(time_cost, memory_kib, parallelism, hash_len, salt_len, type=Type.ID)
    stored = maker.hash("correct horse ✓")
    assert sodium_verifies(stored) is by_sodium
    calls: list[bytes] = []
    real = passwords.crypto_pwhash_str_verify

    def counting(stored_bytes: bytes, password: bytes) -> bool:
        calls.append(password)
        return real(stored_bytes, password)

    monkeypatch.setattr(passwords, "crypto_pwhash_str_verify", counting)
    # Below the configuration's minimum, as a hash stored before it was raised may be.
    params = PasswordHash.model_construct(
        memory_kib=memory_kib, time_cost=time_cost, parallelism=parallelism
    )
    checker = Passwords(params)
    for password, right in [
        ("correct horse ✓", True),
        ("correct horse", False),
        ("correct horse ✔", False),
        ("", False),
    ]:
        ok, _ = checker.verify_sync(stored, password)
        assert ok is right, password
        try:
            cffi_ok = maker.verify(stored, password)
        except VerifyMismatchError:
            cffi_ok = False
        assert cffi_ok is right, password
    assert len(calls) == (4 if by_sodium else 0)


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

"""The Authentication config: ASVS minimums and the rate cap, errors with field paths."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gatehouse.authentication.config import AuthenticationConfig, failures_per_hour
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError
from tests.support.processes import GATEHOUSE, write_config


def problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate(AuthenticationConfig, data)
    return info.value.problems


def auth(**settings: object) -> dict[str, object]:
    return {"authentication": settings}


def test_defaults() -> None:
    settings = validate(AuthenticationConfig, {}).authentication
    assert settings.listen == "127.0.0.1:8201"
    assert settings.user_db is None
    assert (settings.lockout.account_max_failures, settings.lockout.account_window) == (5, 900.0)
    assert (settings.lockout.ip_max_failures, settings.lockout.ip_lock) == (50, 900.0)
    assert settings.password_hash.memory_kib == 47104
    assert failures_per_hour(5, 900, 900) == 10


def test_durations_and_urls_parse() -> None:
    settings = validate(
        AuthenticationConfig,
        auth(
            user_db="postgresql+asyncpg://gh@/gh?host=a:5432&host=b:5432",
            lockout={"account_window": "1h", "account_lock": "30m", "ip_lock": "90s"},
            password_hash={"memory_kib": 65536, "time_cost": 3},
        ),
    ).authentication
    assert (settings.lockout.account_window, settings.lockout.account_lock) == (3600.0, 1800.0)
    assert settings.lockout.ip_lock == 90.0


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            auth(password_hash={"memory_kib": 19456}),
            "authentication.password_hash.memory_kib",
            "at least 47104 KiB",
        ),
        (
            auth(password_hash={"parallelism": 4}),
            "authentication.password_hash.parallelism",
            "must be 1",
        ),
        (auth(password_hash={"time_cost": 0}), "authentication.password_hash.time_cost", ""),
        (
            auth(
                lockout={"account_max_failures": 10, "account_window": "1m", "account_lock": "1m"}
            ),
            "authentication.lockout.account_lock",
            "allow 300 failed attempts per hour on one account; ASVS allows at most 100",
        ),
        (
            auth(lockout={"account_max_failures": 60, "account_window": "5m"}),
            "authentication.lockout.account_lock",
            "allow 180 failed attempts per hour",
        ),
        (auth(lockout={"ip_window": "soon"}), "authentication.lockout.ip_window", "not a duration"),
        (
            auth(lockout={"account_max_failures": 0}),
            "authentication.lockout.account_max_failures",
            "",
        ),
        (auth(lockout={"max": 3}), "authentication.lockout.max", "unknown field"),
        (auth(user_db="mysql://x/y"), "authentication.user_db", "unsupported database URL"),
        (auth(listen="8201"), "authentication.listen", "not HOST:PORT"),
        (auth(id="Auth 1"), "authentication.id", "lowercase"),
        ({"auth": {}}, "auth", "unknown field"),
    ],
)
def test_errors_name_the_field(data: object, path: str, message: str) -> None:
    found = problems(data)
    assert [p for p, _ in found] == [path]
    assert message in found[0][1]


def test_the_cap_can_be_lifted_for_tests() -> None:
    lockout = {"insecure_no_rate_cap": True, "account_max_failures": 3, "account_lock": "1s"}
    settings = validate(AuthenticationConfig, auth(lockout=lockout)).authentication
    assert settings.lockout.account_lock == 1.0


def test_the_service_refuses_a_bad_config(tmp_path: Path) -> None:
    path = write_config(tmp_path / "auth.yaml", auth(password_hash={"memory_kib": 1024}))
    done = subprocess.run(
        [*GATEHOUSE, "authentication", "--config", str(path), "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"gatehouse: {path}: authentication.password_hash.memory_kib: at least 47104 KiB "
        "(46 MiB), the OWASP/ASVS minimum for argon2id"
    )

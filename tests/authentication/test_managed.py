"""The Authentication service following the Administration service
(``gatehouse authentication --state``).

Real processes on loopback: ``gatehouse administration`` (configured through its API) and
``gatehouse authentication``, which registers with a join token, starts from Admin's version
and applies a new lockout policy without a restart; logins are checked over HTTP as the
Policy service checks them. The swap itself is tested in-process at the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gatehouse.authentication.app import Service, restart_only_changes
from gatehouse.authentication.config import AuthenticationConfig, AuthenticationSettings
from gatehouse.errors import ConfigError
from gatehouse.storage.migrate import upgrade
from tests.authentication.conftest import add_user
from tests.authentication.http import call, verify
from tests.support.admin import RealAdmin, real_admin
from tests.support.processes import Service as Process
from tests.support.processes import free_port

FIXTURES = (real_admin,)

T = TypeVar("T")
PASSWORD = "correct horse battery staple"
WRONG = "wrong horse battery staple"


def sync(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def lockout(max_failures: int) -> dict[str, Any]:
    return {
        "insecure_no_rate_cap": True,
        "account_max_failures": max_failures,
        "account_window": "10m",
        "account_lock": "10m",
        "ip_max_failures": 1000,
    }


def installation(auth_port: int, user_db: str, max_failures: int, **extra: Any) -> dict[str, Any]:
    return {
        "services": [
            {
                "id": "ps1",
                "role": "policy",
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "node": "n1",
            },
            {
                "id": "auth1",
                "role": "authentication",
                "endpoint": f"http://127.0.0.1:{auth_port}",
                "node": "n1",
            },
        ],
        "policy_services": [{"id": "ps1", "authentication": ["auth1"]}],
        "databases": {"user_db": user_db},
        "authentication": {"lockout": lockout(max_failures), **extra},
    }


@pytest.fixture
def user_db(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'users.db'}"
    sync(upgrade(url, "user"))
    for name in ("alice", "bob"):
        add_user(url, name, PASSWORD)
    return url


@pytest.fixture
def auth_port() -> int:
    return free_port()


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.stop()


def start_auth(tmp_path: Path, port: int, admin: RealAdmin, started: list[Process]) -> Process:
    token = sync(admin.join_token("authentication"))
    args = [
        "authentication",
        "--state",
        str(tmp_path / "auth-state"),
        "--home",
        str(tmp_path / "auth-home"),
        "--join",
        admin.url,
        "--token",
        token,
        "--id",
        "auth1",
        "--endpoint",
        f"http://127.0.0.1:{port}",
    ]
    process = Process(args, tmp_path / "auth.log", "127.0.0.1", port)
    started.append(process)
    process.wait_ready(30)
    # Enrolled: it listens with mutual TLS; the test calls it as the Policy service does.
    process.tls_context = admin.client_context("policy", "ps1")  # type: ignore[attr-defined]
    return process


def attempts(auth: Process, username: str, client_ip: str, *passwords: str) -> list[str]:
    return [verify(auth, username, p, client_ip)["result"] for p in passwords]


def health(auth: Process) -> dict[str, Any]:
    status, raw, data = call(auth, "GET", "/internal/v1/health")
    assert status == 200, raw
    return data


def test_registers_and_applies_a_new_lockout_policy_live(
    real_admin: RealAdmin,
    tmp_path: Path,
    user_db: str,
    auth_port: int,
    started: list[Process],
) -> None:
    first = sync(real_admin.publish(installation(auth_port, user_db, max_failures=5)))
    auth = start_auth(tmp_path, auth_port, real_admin, started)
    sync(real_admin.reported(first, service_id="auth1"))
    # Version 1: five failures lock an account, so two do not.
    assert attempts(auth, "alice", "192.0.2.1", WRONG, WRONG, PASSWORD) == [
        "invalid",
        "invalid",
        "ok",
    ]

    second = sync(real_admin.publish(installation(auth_port, user_db, max_failures=2)))
    row = sync(real_admin.reported(second, service_id="auth1"))
    assert row["last_error"] is None
    # Version 2, same process: the second failure locks the account.
    assert attempts(auth, "bob", "192.0.2.2", WRONG, WRONG, PASSWORD) == [
        "invalid",
        "invalid",
        "locked",
    ]
    assert health(auth)["config"] == {
        "version": second,
        "connected": True,
        "admin_error": "",
        "refused": "",
    }
    # The same fields as every service's: the version Admin published, and where it came from.
    answer = health(auth)
    assert (answer["config_version"], answer["config_source"]) == (second, "admin")
    assert answer["config_version"] == sync(real_admin.service("auth1"))["running_version"]
    assert auth.proc.poll() is None  # never restarted


def test_a_changed_user_db_is_saved_and_waits_for_the_restart(
    real_admin: RealAdmin,
    tmp_path: Path,
    user_db: str,
    auth_port: int,
    started: list[Process],
) -> None:
    first = sync(real_admin.publish(installation(auth_port, user_db, max_failures=5)))
    auth = start_auth(tmp_path, auth_port, real_admin, started)
    sync(real_admin.reported(first, service_id="auth1"))
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    second = sync(real_admin.publish(installation(auth_port, other, max_failures=2)))
    sync(real_admin.reported(second, service_id="auth1"))
    # The lockout applies now; the users still come from the database it started with.
    assert attempts(auth, "bob", "192.0.2.3", WRONG, WRONG, PASSWORD) == [
        "invalid",
        "invalid",
        "locked",
    ]
    deadline = time.monotonic() + 5
    while "authentication.user_db: applied at the next start" not in auth.output():
        assert time.monotonic() < deadline, auth.output()
        time.sleep(0.05)


# --- the swap, in-process ---------------------------------------------------------------


def view(max_failures: int = 5, **settings: Any) -> dict[str, Any]:
    return {"authentication": {"lockout": lockout(max_failures), **settings}}


def make_service(tmp_path: Path) -> Service:
    settings = AuthenticationConfig.model_validate(view()).authentication
    return Service(settings, f"sqlite+aiosqlite:///{tmp_path / 'users.db'}")


def test_apply_swaps_the_rules_as_one_value(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    before = service.verifier.rules
    service.apply(2, view(max_failures=2))
    after = service.verifier.rules
    assert after is not before
    assert after.limits.account.max_failures == 2
    assert after.passwords is before.passwords  # same hash parameters: kept
    service.apply(3, view(password_hash={"time_cost": 2}))
    assert service.verifier.rules.passwords is not before.passwords
    assert service.verifier.rules.passwords.hasher.time_cost == 2
    assert before.limits.account.max_failures == 5  # what attempts under way still use
    asyncio.run(service.stop())


def test_apply_of_a_refused_view_keeps_the_running_rules(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    before = service.verifier.rules
    with pytest.raises(ConfigError):
        service.apply(2, view(password_hash={"memory_kib": 1024}))
    assert service.verifier.rules is before
    asyncio.run(service.stop())


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"lockout": lockout(3)}, []),
        ({"password_hash": {"time_cost": 3}}, []),
        ({"listen": "127.0.0.1:9999"}, ["authentication.listen"]),
        (
            {"user_db": "sqlite+aiosqlite:///x.db", "id": "auth9"},
            ["authentication.id", "authentication.user_db"],
        ),
    ],
)
def test_restart_only_changes(changes: dict[str, Any], expected: list[str]) -> None:
    started = AuthenticationSettings()
    assert restart_only_changes(started, AuthenticationSettings(**changes)) == expected

"""The Policy service following the Administration service (``gatehouse policy --state``).

Real processes on loopback: ``gatehouse administration`` (configured through its API) and
``gatehouse policy``, which registers with a join token, starts from Admin's version (or its
last-known-good one), and applies new versions without a restart. Decisions are asked over
HTTP exactly as an Access Point asks them. The swap itself (one runtime, built first) is
tested in-process at the end.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.policy.service import PolicyService, restart_only_changes
from tests.support.admin import RealAdmin, real_admin
from tests.support.processes import GATEHOUSE, Service, free_port

FIXTURES = (real_admin,)

T = TypeVar("T")
TOKEN = "managed-admin-token-0123456789"


def sync(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def eventually(
    check: Callable[[], bool], timeout: float, what: str, output: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}\n{output()}")
        time.sleep(0.05)


def installation(ps_port: int, resource_rules: dict[str, Any], **policy: Any) -> dict[str, Any]:
    """ps1 (at ``ps_port``) and auth1; resources ``app`` and ``pub``."""
    return {
        "services": [
            {
                "id": "ps1",
                "role": "policy",
                "endpoint": f"http://127.0.0.1:{ps_port}",
                "node": "n1",
            },
            {
                "id": "auth1",
                "role": "authentication",
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "node": "n1",
            },
        ],
        "policy_services": [{"id": "ps1", "authentication": ["auth1"], **policy}],
        "resources": [
            {"id": name, "path_prefix": f"/{name}", "backends": ["http://127.0.0.1:8000"]}
            for name in ("app", "pub")
        ],
        "resource_rules": resource_rules,
        "login": {"title": "Managed v1"},
    }


V1_RULES: dict[str, Any] = {"pub": "public"}  # app: authenticated (no entry)
V2_RULES: dict[str, Any] = {"pub": "public", "app": "public"}


class ManagedPolicy:
    """``gatehouse policy --state DIR`` (+ ``--join`` on its first start)."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp = tmp
        self.port = port
        self.state = tmp / "ps-state"
        self.home = tmp / "ps-home"
        self.process: Service | None = None
        self.starts = 0
        #: Enrolled, it listens with mutual TLS: the test calls it as an Access Point does.
        self.tls: ssl.SSLContext | None = None
        #: ... and its session admin API as the operator's command line does.
        self.operator_tls: ssl.SSLContext | None = None

    def start(self, *extra: str) -> ManagedPolicy:
        self.starts += 1
        args = ["policy", "--state", str(self.state), "--home", str(self.home), *extra]
        log = self.tmp / f"ps-{self.starts}.log"
        self.process = Service(args, log, "127.0.0.1", self.port)  # stopped even if not ready
        try:
            self.process.wait_ready(30)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{exc}; its output:\n{self.output()}") from None
        return self

    def join(self, admin: RealAdmin) -> ManagedPolicy:
        self.tls = admin.client_context("access_point", "ap1")
        self.operator_tls = admin.client_context("operator", "cli")
        token = sync(admin.join_token("policy"))
        endpoint = f"http://127.0.0.1:{self.port}"
        return self.start(
            "--join", admin.url, "--token", token, "--id", "ps1", "--endpoint", endpoint
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def output(self) -> str:
        return self.process.output() if self.process is not None else ""

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        conn: http.client.HTTPConnection
        tls = self.operator_tls if path.startswith("/internal/v1/sessions") else self.tls
        if tls is not None:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=tls)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def decision(self, resource: str) -> str:
        request = {
            "session": None,
            "resource": resource,
            "method": "GET",
            "path": f"/{resource}/page",
            "client_ip": "192.0.2.10",
            "headers": {},
            "ap": "ap1",
        }
        status, body = self.call("POST", "/internal/v1/decide", request)
        assert status == 200, body
        return str(json.loads(body)["decision"])

    def health(self) -> dict[str, Any]:
        status, body = self.call("GET", "/internal/v1/health")
        assert status == 200, body
        data: dict[str, Any] = json.loads(body)
        return data

    def login_page(self) -> str:
        status, body = self.call("GET", "/_gatehouse/login")
        assert status == 200, body
        return str(body)


@pytest.fixture
def policy(tmp_path: Path) -> Iterator[ManagedPolicy]:
    ps = ManagedPolicy(tmp_path, free_port())
    try:
        yield ps
    finally:
        ps.stop()


def reported(admin: RealAdmin, version: int, error: str | None = None, timeout: float = 5.0) -> Any:
    """Admin's row for ps1 once it reports ``version`` (and ``error``); waits longer than
    :meth:`RealAdmin.reported` when the agent may be backing off after an outage."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return sync(admin.reported(version, error, service_id="ps1"))
        except AssertionError:
            if time.monotonic() > deadline:
                raise


# --- following Admin --------------------------------------------------------------------


def test_registers_starts_from_admin_and_applies_a_new_version_live(
    real_admin: RealAdmin, policy: ManagedPolicy
) -> None:
    first = sync(real_admin.publish(installation(policy.port, V1_RULES)))
    policy.join(real_admin)
    assert policy.decision("app") == "authenticate"
    assert policy.decision("pub") == "allow"
    assert "Managed v1" in policy.login_page()
    reported(real_admin, first)
    assert (policy.state / "admin.json").exists()
    assert (policy.state / "lkg.json").exists()
    pid = policy.process.pid if policy.process else 0

    second = sync(
        real_admin.publish(
            {**installation(policy.port, V2_RULES), "login": {"title": "Managed v2"}}
        )
    )
    eventually(lambda: policy.decision("app") == "allow", 5.0, "app public", policy.output)
    assert "Managed v2" in policy.login_page()
    row = reported(real_admin, second)
    assert row["last_error"] is None
    assert policy.process is not None
    assert policy.process.pid == pid  # no restart
    answer = policy.health()
    assert answer["config"] == {
        "version": second,
        "connected": True,
        "admin_error": "",
        "refused": "",
    }
    # The same fields as every service's: the version Admin published, and where it came from.
    assert (answer["config_version"], answer["config_source"]) == (second, "admin")
    assert answer["config_version"] == sync(real_admin.service("ps1"))["running_version"]


def test_keeps_serving_without_admin_restarts_from_last_known_good_and_converges(
    real_admin: RealAdmin, policy: ManagedPolicy
) -> None:
    first = sync(real_admin.publish(installation(policy.port, V2_RULES)))
    policy.join(real_admin)
    reported(real_admin, first)
    assert policy.decision("app") == "allow"

    real_admin.kill()
    eventually(
        lambda: not policy.health()["config"]["connected"],
        10.0,
        "the service notices Admin is gone",
        policy.output,
    )
    assert policy.decision("app") == "allow"  # still serving version 1
    assert "Admin unreachable" in policy.health()["config"]["admin_error"]

    # A restart while Admin is down: only --state, from the last-known-good version.
    policy.stop()
    policy.start()
    assert policy.decision("app") == "allow"
    assert policy.decision("pub") == "allow"
    assert policy.health()["config"]["version"] == first
    assert "starting policy 'ps1' from its last-known-good configuration" in policy.output()

    # Admin returns; a new version makes the service converge (after its back-off).
    real_admin.start()
    second = sync(real_admin.publish(installation(policy.port, V1_RULES)))
    eventually(
        lambda: policy.decision("app") == "authenticate", 25.0, "version 2 applied", policy.output
    )
    reported(real_admin, second, timeout=10.0)


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    """The config agent renews the certificate (a short lifetime here) and the listener,
    built on the agent's credentials, shows the new one to new handshakes."""
    from cryptography import x509

    admin = RealAdmin(tmp_path / "admin", certificate_lifetime=4).start()
    policy = ManagedPolicy(tmp_path, free_port())
    try:
        first = sync(admin.publish(installation(policy.port, V1_RULES)))
        policy.join(admin)
        reported(admin, first)

        def served() -> int:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", policy.port, timeout=5, context=policy.tls
            )
            try:
                conn.connect()
                assert isinstance(conn.sock, ssl.SSLSocket)
                der = conn.sock.getpeercert(binary_form=True)
            finally:
                conn.close()
            assert der is not None
            return x509.load_der_x509_certificate(der).serial_number

        before = served()
        pid = policy.process.pid if policy.process else 0
        deadline = time.monotonic() + 8
        while served() == before:
            assert time.monotonic() < deadline, policy.output()
            time.sleep(0.2)
        assert policy.process is not None
        assert policy.process.pid == pid  # no restart
        assert policy.decision("pub") == "allow"
        assert "renewed the internal certificate" in policy.output()
    finally:
        policy.stop()
        admin.stop()


def test_a_version_the_service_cannot_use_is_refused_and_the_running_one_kept(
    real_admin: RealAdmin, policy: ManagedPolicy, tmp_path: Path
) -> None:
    """Admin's model accepts any ``admin_token_file`` (it cannot see the Policy node's files);
    the service refuses a version whose file it cannot read, and keeps the running one."""
    first = sync(real_admin.publish(installation(policy.port, V1_RULES)))
    policy.join(real_admin)
    reported(real_admin, first)
    missing = tmp_path / "no-such-token"
    second = sync(
        real_admin.publish(installation(policy.port, V2_RULES, admin_token_file=str(missing)))
    )
    row = reported(real_admin, first, f"version {second} could not be applied")
    assert "policy.admin_token_file: cannot read admin token file" in row["last_error"]
    assert policy.decision("app") == "authenticate"  # still version 1's rules
    status = policy.health()["config"]
    assert status["version"] == first
    assert "could not be applied" in status["refused"]
    assert policy.call("GET", "/internal/v1/sessions", token=TOKEN)[0] == 404  # API still off

    # The next good version applies, the token file included: the admin API turns on.
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    third = sync(
        real_admin.publish(installation(policy.port, V2_RULES, admin_token_file=str(token_file)))
    )
    reported(real_admin, third)
    assert policy.decision("app") == "allow"
    assert policy.call("GET", "/internal/v1/sessions", token=TOKEN)[0] == 200
    assert policy.call("GET", "/internal/v1/sessions", token="x" * 20)[0] == 401


def test_a_change_of_a_setting_read_at_start_is_saved_and_waits_for_the_restart(
    real_admin: RealAdmin, policy: ManagedPolicy
) -> None:
    first = sync(real_admin.publish(installation(policy.port, V1_RULES)))
    policy.join(real_admin)
    reported(real_admin, first)
    moved = {**installation(policy.port, V2_RULES), "login": {"portal_prefix": "/_moved/"}}
    second = sync(real_admin.publish(moved))
    reported(real_admin, second)  # accepted: the rest of it applies now
    assert policy.decision("app") == "allow"
    assert policy.call("GET", "/_gatehouse/login")[0] == 200  # the prefix it started with
    assert policy.call("GET", "/_moved/login")[0] == 404
    assert "login.portal_prefix: applied at the next start" in policy.output()

    policy.stop()
    policy.start()
    assert policy.call("GET", "/_moved/login")[0] == 200
    assert policy.call("GET", "/_gatehouse/login")[0] == 404


# --- the command line -------------------------------------------------------------------


def gatehouse(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEHOUSE_JOIN_TOKEN"}
    return subprocess.run(
        [*GATEHOUSE, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.mark.parametrize("command", ["policy", "authentication"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--config", "x.yaml", "--state", "STATE"], "give either --config FILE or --state DIR"),
        ([], "give either --config FILE or --state DIR"),
        (["--config", "x.yaml", "--join", "http://127.0.0.1:1"], "--join needs --state DIR"),
        (["--state", "STATE", "--join", "http://127.0.0.1:1"], "--join needs a join token"),
        (["--state", "STATE"], "holds no registration with Admin"),
    ],
)
def test_source_options_are_checked_with_a_one_line_error(
    command: str, options: list[str], message: str, tmp_path: Path
) -> None:
    state = str(tmp_path / "state")
    args = [state if option == "STATE" else option for option in options]
    done = gatehouse(command, *args, "--home", str(tmp_path / "home"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("gatehouse: ")]
    assert len(lines) == 1, done.stderr
    assert message in lines[0]


# --- the swap, in-process ---------------------------------------------------------------


def view(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "policy": {"authentication": ["http://127.0.0.1:1"]},
        "resources": {"app": None, "pub": "public"},
        "login": {"title": "one"},
    }
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return data


def make_service(tmp_path: Path) -> PolicyService:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    config = PolicyConfig.model_validate(view())
    return PolicyService(
        config, session_db=url, user_db=url, home=tmp_path, config_dir=tmp_path, version=1
    )


def test_apply_builds_a_whole_new_runtime_then_swaps_it_in(tmp_path: Path) -> None:
    service = make_service(tmp_path)

    published: list[dict[str, object]] = []
    service.hub.publish = published.append  # type: ignore[method-assign]

    async def scenario() -> None:
        before = service.runtime
        with before.checker.in_use():  # a login in flight on the old configuration
            await service.apply(
                2,
                view(
                    policy={"authentication": ["http://127.0.0.1:2"]},
                    resources={"app": "public", "pub": "public"},
                    sessions={"idle_timeout": 60, "absolute_timeout": 120},
                    login={"title": "two", "portal_prefix": "/_moved/"},
                ),
            )
            after = service.runtime
            assert after is not before
            assert after.version == 2
            # The Access Points are told to drop decisions made under the old rules.
            assert published == [{"type": "policy", "version": 2}]
            assert after.config.login.title == "two"
            assert after.portal.settings.title == "two"
            assert after.portal_prefix == "/_gatehouse/"  # read at start only
            assert after.sessions.timeouts.idle == 60
            assert after.portal.sessions is after.sessions is after.admin._sessions
            assert after.checker is not before.checker
            assert after.portal.checker is after.checker
            # The old runtime is untouched, and its client stays open while it is held.
            assert before.config.login.title == "one"
            await asyncio.sleep(0.05)
            assert not before.checker.client._closed
        await asyncio.sleep(0.05)
        assert before.checker.client._closed
        # Same Authentication endpoints: the client (and its connections) is kept.
        same = {"authentication": ["http://127.0.0.1:2"]}
        await service.apply(3, view(policy=same, login={"title": "three"}))
        assert service.runtime.checker is after.checker
        await service.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "bad",
    [
        view(resources={"app": {"rule": "nope"}}),  # the model refuses
        view(policy={"admin_token_file": "missing-token"}),  # a file it cannot read
        view(login={"csrf_key_file": "short.key"}),  # a key file too short
    ],
    ids=["model", "admin_token_file", "csrf_key_file"],
)
def test_apply_that_fails_keeps_the_running_runtime(tmp_path: Path, bad: dict[str, Any]) -> None:
    (tmp_path / "short.key").write_bytes(b"short")
    service = make_service(tmp_path)

    async def scenario() -> None:
        before = service.runtime
        with pytest.raises(ConfigError):
            await service.apply(2, bad)
        assert service.runtime is before
        await service.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"login": {"title": "x"}, "resources": {"app": "public"}}, []),
        ({"policy": {"listen": "127.0.0.1:9999"}}, ["policy.listen"]),
        ({"policy": {"session_db": "sqlite+aiosqlite:///x.db"}}, ["policy.session_db"]),
        (
            {"login": {"portal_prefix": "/p/"}, "policy": {"id": "ps9"}},
            ["policy.id", "login.portal_prefix"],
        ),
        ({"policy": {"admin_token_file": "t"}, "login": {"csrf_key_file": "k"}}, []),
    ],
)
def test_restart_only_changes(changes: dict[str, Any], expected: list[str]) -> None:
    started = PolicyConfig.model_validate(view())
    assert restart_only_changes(started, PolicyConfig.model_validate(view(**changes))) == expected

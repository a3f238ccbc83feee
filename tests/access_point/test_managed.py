"""The Access Point following the Administration service (``gatehouse access-point --state``).

First the agent's check from tables (what the model accepts but a worker cannot use), then
real processes on loopback: a real ``gatehouse administration``, the demo backend, and the AP
registering with a join token, serving Admin's versions, refusing one it cannot use, riding out
Admin's absence from its last-known-good, and its command-line errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import stat
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from gatehouse.access_point.managed import VIEW_FILE, ViewCheck, check_usable, write_view
from gatehouse.access_point.server import (
    Overrides,
    Worker,
    file_identity,
    listening_socket,
    load_published,
    read_config,
    read_published,
)
from gatehouse.administration.credentials import operator_context
from gatehouse.config.access_point import AccessPointConfig
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError
from gatehouse.internal.config_agent import ConfigAgent
from gatehouse.internal.lkg import atomic_write
from tests.access_point.test_lifecycle import alive, children, wait_workers
from tests.support.admin import RealAdmin, real_admin
from tests.support.ap_status import ap_status
from tests.support.http_wire import WireClient
from tests.support.processes import GATEHOUSE, Service, free_port, write_config

FIXTURES = (real_admin,)

T = TypeVar("T")


def sync(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# the agent's check ----------------------------------------------------------------------------


def ap_config(*resources: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"access_point": {"id": "ap1", **settings}, "resources": list(resources)}


def resource(name: str, backend: str = "http://127.0.0.1:9000", **extra: Any) -> dict[str, Any]:
    return {"id": name, "path_prefix": f"/{name}", "backends": [backend], **extra}


@pytest.fixture
def not_a_pem(tmp_path: Path) -> str:
    path = tmp_path / "garbage.pem"
    path.write_text("not a certificate\n")
    return str(path)


CHECKS: list[tuple[str, dict[str, Any], str | None]] = [
    ("plain http", ap_config(resource("app")), None),
    (
        "ca_file missing, https backend",
        ap_config(resource("app"), resource("tls", "https://b.example", ca_file="/no/such/ca.pem")),
        "resources[1].ca_file: cannot load /no/such/ca.pem: No such file or directory",
    ),
    (
        "ca_file missing, http backend (never loaded)",
        ap_config(resource("app", ca_file="/no/such/ca.pem")),
        None,
    ),
    (
        "ca_file missing, verification off (still loaded)",
        ap_config(resource("tls", "https://b.example", tls_verify=False, ca_file="/no/ca.pem")),
        "resources[0].ca_file: cannot load /no/ca.pem",
    ),
    (
        "ca_file not a PEM",
        ap_config(resource("tls", "https://b.example", ca_file="NOT_A_PEM")),
        "resources[0].ca_file: cannot load NOT_A_PEM-PATH",
    ),
    (
        "model refusal",
        ap_config(resource("app"), resource("app")),
        "duplicate resource id 'app'",
    ),
    ("status on loopback", ap_config(resource("app"), status_listen="127.0.0.1:8090"), None),
    (
        "plaintext status off loopback",
        ap_config(resource("app"), status_listen="0.0.0.0:8090"),
        "access_point.status_listen: 0.0.0.0 is not a loopback address",
    ),
]


@pytest.mark.parametrize(("document", "error"), [c[1:] for c in CHECKS], ids=[c[0] for c in CHECKS])
def test_view_check(document: dict[str, Any], error: str | None, not_a_pem: str) -> None:
    text = json.dumps(document).replace("NOT_A_PEM", not_a_pem)
    check = ViewCheck(Overrides())
    if error is None:
        assert isinstance(check(json.loads(text)), AccessPointConfig)
        return
    with pytest.raises(ConfigError) as caught:
        check(json.loads(text))
    message = str(caught.value)
    assert message.startswith("the published configuration: ")
    assert error.replace("NOT_A_PEM-PATH", not_a_pem) in message


def test_view_check_applies_the_overrides() -> None:
    check = ViewCheck(Overrides(listen=("127.0.0.1", 9999), workers=3))
    config = check(ap_config(resource("app"), listen="10.0.0.1:80", workers=1))
    assert (config.access_point.listen, config.access_point.workers) == ("127.0.0.1:9999", 3)


def test_view_check_takes_a_status_listener_off_loopback_with_credentials(
    tmp_path: Path,
) -> None:
    view = ap_config(resource("app"), status_listen="10.0.0.1:8090")
    assert ViewCheck(Overrides(internal_tls=tmp_path / "tls"))(view).access_point.status_listen
    with pytest.raises(ConfigError, match="not a loopback address"):
        ViewCheck(Overrides(), tmp_path)(view)
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "cert.pem").write_text("enrolled")
    assert ViewCheck(Overrides(), tmp_path)(view).access_point.status_listen == "10.0.0.1:8090"


def test_check_usable_has_no_side_effects_on_a_valid_config() -> None:
    config = validate(AccessPointConfig, ap_config(resource("app"), policy_services=["http://p"]))
    check_usable(config)  # no loop, no Decider, no connection: nothing to clean up


def test_the_json_view_file_reads_as_json(tmp_path: Path) -> None:
    # YAML 1.1 would read 1e-05 as the string "1e-05": the workers read .json files as JSON.
    document = ap_config(resource("app"), decision_timeout=1e-05)
    path = tmp_path / VIEW_FILE
    path.write_bytes(orjson.dumps(document))
    assert read_config(path).access_point.decision_timeout == 1e-05
    path.write_bytes(b"{")
    with pytest.raises(ConfigError, match="invalid JSON"):
        read_config(path)


def test_the_managed_file_carries_the_published_version_next_to_the_view(
    tmp_path: Path,
) -> None:
    path = tmp_path / VIEW_FILE
    write_view(path, 7, ap_config(resource("app"), decision_timeout=1e-05))
    version, config = read_published(path)
    assert (version, config.access_point.decision_timeout) == (7, 1e-05)
    assert orjson.loads(path.read_bytes())["published_version"] == 7
    # A plain AP configuration is not a published view: a managed worker refuses it.
    path.write_bytes(orjson.dumps(ap_config(resource("app"))))
    with pytest.raises(ConfigError, match="published_version: missing"):
        read_published(path)
    path.write_bytes(orjson.dumps({"published_version": 3, "view": {"resources": 1}}))
    with pytest.raises(ConfigError, match="resources"):
        read_published(path)


# the worker's side, in process -----------------------------------------------------------------


def write_view_file(
    path: Path, version: int, *names: str, port: int, status: int | None = None, **extra: Any
) -> None:
    """What the supervisor's agent writes: the view published as ``version`` (with a status
    listener on ``status`` when given)."""
    settings: dict[str, Any] = {"listen": f"127.0.0.1:{port}"}
    if status is not None:
        settings["status_listen"] = f"127.0.0.1:{status}"
    document = ap_config(*(resource(n, **extra) for n in names), **settings)
    atomic_write(path, orjson.dumps({"published_version": version, "view": document}))


def managed_worker(path: Path) -> Worker:
    loaded = file_identity(path)
    version, config = load_published(path, Overrides())
    return Worker(path, Overrides(), config, loaded, published_version=version)


def serve_briefly(
    worker: Worker,
    port: int,
    then: Callable[[], Coroutine[Any, Any, None]],
    status: int | None = None,
) -> None:
    """Run ``worker`` on ``port`` (its status listener on ``status``), await ``then()``, stop
    it with SIGTERM as a supervisor would."""

    async def scenario() -> None:
        status_sock = None if status is None else listening_socket("127.0.0.1", status, False)
        sock = listening_socket("127.0.0.1", port, False)
        serving = asyncio.create_task(worker.serve(sock, None, status_sock))
        try:
            await asyncio.wait_for(then(), 5)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's loop handles it
            await asyncio.wait_for(serving, 5)

    asyncio.run(scenario())


async def listening(port: int) -> None:
    """Once the worker accepts connections (its start-up, reload included, is over)."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            await asyncio.sleep(0.01)
            continue
        writer.close()
        await writer.wait_closed()
        return


def resource_ids(worker: Worker) -> list[str]:
    return [r.id for r in worker.config.resources]


@pytest.mark.parametrize("replaced", [True, False])
def test_a_worker_notices_a_replace_it_missed_while_starting(
    tmp_path: Path, replaced: bool
) -> None:
    port = free_port()
    path = tmp_path / VIEW_FILE
    write_view_file(path, 4, "app", port=port)
    loaded = file_identity(path)
    version, config = load_published(path, Overrides())
    if replaced:
        # The agent's SIGHUP for this arrived before the worker's loop handled SIGHUP.
        write_view_file(path, 5, "app", "docs", port=port)
    worker = Worker(path, Overrides(), config, loaded, published_version=version)

    serve_briefly(worker, port, lambda: listening(port))
    if replaced:
        assert (worker.published_version, resource_ids(worker)) == (5, ["app", "docs"])
    else:
        assert (worker.published_version, resource_ids(worker)) == (4, ["app"])


def test_a_worker_keeps_its_configuration_when_a_reload_cannot_compile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    path = tmp_path / VIEW_FILE
    write_view_file(path, 1, "app", port=port)
    worker = managed_worker(path)

    async def reloads() -> None:
        # Valid for the model, but no worker can load that CA file.
        tls = {"backends": ["https://b"], "ca_file": "/no/ca"}
        write_view_file(path, 2, "app", "tls", port=port, **tls)
        os.kill(os.getpid(), signal.SIGHUP)
        while "reload refused" not in caplog.text:
            await asyncio.sleep(0.01)
        assert (worker.published_version, resource_ids(worker)) == (1, ["app"])
        write_view_file(path, 3, "app", "docs", port=port)
        os.kill(os.getpid(), signal.SIGHUP)
        while worker.published_version == 1:
            await asyncio.sleep(0.01)

    serve_briefly(worker, port, reloads)
    assert (worker.published_version, resource_ids(worker)) == (3, ["app", "docs"])


def test_a_new_version_keeps_the_policy_client_while_the_policy_services_stay(
    tmp_path: Path,
) -> None:
    # Issue 20: a publish must not cost every AP new connections (mutual TLS handshakes) to
    # Policy services it already reaches: the Decider, its client and their pools stay.
    port = free_port()
    path = tmp_path / VIEW_FILE
    policy = ["http://127.0.0.1:9", "http://127.0.0.1:10"]

    def publish(version: int, *names: str, services: list[str]) -> None:
        document = ap_config(
            *(resource(n) for n in names), listen=f"127.0.0.1:{port}", policy_services=services
        )
        atomic_write(path, orjson.dumps({"published_version": version, "view": document}))

    publish(1, "app", services=policy)
    worker = managed_worker(path)

    async def reloads() -> None:
        await listening(port)
        first = worker.decider
        assert first is not None
        client = first.client
        publish(2, "app", "docs", services=policy)  # a resource more: every view changes
        os.kill(os.getpid(), signal.SIGHUP)
        while worker.published_version == 1:
            await asyncio.sleep(0.01)
        assert worker.decider is first
        assert first.client is client
        assert not client._closed
        publish(3, "app", "docs", services=policy[::-1])  # another order: a new client
        os.kill(os.getpid(), signal.SIGHUP)
        while worker.published_version == 2:
            await asyncio.sleep(0.01)
        assert worker.decider is not first
        await asyncio.sleep(0.05)
        assert client._closed  # the old one is closed once replaced

    serve_briefly(worker, port, reloads)


def health_of(status_port: int, context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """The health answer of the status listener on ``status_port`` (``context``: the
    operator's, for an enrolled AP's mutual TLS)."""
    return ap_status(status_port, context)


def test_a_sighup_finding_the_running_version_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", "gatehouse.access_point")
    port, status = free_port(), free_port()
    path = tmp_path / VIEW_FILE
    write_view_file(path, 6, "app", port=port, status=status)
    worker = managed_worker(path)

    async def reloads() -> None:
        await listening(port)
        for _ in range(2):  # an operator's SIGHUPs: the file still holds version 6
            os.kill(os.getpid(), signal.SIGHUP)
        while caplog.text.count("runs already; nothing to do") < 2:
            await asyncio.sleep(0.01)
        answer = await asyncio.to_thread(health_of, status)
        assert (answer["config_version"], answer["config_source"]) == (6, "admin")
        assert "local_version" not in answer
        write_view_file(path, 5, "app", "docs", port=port, status=status)  # older: never runs
        os.kill(os.getpid(), signal.SIGHUP)
        while "older than the running" not in caplog.text:
            await asyncio.sleep(0.01)
        assert (await asyncio.to_thread(health_of, status))["config_version"] == 6

    serve_briefly(worker, port, reloads, status)
    assert (worker.published_version, resource_ids(worker)) == (6, ["app"])


# real processes -------------------------------------------------------------------------------


def installation(
    ap_port: int, backend: str, *names: str, more: list[dict[str, Any]] | None = None, **ap: Any
) -> dict[str, Any]:
    """An installation of one Access Point (endpoint on ``ap_port``) routing public resources
    ``/<name>`` (and ``more``) to ``backend``."""
    resources = [resource(name, backend) for name in names] + (more or [])
    return {
        "services": [
            {
                "id": "ap1",
                "role": "access_point",
                "endpoint": f"http://127.0.0.1:{ap_port}",
                "node": "n1",
            }
        ],
        "access_points": [{"id": "ap1", **ap}],
        "resources": resources,
        "resource_rules": {res["id"]: "public" for res in resources},
    }


def join_args(admin: RealAdmin, token: str, port: int, service_id: str = "ap1") -> list[str]:
    # --token=VALUE: a token may start with "-", which argparse would take for an option.
    return [
        "--join",
        admin.url,
        f"--token={token}",
        "--id",
        service_id,
        "--endpoint",
        f"http://127.0.0.1:{port}",
    ]


StartManaged = Callable[..., Service]


@pytest.fixture
def start_managed(tmp_path: Path) -> Iterator[StartManaged]:
    """Factory: ``gatehouse access-point --state DIR ARGS`` on ``port``, not waited for."""
    started: list[Service] = []

    def start(port: int, *args: str, state: str = "state", log: str = "ap") -> Service:
        svc = Service(
            ["access-point", "--state", str(tmp_path / state), *args],
            tmp_path / f"{log}.log",
            "127.0.0.1",
            port,
        )
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


def status_of(port: int, target: str) -> int:
    """The status of one GET on a new connection."""
    with WireClient("127.0.0.1", port, timeout=5) as client:
        response = client.request("GET", target)
    if response.status == 200:
        assert response.json()["path"] == target  # it came from the backend
    return response.status


def served(port: int, target: str, times: int = 1) -> bool:
    """True when ``times`` requests, each on a new connection, all get 200."""
    return all(status_of(port, target) == 200 for _ in range(times))


def eventually(check: Callable[[], bool], within: float, what: str, ap: Service) -> None:
    deadline = time.monotonic() + within
    while not check():
        if ap.proc.poll() is not None:
            raise AssertionError(f"the AP exited with {ap.proc.returncode}:\n{ap.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}\n{ap.output()}")
        time.sleep(0.05)


def test_first_start_registers_waits_for_the_first_version_and_serves_it(
    tmp_path: Path, real_admin: RealAdmin, demo_backend: Service, start_managed: StartManaged
) -> None:
    port = free_port()
    token = sync(real_admin.join_token())
    ap = start_managed(port, *join_args(real_admin, token, port))
    # Registered, but nothing is published yet: it waits and does not listen.
    eventually(lambda: (tmp_path / "state" / "admin.json").exists(), 10, "registration", ap)
    time.sleep(0.3)
    assert ap.proc.poll() is None
    with pytest.raises(ConnectionRefusedError):
        WireClient("127.0.0.1", port, timeout=1).close()

    status = free_port()
    first = sync(
        real_admin.publish(
            installation(port, demo_backend.url, "app", status_listen=f"127.0.0.1:{status}")
        )
    )
    ap.wait_ready()
    assert status_of(port, "/app/x") == 200
    assert status_of(port, "/other") == 404
    row = sync(real_admin.reported(first))
    assert (row["role"], row["endpoint"]) == ("access_point", f"http://127.0.0.1:{port}")

    state = tmp_path / "state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert {p.name for p in state.iterdir()} == {"admin.json", "lkg.json", "tls", VIEW_FILE}
    # The workers' file is the AP view with the version Admin published it as.
    version, view = read_published(state / VIEW_FILE)
    assert version == first
    assert [r.id for r in view.resources] == ["app"]
    # Enrolled: the status listener is mutual TLS and answers the operator's certificate.
    operator = operator_context(real_admin.home)
    assert health_of(status, operator)["config_version"] == first
    with pytest.raises(ConnectionError):
        health_of(status)  # plaintext
    assert ap.stop() == 0


def test_a_new_version_reaches_both_workers_without_a_restart(
    tmp_path: Path, real_admin: RealAdmin, demo_backend: Service, start_managed: StartManaged
) -> None:
    port = free_port()
    first = sync(real_admin.publish(installation(port, demo_backend.url, "app", workers=2)))
    token = sync(real_admin.join_token())
    ap = start_managed(port, *join_args(real_admin, token, port)).wait_ready()
    workers = wait_workers(ap, 2)
    sync(real_admin.reported(first))
    assert status_of(port, "/docs/x") == 404

    second = sync(
        real_admin.publish(installation(port, demo_backend.url, "app", "docs", workers=2))
    )
    started = time.monotonic()
    # Each worker logs its reload; new connections are spread over both by the kernel.
    now_runs = f"worker now runs configuration version {second} (published by the Admin"
    eventually(lambda: ap.output().count(now_runs) == 2, 5, "both reloaded", ap)
    assert served(port, "/docs/x", times=20)
    assert served(port, "/app/x", times=5)
    assert time.monotonic() - started < 5
    sync(real_admin.reported(second))
    assert sorted(children(ap.pid)) == sorted(workers)  # reloaded, not restarted
    assert ap.stop() == 0
    assert not [pid for pid in workers if alive(pid)]


def test_health_says_the_version_admin_published_and_sighups_do_not_change_it(
    tmp_path: Path, real_admin: RealAdmin, demo_backend: Service, start_managed: StartManaged
) -> None:
    port, status = free_port(), free_port()
    ap_settings = {"workers": 2, "status_listen": f"127.0.0.1:{status}"}
    # Versions before the AP's first: Admin's numbers are not the AP's count of reloads.
    sync(real_admin.publish(installation(port, demo_backend.url, "early", **ap_settings)))
    first = sync(real_admin.publish(installation(port, demo_backend.url, "app", **ap_settings)))
    token = sync(real_admin.join_token())
    ap = start_managed(port, *join_args(real_admin, token, port)).wait_ready()
    workers = wait_workers(ap, 2)
    operator = operator_context(real_admin.home)

    def health_says(version: int) -> bool:
        # Each GET on a new connection: the kernel spreads them over both workers.
        return all(health_of(status, operator)["config_version"] == version for _ in range(10))

    def admin_says() -> int:
        return int(sync(real_admin.service())["running_version"])

    assert sync(real_admin.reported(first))["running_version"] == first
    eventually(lambda: health_says(first), 5, f"health says version {first}", ap)
    answer = health_of(status, operator)
    assert (answer["config_version"], answer["config_source"]) == (admin_says(), "admin")
    assert "local_version" not in answer
    with WireClient("127.0.0.1", port, timeout=5) as client:  # the public one: up, no more
        assert client.request("GET", "/_gatehouse/health").body == b'{"status":"ok"}'

    second = sync(
        real_admin.publish(installation(port, demo_backend.url, "app", "docs", **ap_settings))
    )
    assert second == first + 1
    sync(real_admin.reported(second))
    eventually(lambda: health_says(second), 5, f"health says version {second}", ap)
    assert admin_says() == second
    assert f"applied configuration version {second} (published by the Administration" in (
        ap.output()
    )

    # An operator's SIGHUPs, to the supervisor (forwarded to the workers) and to the workers.
    nothing = f"configuration version {second} (published by the Administration service) runs"
    handled = 0
    for target in (ap.pid, *workers, ap.pid, *workers):
        os.kill(target, signal.SIGHUP)
        handled += 2 if target == ap.pid else 1
        eventually(
            lambda count=handled: ap.output().count(nothing) == count, 5, "SIGHUP handled", ap
        )
        assert health_says(second)
    assert health_says(second)
    assert admin_says() == second
    assert served(port, "/docs/x", times=5)
    assert sorted(children(ap.pid)) == sorted(workers)
    assert ap.stop() == 0


def test_a_version_the_access_point_cannot_use_is_refused_and_reported(
    tmp_path: Path, real_admin: RealAdmin, demo_backend: Service, start_managed: StartManaged
) -> None:
    port = free_port()
    first = sync(real_admin.publish(installation(port, demo_backend.url, "app")))
    token = sync(real_admin.join_token())
    ap = start_managed(port, *join_args(real_admin, token, port)).wait_ready()
    sync(real_admin.reported(first))
    view_file = tmp_path / "state" / VIEW_FILE
    running = view_file.read_bytes()

    # Admin's model accepts a CA file by name; this AP's host has no such file.
    missing = tmp_path / "missing-ca.pem"
    tls = resource("tls", "https://127.0.0.1:1", ca_file=str(missing))
    second = sync(real_admin.publish(installation(port, demo_backend.url, "app", more=[tls])))
    row = sync(real_admin.reported(first, f"version {second} is invalid"))
    assert "resources[1].ca_file: cannot load" in row["last_error"]
    assert "\n" not in row["last_error"]
    assert status_of(port, "/app/x") == 200
    assert status_of(port, "/tls/x") == 404
    assert view_file.read_bytes() == running
    assert ap.proc.poll() is None

    third = sync(real_admin.publish(installation(port, demo_backend.url, "app", "docs")))
    eventually(lambda: served(port, "/docs/x"), 5, "the next good version", ap)
    sync(real_admin.reported(third))  # the error is cleared
    assert ap.stop() == 0


def test_admin_down_the_access_point_serves_and_restarts_from_its_last_known_good(
    tmp_path: Path, real_admin: RealAdmin, demo_backend: Service, start_managed: StartManaged
) -> None:
    port = free_port()
    first = sync(real_admin.publish(installation(port, demo_backend.url, "app")))
    token = sync(real_admin.join_token())
    ap = start_managed(port, *join_args(real_admin, token, port)).wait_ready()
    sync(real_admin.reported(first))

    real_admin.kill()
    assert served(port, "/app/x", times=3)
    eventually(lambda: "Admin unreachable" in ap.output(), 10, "the agent noticing", ap)
    assert served(port, "/app/x", times=3)
    assert ap.stop() == 0  # the agent's thread stops in its back-off too

    # Restarted with only --state while Admin is down: its last-known-good version.
    again = start_managed(port, log="ap-again").wait_ready()
    assert served(port, "/app/x", times=3)
    assert "from its last-known-good configuration" in again.output()

    real_admin.start()
    second = sync(real_admin.publish(installation(port, demo_backend.url, "app", "docs")))
    eventually(lambda: served(port, "/docs/x"), 20, "catching up with Admin", again)
    sync(real_admin.reported(second))
    assert again.stop() == 0


def test_command_line_overrides_win_over_every_published_version(
    tmp_path: Path, real_admin: RealAdmin, demo_backend: Service, start_managed: StartManaged
) -> None:
    published, port = free_port(), free_port()
    first = sync(real_admin.publish(installation(published, demo_backend.url, "app")))
    token = sync(real_admin.join_token())
    args = [*join_args(real_admin, token, published), "--listen", f"127.0.0.1:{port}"]
    ap = start_managed(port, *args, "--workers", "2").wait_ready()
    workers = wait_workers(ap, 2)
    assert served(port, "/app/x")
    sync(real_admin.reported(first))

    second = sync(real_admin.publish(installation(published, demo_backend.url, "app", "docs")))
    now_runs = f"worker now runs configuration version {second} (published by the Admin"
    eventually(lambda: ap.output().count(now_runs) == 2, 5, "both reloaded", ap)
    assert served(port, "/docs/x", times=10)
    sync(real_admin.reported(second))
    assert sorted(children(ap.pid)) == sorted(workers)
    assert "asks for" not in ap.output()  # --workers wins: no restart is wanted
    assert "new listen address" not in ap.output()
    assert ap.stop() == 0


def test_sigterm_while_waiting_for_the_first_version_exits_cleanly(
    tmp_path: Path, real_admin: RealAdmin, start_managed: StartManaged
) -> None:
    port = free_port()
    token = sync(real_admin.join_token())
    ap = start_managed(port, *join_args(real_admin, token, port))
    eventually(lambda: "waiting for Admin's first configuration" in ap.output(), 10, "waiting", ap)
    ap.signal(signal.SIGTERM)
    assert ap.proc.wait(10) == 0
    assert "Traceback" not in ap.output()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GATEHOUSE_JOIN_TOKEN"}
    return subprocess.run(
        [*GATEHOUSE, "access-point", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gatehouse: ")
    return lines[0]


CLI_ERRORS: list[tuple[str, list[str], str]] = [
    ("config and state", ["--config", "CONFIG", "--state", "STATE"], "--config FILE or --state"),
    ("neither", [], "--config FILE or --state DIR"),
    ("join without token", ["--state", "STATE", "--join", "http://127.0.0.1:1"], "--token"),
    ("join with config", ["--config", "CONFIG", "--join", "http://127.0.0.1:1"], "--join needs"),
    (
        "join without id",
        ["--state", "STATE", "--join", "http://127.0.0.1:1", "--token", "t"],
        "--id",
    ),
    ("unregistered state", ["--state", "STATE"], "--join"),
]


@pytest.mark.parametrize(
    ("args", "names"), [c[1:] for c in CLI_ERRORS], ids=[c[0] for c in CLI_ERRORS]
)
def test_command_line_errors_are_one_line(tmp_path: Path, args: list[str], names: str) -> None:
    config = write_config(tmp_path / "ap.yaml", ap_config(resource("app")))
    real = [
        str(config) if a == "CONFIG" else str(tmp_path / "st") if a == "STATE" else a for a in args
    ]
    line = one_line_error(run_cli(*real))
    assert names in line
    assert not (tmp_path / "st" / "admin.json").exists()


def test_a_join_token_works_once(tmp_path: Path, real_admin: RealAdmin) -> None:
    port = free_port()
    token = sync(real_admin.join_token())
    first = ConfigAgent(tmp_path / "first")
    sync(first.register([real_admin.url], token, "ap1", "access_point", "n1", "http://x:1"))

    result = run_cli(
        "--state", str(tmp_path / "second"), *join_args(real_admin, token, port, "ap2")
    )
    line = one_line_error(result)
    assert "Admin refused the join token for 'ap2'" in line
    assert "a join token works once" in line
    assert not (tmp_path / "second" / "admin.json").exists()

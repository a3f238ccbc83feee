"""The Access Point process over its life: workers, draining on SIGTERM, reloading on SIGHUP,
and refusing a bad configuration."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.ap_status import ap_status
from tests.support.http_wire import Response, WireClient, request_bytes
from tests.support.processes import GATEHOUSE, Service

StartAP = Callable[..., Service]


def app(backend: Service, **extra: Any) -> dict[str, Any]:
    return {"id": "app", "path_prefix": "/app", "backends": [backend.url], "public": True, **extra}


def get(ap: Service, target: str) -> Response:
    with WireClient(ap.host, ap.port, timeout=15) as client:
        return client.request("GET", target)


def rewrite_config(ap: Service, resources: list[dict[str, Any]]) -> None:
    """Replace the AP's config file atomically, keeping its listen address (and its status
    listener's)."""
    path: Path = ap.config_path  # type: ignore[attr-defined]
    settings: dict[str, Any] = {"listen": f"{ap.host}:{ap.port}"}
    status: int | None = getattr(ap, "status_port", None)
    if status is not None:
        settings["status_listen"] = f"127.0.0.1:{status}"
    config = {"access_point": settings, "resources": resources}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)


# processes and sockets seen through /proc -------------------------------------------------------


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return sorted(out)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_sockets() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket."""
    out = []
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            out.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state, inode))
    return out


def wait_workers(ap: Service, count: int, within: float = 15) -> list[int]:
    """The worker pids, once ``count`` of them are listening on the AP's port."""
    deadline = time.monotonic() + within
    while True:
        workers = children(ap.pid)
        listening = {
            inode for lport, _, st, inode in tcp_sockets() if lport == ap.port and st == "0A"
        }
        ready = [pid for pid in workers if socket_inodes(pid) & listening]
        if len(ready) == count:
            return ready
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(ready)} of {count} workers listening: {workers}")
        time.sleep(0.1)


# workers and draining -------------------------------------------------------------------------


def test_two_workers_serve_and_sigterm_drains(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([app(demo_backend)], workers=2)
    workers = wait_workers(ap, 2)
    clients = [WireClient(ap.host, ap.port) for _ in range(24)]
    try:
        for i, client in enumerate(clients):
            resp = client.request("GET", f"/app/conn/{i}")
            assert resp.status == 200
            assert resp.json()["path"] == f"/app/conn/{i}"
        # Which worker holds the server side of each connection (the kernel spreads them).
        ports = {client.sock.getsockname()[1] for client in clients}
        served = {
            inode for lport, rport, _, inode in tcp_sockets() if lport == ap.port and rport in ports
        }
        owners = {pid for pid in workers if socket_inodes(pid) & served}
        assert owners == set(workers), f"connections held by {owners}, workers are {workers}"

        slow = WireClient(ap.host, ap.port)
        clients.append(slow)
        slow.send(request_bytes("GET", "/app/slow?delay=2"))
        time.sleep(0.5)  # the request is at the backend now
        ap.signal(signal.SIGTERM)
        started = time.monotonic()
        resp = slow.read_response()
        assert resp.status == 200
        assert resp.json()["path"] == "/app/slow"
        assert time.monotonic() - started < 5
        assert ap.proc.wait(15) == 0
        assert not [pid for pid in workers if alive(pid)]
        assert children(ap.pid) == []
        # Idle keep-alive connections were closed, not left hanging.
        for client in clients[:-1]:
            assert client.closed_by_peer(1)
    finally:
        for client in clients:
            client.close()


# reload under load ----------------------------------------------------------------------------


class Load:
    """Keep-alive clients hammering one route until ``duration`` or ``limit`` requests."""

    def __init__(
        self,
        ap: Service,
        target: str,
        accept: Callable[[dict[str, Any]], bool],
        clients: int = 20,
        duration: float = 6.0,
        limit: int = 3000,
    ) -> None:
        self.ap = ap
        self.target = target
        self.accept = accept
        self.limit = limit
        self.deadline = time.monotonic() + duration
        self.ok = 0
        self.issued = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _take(self) -> bool:
        with self.lock:
            if self.issued >= self.limit or time.monotonic() >= self.deadline:
                return False
            self.issued += 1
            return True

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.ap.host, self.ap.port, timeout=10)
        try:
            while self._take():
                try:
                    conn.request("GET", self.target)
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200 or not self.accept(json.loads(body)):
                        raise AssertionError(f"{resp.status} {body[:200]!r}")
                except Exception as exc:
                    with self.lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                    conn.close()
                    conn = http.client.HTTPConnection(self.ap.host, self.ap.port, timeout=10)
                else:
                    with self.lock:
                        self.ok += 1
                # Paced (at most ~20 requests/s per client), so the load spans every reload.
                time.sleep(0.05)
        finally:
            conn.close()

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self.threads:
            thread.join(20)
        assert not any(thread.is_alive() for thread in self.threads)


def route_config(backend: Service, version: int) -> list[dict[str, Any]]:
    """Version N toggles the stable resource's strip_prefix and adds a route only it has."""
    resources = [app(backend, strip_prefix=version % 2 == 1)]
    if version:
        resources.append(
            {
                "id": f"v{version}",
                "path_prefix": f"/v{version}",
                "strip_prefix": True,
                "backends": [backend.url],
                "public": True,
            }
        )
    return resources


def wait_route(ap: Service, target: str, path: str, within: float = 5.0) -> None:
    """Wait until ``target`` answers on 8 fresh connections in a row (so on every worker)."""
    deadline = time.monotonic() + within
    streak = 0
    seen: list[object] = []
    while streak < 8:
        resp = get(ap, target)
        ok = resp.status == 200 and resp.json()["path"] == path
        streak = streak + 1 if ok else 0
        seen = [*seen[-5:], resp.status]
        if time.monotonic() > deadline:
            raise AssertionError(f"{target} not answered as {path} in {within}s: {seen}")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reload_under_load_loses_nothing(
    start_ap: StartAP, demo_backend: Service, workers: int
) -> None:
    ap = start_ap(route_config(demo_backend, 0), workers=workers)
    if workers > 1:
        wait_workers(ap, workers)
    assert get(ap, "/app/load").json()["path"] == "/app/load"
    load = Load(ap, "/app/load", lambda doc: doc["path"] in ("/app/load", "/load")).start()
    try:
        time.sleep(0.5)
        for version in range(1, 6):
            started = time.monotonic()
            assert get(ap, f"/v{version}/probe").status == 404
            rewrite_config(ap, route_config(demo_backend, version))
            ap.signal(signal.SIGHUP)
            ok_at_reload = load.ok
            wait_route(ap, f"/v{version}/probe", "/probe")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    finally:
        load.join()
    assert load.failures == [], f"{len(load.failures)} failed, e.g. {load.failures[:5]}"
    assert load.ok >= 500, f"only {load.ok} requests went through"
    assert load.ok - ok_at_reload >= 50, "the load had stopped before the last reload"
    # The last configuration is the one in force, on every worker.
    wait_route(ap, "/app/load", "/load", within=1)
    for _ in range(10):
        assert get(ap, "/v4/probe").status == 404
    assert ap.proc.poll() is None
    assert "Traceback" not in ap.output()


def test_a_file_reloaded_by_sighup_is_a_local_version_not_a_published_one(
    start_ap: StartAP, demo_backend: Service
) -> None:
    """``--config``: the health answer (on the status listener) never presents the worker's
    reload count as a version the Administration service published."""
    ap = start_ap(route_config(demo_backend, 0), status=True)
    answer = ap_status(ap)
    assert answer == {
        "status": "ok",
        "id": "ap1",
        "config_version": None,
        "config_source": "file",
        "local_version": 1,
    }
    for version in (1, 2):
        rewrite_config(ap, route_config(demo_backend, version))
        ap.signal(signal.SIGHUP)
        wait_route(ap, f"/v{version}/probe", "/probe")
    answer = ap_status(ap)
    assert (answer["config_version"], answer["config_source"]) == (None, "file")
    assert answer["local_version"] == 3
    assert "local version 3, not published by the Administration service" in ap.output()
    assert "(published by the Administration service)" not in ap.output()


# refused configurations -----------------------------------------------------------------------


def test_invalid_config_on_sighup_keeps_the_old_one(
    start_ap: StartAP, demo_backend: Service
) -> None:
    ap = start_ap([app(demo_backend)])
    with WireClient(ap.host, ap.port) as kept:
        assert kept.request("GET", "/app/before").status == 200
        rewrite_config(
            ap,
            [
                app(demo_backend, backends=["not a url"]),
                {"id": "new", "path_prefix": "/new", "backends": [demo_backend.url]},
            ],
        )
        ap.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "resources[0].backends[0]" not in ap.output():
            assert time.monotonic() < deadline, f"no error logged:\n{ap.output()}"
            time.sleep(0.05)
        assert ap.proc.poll() is None
        # The connection opened before, and new ones, are served by the old configuration.
        assert kept.request("GET", "/app/after").json()["path"] == "/app/after"
    assert get(ap, "/app/fresh").status == 200
    assert get(ap, "/new/x").status == 404
    assert "Traceback" not in ap.output()
    # A later valid file is still taken.
    rewrite_config(ap, route_config(demo_backend, 1))
    ap.signal(signal.SIGHUP)
    wait_route(ap, "/v1/x", "/x")


@pytest.mark.parametrize(
    ("resources", "settings", "expected"),
    [
        (
            [{"id": "app", "backends": ["not a url"]}],
            {},
            "resources[0].backends[0]: not a URL",
        ),
        (
            [{"id": "app", "backends": ["http://127.0.0.1:9"], "colour": "red"}],
            {},
            "resources[0].colour: unknown field",
        ),
        (
            [{"id": "app", "backends": ["http://127.0.0.1:9"]}],
            {"header_timeout": "soon"},
            "access_point.header_timeout: ",
        ),
    ],
)
def test_invalid_config_at_start_exits_2_with_one_line(
    tmp_path: Path, resources: list[dict[str, Any]], settings: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    config = {"access_point": {"listen": "127.0.0.1:0", **settings}, "resources": resources}
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [*GATEHOUSE, "access-point", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=15,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""

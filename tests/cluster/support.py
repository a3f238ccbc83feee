"""Topologies for tests, and a real HAProxy on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from gatehouse.cluster.haproxy import BACKEND, access_point_states, read_stats
from tests.support.processes import wait_port

PG_URL = "postgresql+asyncpg://gatehouse@/gatehouse?host=db1,db2&port=5432,5432"


def find_haproxy() -> str | None:
    found = shutil.which("haproxy")
    if found:
        return found
    return "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None


def topology_data(
    ap_ports: tuple[int, int] = (8081, 8082),
    lb_listen: str = "127.0.0.1:8080",
    **load_balancer: Any,
) -> dict[str, Any]:
    """The example's shape with the given ports; databases are PostgreSQL URLs."""
    return {
        "nodes": [
            {"name": "dmz1", "zone": "dmz"},
            {"name": "dmz2", "zone": "dmz"},
            {"name": "int1", "zone": "internal"},
            {"name": "int2", "zone": "internal"},
        ],
        "administration": {"node": "int1", "listen": "127.0.0.1:8001"},
        "access_points": [
            {"id": "ap1", "node": "dmz1", "listen": f"127.0.0.1:{ap_ports[0]}"},
            {"id": "ap2", "node": "dmz2", "listen": f"127.0.0.1:{ap_ports[1]}"},
        ],
        "policy_services": [
            {"id": "ps1", "node": "int1", "listen": "127.0.0.1:8101"},
            {"id": "ps2", "node": "int2", "listen": "127.0.0.1:8102"},
        ],
        "authentication_services": [
            {"id": "auth1", "node": "int1", "listen": "127.0.0.1:8201"},
            {"id": "auth2", "node": "int2", "listen": "127.0.0.1:8202"},
        ],
        "load_balancer": {"listen": lb_listen, **load_balancer},
        "databases": {"user_db": PG_URL},
        "demo_backend": {"listen": "127.0.0.1:9000"},
    }


def with_distribution(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with two Distribution services (one per internal node) and the demo
    backend's mail server."""
    data["distribution_services"] = [
        {"id": "dist1", "node": "int1", "listen": "127.0.0.1:8301"},
        {"id": "dist2", "node": "int2", "listen": "127.0.0.1:8302"},
    ]
    if "demo_backend" in data:
        data["demo_backend"]["smtp"] = "127.0.0.1:8025"
    if "local" not in data["databases"]:
        data["databases"]["outbox_db"] = PG_URL.replace("/gatehouse?", "/gatehouse_outbox?")
    return data


class HAProxy:
    """``haproxy -db -f FILE`` in the foreground, its log in the work directory."""

    def __init__(
        self,
        binary: str,
        config: str,
        workdir: Path,
        port: int,
        stats_socket: Path | None = None,
    ) -> None:
        self.config_path = workdir / "haproxy.cfg"
        self.config_path.write_text(config)
        self.log_path = workdir / "haproxy.log"
        self.port = port
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port("127.0.0.1", port, 10.0, self.proc)
        # The stats socket may be bound after the listeners.
        deadline = time.monotonic() + 10.0
        while stats_socket is not None and not _answers(stats_socket):
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"no stats socket at {stats_socket}"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _answers(socket_path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(socket_path))
        except OSError:
            return False
        return True


def backend_counter(socket_path: Path, name: str) -> int:
    """A counter of the Access Points' backend (``wretr`` retries, ``wredis`` redispatches)."""
    value = read_stats(socket_path)[BACKEND, "BACKEND"].get(name) or "0"
    return int(value)


def wait_states(socket_path: Path, expected: dict[str, str], timeout: float = 10.0) -> None:
    """Until every named AP's state starts with the expected word (``UP``, ``DOWN``)."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = access_point_states(socket_path)
        if all(states.get(ap, "").split(" ")[0] == s for ap, s in expected.items()):
            return
        time.sleep(0.05)
    raise AssertionError(f"HAProxy states {states}, expected {expected}")


def check_statuses(socket_path: Path) -> dict[str, str]:
    """The last health check result of each AP (``L7OK``, ``L4CON`` refused, ``L7RSP``...)."""
    return {
        server: row.get("check_status", "")
        for (proxy, server), row in read_stats(socket_path).items()
        if proxy == BACKEND and server not in ("FRONTEND", "BACKEND")
    }


def wait_checked(socket_path: Path, expected: dict[str, str], timeout: float = 10.0) -> None:
    """Until each AP's last health check gave the expected result (``L7OK``, ``L4CON``)."""
    deadline = time.monotonic() + timeout
    while (statuses := check_statuses(socket_path)) != expected:
        assert time.monotonic() < deadline, f"health checks {statuses}, expected {expected}"
        time.sleep(0.05)

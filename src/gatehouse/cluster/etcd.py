"""The local cluster's etcd: three members on loopback (Debian ``etcd-server``), where Patroni
keeps its leader key. One member may be lost; without two of three there is no leader key to
renew (Patroni's failsafe mode then keeps the primary, see docs/operations.md).

Each member is a detached process (:mod:`.processes`): data in ``HOME/etcd/NAME`` (0700),
output in ``HOME/logs/NAME.log``, pid in ``HOME/run/NAME.pid``. Plain HTTP on loopback only.
"""

from __future__ import annotations

import http.client
import os
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from gatehouse.cluster import processes
from gatehouse.cluster.topology_patroni import EtcdMember
from gatehouse.errors import GatehouseError
from gatehouse.storage.permissions import private_directory
from gatehouse.storage.postgres_ha.errors import ReplicationError

ETCD_DIR = "etcd"
BINARY_CANDIDATES = ("/usr/bin/etcd",)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 2.0


def find_etcd() -> str | None:
    found = shutil.which("etcd")
    if found:
        return found
    return next((b for b in BINARY_CANDIDATES if os.access(b, os.X_OK)), None)


def member_argv(
    binary: str, member: EtcdMember, members: Sequence[EtcdMember], data: Path, token: str
) -> list[str]:
    """The command line of one member (a new cluster the first time; its data afterwards)."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    return [
        binary,
        *("--name", member.name),
        *("--data-dir", str(data)),
        *("--listen-client-urls", member.client_url),
        *("--advertise-client-urls", member.client_url),
        *("--listen-peer-urls", member.peer_url),
        *("--initial-advertise-peer-urls", member.peer_url),
        *("--initial-cluster", initial),
        *("--initial-cluster-token", token),
        *("--initial-cluster-state", "new"),
        # Patroni uses the v2 API (its compare-and-swap renewal of the leader key: patroni.py).
        "--enable-v2=true",
        *("--logger", "zap", "--log-level", "warn"),
        # The defaults (100 ms, 1 s) on a busy two-core machine: no needless elections.
        *("--heartbeat-interval", "100", "--election-timeout", "1000"),
    ]


def healthy(member: EtcdMember, timeout: float = 1.0) -> bool:
    """Whether the member answers ``GET /health`` with ``"health":"true"`` (it has a leader)."""
    conn = http.client.HTTPConnection(member.host, member.client_port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return response.status == 200 and b'"true"' in body


class Etcd:
    """The etcd members of one cluster home."""

    def __init__(self, home: Path, members: Sequence[EtcdMember]) -> None:
        self.home = home
        self.members = list(members)

    def member(self, name: str) -> EtcdMember:
        for member in self.members:
            if member.name == name:
                return member
        raise ReplicationError(
            f"no etcd member {name!r} (there are: {', '.join(m.name for m in self.members)})"
        )

    def _pid_file(self, name: str) -> processes.PidFile:
        return processes.PidFile(self.home / "run" / f"{name}.pid")

    def log_path(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def pid(self, name: str) -> int | None:
        return self._pid_file(name).running()

    def running(self) -> list[str]:
        return [m.name for m in self.members if self.pid(m.name) is not None]

    def start(self, name: str) -> int:
        """Start one member (its data kept from before); return its pid."""
        binary = find_etcd()
        if binary is None:
            raise ReplicationError("etcd is not installed (apt-get install etcd-server)")
        member = self.member(name)
        running = self.pid(name)
        if running is not None:
            return running
        root = self.home / ETCD_DIR
        private_directory(root)
        token_file = root / "cluster-token"
        if not token_file.exists():
            token_file.write_text(f"gatehouse-{secrets.token_hex(8)}\n")
        data = root / name
        argv = member_argv(binary, member, self.members, data, token_file.read_text().strip())
        try:
            pid = processes.spawn(argv, self.log_path(name))
        except GatehouseError as exc:
            raise ReplicationError(str(exc)) from None
        self._pid_file(name).write(pid)
        return pid

    def start_all(self, timeout: float = START_TIMEOUT) -> None:
        """Start every member and wait until each has a leader."""
        for member in self.members:
            self.start(member.name)
        self.wait_healthy([m.name for m in self.members], timeout)

    def wait_healthy(self, names: Sequence[str], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while waiting:
            waiting = [n for n in waiting if not healthy(self.member(n))]
            if not waiting:
                return
            for name in waiting:
                if self.pid(name) is None:
                    raise ReplicationError(f"etcd member {name} exited: see {self.log_path(name)}")
            if time.monotonic() > deadline:
                raise ReplicationError(
                    f"etcd member(s) {', '.join(waiting)} not healthy after {timeout:g}s: "
                    f"see {self.log_path(waiting[0])}"
                )
            time.sleep(0.1)

    def kill(self, name: str) -> int | None:
        """SIGKILL one member; return the pid it had (None: it was not running)."""
        pid = self.pid(name)
        if pid is None:
            return None
        try:
            processes.kill_groups([pid])
        except GatehouseError as exc:
            raise ReplicationError(f"{name}: {exc}") from None
        self._pid_file(name).remove()
        return pid

    def stop_all(self) -> list[str]:
        """Stop every member (SIGTERM, SIGKILL after a while); the names that ran."""
        live = {m.name: pid for m in self.members if (pid := self.pid(m.name)) is not None}
        if live:
            # Stopped together, members wait for their peers' streams to close (about 7 s);
            # etcd's write-ahead log is fsynced, so a SIGKILL after a moment loses nothing.
            processes.stop_groups(list(live.values()), timeout=STOP_TIMEOUT)
        for member in self.members:
            self._pid_file(member.name).remove()
        return list(live)

    def health(self) -> dict[str, bool]:
        return {m.name: healthy(m, timeout=0.5) for m in self.members}

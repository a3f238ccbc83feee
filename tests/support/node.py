"""``gatehouse up`` as a real process tree for tests: the node, its children, HTTP calls."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import GATEHOUSE, free_ports


def children(pid: int) -> dict[int, str]:
    """Live (not zombie) children of ``pid``: their pid and command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def child_running(pid: int, command: str) -> int | None:
    return next((p for p, cmdline in children(pid).items() if command in cmdline), None)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def get_json(port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body
    document: dict[str, Any] = json.loads(body)
    return document


class Node:
    """``extra``: more arguments for ``gatehouse up`` (metrics are off unless given, e.g.
    ``--metrics-listen 127.0.0.1:PORT``: concurrent nodes would share the default ports)."""

    def __init__(self, tmp_path: Path, extra: Sequence[str] = ()) -> None:
        ports = free_ports(8)
        self.port, self.backend_port = ports[0], ports[1]
        self.log_path = tmp_path / "up.log"
        self._log = self.log_path.open("wb")
        args = ["up", "--listen", f"127.0.0.1:{self.port}"]
        args += ["--backend-listen", f"127.0.0.1:{self.backend_port}"]
        args += ["--policy-listen", f"127.0.0.1:{ports[2]}"]
        args += ["--auth-listen", f"127.0.0.1:{ports[3]}"]
        self.admin_port = ports[4]
        args += ["--admin-listen", f"127.0.0.1:{self.admin_port}"]
        args += ["--status-listen", f"127.0.0.1:{ports[5]}"]
        self.distribution_port = ports[6]
        args += ["--distribution-listen", f"127.0.0.1:{self.distribution_port}"]
        #: The demo mail server (SMTP) in the demo backend.
        self.smtp_port = ports[7]
        args += ["--smtp-listen", f"127.0.0.1:{self.smtp_port}"]
        self.home = tmp_path / "var"
        args += ["--home", str(self.home)]
        args += ["--metrics-listen", "off", *extra]
        self.proc = subprocess.Popen(
            [*GATEHOUSE, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """A ``gatehouse`` command against this node's home (and so its Admin)."""
        return subprocess.run(
            [*GATEHOUSE, *args, "--home", str(self.home)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, f"gatehouse up exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} after {timeout}s:\n{self.output()}"
            time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    started = Node(tmp_path)
    try:
        yield started
    finally:
        started.close()

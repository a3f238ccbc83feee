"""Start real Gatehouse processes on loopback with free ports, and tear them down."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

GATEHOUSE = [sys.executable, "-m", "gatehouse"]


# Ports the tests choose come from a block of their own below the kernel's ephemeral range
# (32768-60999 by default), one block per xdist worker. ``bind(("127.0.0.1", 0))`` would pick
# from the ephemeral range, where another worker's process may take the port between our
# close and the service's bind (its ``wait_port`` then sees the other process), and where a
# client's connect() may get the same number as its source port and connect to itself.
# 10000-19999: five workers. cluster.topology_patroni.quiet_free_ports (the clusters' ports)
# looks in 20000-32767, where each worker gets a block of its own too (QUIET_BLOCK, through
# GATEHOUSE_QUIET_PORTS, which the cluster commands the tests run inherit): two workers
# starting clusters at once picked the same port at random there once, and the second
# service to bind it failed.
PORT_BLOCK = 2000
FIRST_PORT = 10000
QUIET_BLOCK = 2500
FIRST_QUIET_PORT = 20000
_port_lock = threading.Lock()
_next_port: list[int] = []


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw3" under xdist
    return (int(worker[2:]) if worker[2:].isdigit() else 0) % 5


def _worker_block() -> tuple[int, int]:
    first = FIRST_PORT + _worker_index() * PORT_BLOCK
    return first, first + PORT_BLOCK


def quiet_block() -> str:
    """This worker's block for quiet_free_ports, as GATEHOUSE_QUIET_PORTS wants it."""
    first = FIRST_QUIET_PORT + _worker_index() * QUIET_BLOCK
    return f"{first}-{first + QUIET_BLOCK - 1}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody holds now, from this worker's block, never the same twice in a row: the
    block is walked from a random start (two test runs at once rarely meet)."""
    first, end = _worker_block()
    with _port_lock:
        if not _next_port:
            _next_port.append(random.randrange(first, end))
        for _ in range(PORT_BLOCK):
            port = _next_port[0]
            _next_port[0] = first + (port + 1 - first) % PORT_BLOCK
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))  # no SO_REUSEADDR: a port in TIME_WAIT is skipped
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port in {first}-{end - 1} on {host}")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports."""
    return [free_port(host) for _ in range(count)]


def wait_port(
    host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class Service:
    """A running ``gatehouse`` subprocess whose output goes to a log file."""

    def __init__(self, args: Sequence[str], log: Path, host: str, port: int) -> None:
        self.args = list(args)
        self.log_path = log
        self.host = host
        self.port = port
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [*GATEHOUSE, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def wait_ready(self, timeout: float = 15.0) -> Service:
        wait_port(self.host, self.port, timeout, self.proc)
        return self

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def write_config(path: Path, config: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path

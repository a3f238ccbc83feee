#!/usr/bin/env python3
"""Login rate of a real node: ``gatehouse up``, 4 clients signing in through its Access Point.

Each login is a GET of the form and a POST of it through the AP's portal relay, so it pays
for the AP, the Policy service, the Authentication service's lockout (an attempt reserved in
the user DB before argon2id runs, released on success) and argon2id itself (47 MiB, slow on
purpose). With ``--compare REV`` a second node runs the code of git revision REV (a
temporary worktree put first on ``PYTHONPATH``) and the two are measured in alternating
turns (``--rounds``), so both rows come from one machine under the same outside load.

    .venv/bin/python bench/login.py                      # this tree, 4 clients, 10 s
    .venv/bin/python bench/login.py --compare eace812 --duration 30 --rounds 6
                                   # that revision and this tree, alternating 5 s turns
    .venv/bin/python bench/run.py --only login-node      # the same, as a step of make bench
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import protected
from signals import terminate_on_signals

REPO = Path(__file__).resolve().parent.parent
DOCS = ("<!-- bench:login:start -->", "<!-- bench:login:end -->")
HEADING = "## Latest results: login rate of a node"
#: Logins/s with 4 clients before the lockout reserved attempts (issue 13's baseline).
GOAL = 37.5
_PASSWORD = re.compile(r"Demo user: demo  password: (\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_TICKS = os.sysconf("SC_CLK_TCK")
#: `gatehouse up`'s listeners besides ``--listen``.
LISTEN_FLAGS = (
    "--backend-listen",
    "--policy-listen",
    "--auth-listen",
    "--admin-listen",
    "--status-listen",
    "--distribution-listen",
    "--smtp-listen",
    "--metrics-listen",
)
#: The services of a node, by a word of their command line (AP workers share the AP's).
ROLES = ("access-point", "policy", "authentication", "administration", "distribution")


def role_cpu(pgid: int) -> dict[str, float]:
    """CPU seconds (user + system) of the live processes of the process group ``pgid`` (a
    node), by service (:data:`ROLES`; ``other``: the rest, e.g. the demo backend), from
    /proc."""
    spent: dict[str, float] = {}
    for pid in (name for name in os.listdir("/proc") if name.isdigit()):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                words = cmdline.read().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        role = next((r for r in ROLES if r in words), "other")
        spent[role] = spent.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    return spent


@dataclass
class LoginResult:
    label: str
    clients: int
    latencies: protected.Latencies
    #: CPU seconds each service of the node spent over the counted turns.
    cpu: dict[str, float] = field(default_factory=dict)

    def cpu_ms(self, role: str | None = None) -> float | None:
        """CPU milliseconds per login of ``role`` (None: the whole node)."""
        count = self.latencies.count
        if not count or not self.cpu:
            return None
        spent = sum(self.cpu.values()) if role is None else self.cpu.get(role, 0.0)
        return spent * 1000 / count


class Node:
    """``gatehouse up`` from ``source`` (None: this tree) in a fresh home, on free ports."""

    def __init__(self, source: Path | None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="gatehouse-login-bench-")
        tmp = Path(self._tmp.name)
        self.port = free_port()
        args = [sys.executable, "-m", "gatehouse", "up", "--listen", f"127.0.0.1:{self.port}"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if source is not None:
            env["PYTHONPATH"] = str(source / "src")
        # Every listener on a free port, so that two nodes run side by side: only the flags
        # this revision's `gatehouse up` has (older ones have fewer services).
        usage = subprocess.run(
            [*args[:4], "--help"], env=env, capture_output=True, text=True, check=False
        ).stdout
        for flag in LISTEN_FLAGS:
            if flag in usage:
                args += [flag, f"127.0.0.1:{free_port()}"]
        args += ["--home", str(tmp / "var")]
        log_path = tmp / "up.log"
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self.password = _wait_up(self.proc, log_path, self.port)
            protected.login_once(self.port, "demo", self.password)  # warm up
        except BaseException:
            self.stop()
            raise

    def measure(
        self, clients: int, duration: float
    ) -> tuple[protected.Latencies, dict[str, float]]:
        """The logins of one turn, and the CPU seconds each service spent meanwhile."""
        before = role_cpu(self.proc.pid)
        got = protected.login_rate(self.port, "demo", self.password, clients, duration)
        after = role_cpu(self.proc.pid)
        return got, {role: after[role] - before.get(role, 0.0) for role in after}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._tmp.cleanup()


def measure(
    sources: dict[str, Path | None], clients: int, duration: float, rounds: int
) -> list[LoginResult]:
    """Start one node per source, then measure them in turn, ``rounds`` times each for
    ``duration / rounds`` seconds, so load from elsewhere falls on all of them alike."""
    nodes: dict[str, Node] = {}
    try:
        for label, source in sources.items():
            nodes[label] = Node(source)
        results = {label: protected.Latencies() for label in nodes}
        cpu: dict[str, dict[str, float]] = {label: {} for label in nodes}
        order = list(nodes)
        # One turn each, not counted: a node just started is still settling (its services'
        # first publish and certificates, caches filling), and the last one started would
        # pay for it in the first round.
        for label in order:
            nodes[label].measure(clients, duration / rounds)
        for turn in range(rounds):
            # ABBA: the node measured first in one round goes last in the next, so what a
            # turn leaves behind (hashes still running, a warm cache) favours neither.
            for label in order if turn % 2 == 0 else order[::-1]:
                got, spent = nodes[label].measure(clients, duration / rounds)
                results[label].extend(got)
                for role, seconds in spent.items():
                    cpu[label][role] = cpu[label].get(role, 0.0) + seconds
                rate = len(got.samples) / (got.elapsed or duration / rounds)
                per_login = sum(spent.values()) * 1000 / max(1, len(got.samples))
                print(
                    f"[login] round {turn + 1}, {label}: {rate:.1f} logins/s, "
                    f"{per_login:.1f} ms CPU per login",
                    file=sys.stderr,
                )
        return [LoginResult(label, clients, lat, cpu[label]) for label, lat in results.items()]
    finally:
        for node in nodes.values():
            node.stop()


def _wait_up(node: subprocess.Popen[bytes], log_path: Path, port: int) -> str:
    deadline = time.monotonic() + 120
    ready = f"Gatehouse is up: open http://127.0.0.1:{port}/"
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        found = _PASSWORD.search(text)
        if ready in text and found:
            return found.group(1)
        if node.poll() is not None:
            raise SystemExit(f"bench: gatehouse up exited:\n{text[-2000:]}")
        time.sleep(0.1)
    raise SystemExit("bench: gatehouse up did not come up within 120 s")


def render(results: list[LoginResult], duration: float) -> str:
    lines = [
        f"**Login rate of a node** (`gatehouse up`, clients signing in as one user for "
        f"{duration:g} s through the AP's portal relay, each login a GET of the form and a "
        f"POST of it; argon2id 47 MiB; goal: at least {GOAL} logins/s with 4 clients)",
        "",
        "| code | clients | logins | logins/s | p50 ms | p99 ms | errors "
        "| CPU ms/login: node | AP | Policy | Authentication | other |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lat = r.latencies
        p50, p99 = (f"{v:.0f}" if v is not None else "n/a" for v in (lat.p(50), lat.p(99)))
        known = ("access-point", "policy", "authentication")
        rest = {k: v for k, v in r.cpu.items() if k not in known}
        cpu = [r.cpu_ms(), *(r.cpu_ms(role) for role in known)]
        other = sum(rest.values()) * 1000 / lat.count if lat.count and r.cpu else None
        cells = " | ".join("n/a" if v is None else f"{v:.1f}" for v in [*cpu, other])
        lines.append(
            f"| {r.label} | {r.clients} | {lat.count} | {lat.rate:.1f} | {p50} | {p99} | "
            f"{lat.errors} | {cells} |"
        )
    lines += [
        "",
        "CPU ms/login: user + system CPU time of the node's processes (from /proc) over the "
        "counted turns, by service, over the logins; other: the Administration service and "
        "the demo backend. It moves far less with the machine's other load than logins/s.",
    ]
    return "\n".join(lines) + "\n"


def run(
    clients: int = 4, duration: float = 10.0, compare: str | None = None, rounds: int = 1
) -> tuple[list[LoginResult], str]:
    """The measurements (``compare`` first when given) and their markdown table."""
    if compare is None:
        results = measure({"this tree": None}, clients, duration, rounds)
        return results, render(results, duration)
    with tempfile.TemporaryDirectory(prefix="gatehouse-login-old-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), compare],
            check=True,
            capture_output=True,
        )
        try:
            sources = {f"`{compare}`": tree, "this tree": None}
            results = measure(sources, clients, duration, rounds)
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
    return results, render(results, duration)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--compare", metavar="REV", help="measure git revision REV too")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate the nodes this many times (--compare)"
    )
    args = parser.parse_args()
    with terminate_on_signals():
        results, table = run(args.clients, args.duration, args.compare, args.rounds)
    print(table, end="")
    mine = results[-1].latencies
    if mine.errors:
        print(f"bench: {mine.errors} login(s) failed: {mine.first_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

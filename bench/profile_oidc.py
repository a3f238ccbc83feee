#!/usr/bin/env python3
"""CPU per token introspection (or code exchange) in each process on the way (issue 17's
benchmark goals).

A single node's OpenID Provider (bench/oidc.py's Gatehouse: one Access Point worker, one
Policy service, one Authentication service on SQLite) answers introspections of one valid
access token through the Access Point under ``wrk -t1 -cN``. Per round, each process's CPU
time (``/proc/PID/stat``, the process and its children) divided by the requests wrk counted:
microseconds of CPU per introspection in the AP, the Policy service and the Authentication
service, with wrk's rate and p99.

A/B in one run: ``--base REF`` also starts a second node whose services run the code of git
``REF`` (its ``src/`` exported to a temporary directory, first on ``PYTHONPATH``), and the two
nodes take turns, round after round, so both see the same machine. ``--py-spy DIR`` records a
flame graph of each process of the first node (``py-spy record``, idle frames left out)
after the rounds.

    .venv/bin/python bench/profile_oidc.py --base main --rounds 5
    .venv/bin/python bench/profile_oidc.py --py-spy /tmp/oidc-profiles
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import oidc  # bench/oidc.py: the same node and client as the benchmark

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
PY_SPY = REPO / ".venv" / "bin" / "py-spy"
PROCESSES = ("ap", "policy", "auth")


def log(message: str) -> None:
    print(f"[profile-oidc] {message}", file=sys.stderr, flush=True)


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (an Access Point's supervisor has worker children)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo += [int(c) for c in children]
    return pids


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` and its descendants."""
    user = system = 0
    for each in tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / TICKS, system / TICKS


@dataclass
class Node:
    name: str
    gatehouse: oidc.Gatehouse
    token: str
    #: Per round: µs of CPU per introspection for each process, and wrk's figures.
    rounds: list[dict[str, float]] = field(default_factory=list)

    @property
    def pids(self) -> dict[str, int]:
        gateway = self.gatehouse.provider.gateway
        assert gateway is not None
        return {"ap": gateway.ap.pid, "policy": gateway.policy.pid, "auth": gateway.auth.pid}


def start_node(name: str, workdir: Path, pythonpath: str | None) -> Node:
    saved = os.environ.get("PYTHONPATH")
    if pythonpath is not None:
        os.environ["PYTHONPATH"] = pythonpath
    try:
        (workdir / name).mkdir()
        gatehouse = oidc.Gatehouse(workdir / name)
    finally:
        if pythonpath is not None:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    target = gatehouse.through_ap
    token = asyncio.run(
        oidc._token(target, gatehouse.first_code, gatehouse.verifier, gatehouse.redirect_uri)
    )
    oidc.check_introspection(target, token)
    return Node(name, gatehouse, token)


def measure(
    node: Node,
    wrk: str,
    seconds: int,
    connections: int,
    workdir: Path,
    alone: bool = False,
    exchange: int = 0,
) -> None:
    pids = node.pids
    gatehouse = node.gatehouse
    target = gatehouse.alone if alone else gatehouse.through_ap
    codes = gatehouse.mint(exchange) if exchange else []
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    if exchange:
        verifier, uri = gatehouse.verifier, gatehouse.redirect_uri
        done = oidc.exchange_round(target, codes, verifier, uri, seconds)
    else:
        done = oidc.wrk_round(wrk, target, node.token, seconds, connections, workdir)
    after = {k: cpu_seconds(p) for k, p in pids.items()}
    if done.errors or not done.requests:
        raise RuntimeError(f"{node.name}: {done.errors} errors of {done.requests} requests")
    row = {k: (sum(after[k]) - sum(before[k])) / done.requests * 1e6 for k in pids}
    row |= {f"{k}_sys": (after[k][1] - before[k][1]) / done.requests * 1e6 for k in pids}
    row |= {"rps": done.rps, "p50": done.p50 or 0.0, "p99": done.p99 or 0.0}
    node.rounds.append(row)
    log(
        f"{node.name}: {done.rps:,.0f}/s p99 {done.p99} ms; CPU µs per request "
        + ", ".join(f"{k} {row[k]:.0f} (system {row[f'{k}_sys']:.0f})" for k in PROCESSES)
    )


def flame_graphs(
    node: Node, wrk: str, seconds: int, connections: int, out: Path, raw: bool = False
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-profile-oidc-"))
    load = threading.Thread(
        target=oidc.wrk_round,
        args=(wrk, node.gatehouse.through_ap, node.token, seconds + 3, connections, workdir),
    )
    load.start()
    time.sleep(1)
    spies = []
    for name, pid in node.pids.items():
        worker = tree(pid)[-1]  # the AP's worker, not its supervisor
        svg = out / (f"oidc-{name}.txt" if raw else f"oidc-{name}.svg")
        spies.append(
            subprocess.Popen(
                [
                    *(str(PY_SPY), "record", "-p", str(worker), "-d", str(seconds), "-r", "250"),
                    *("--nonblocking", "-o", str(svg)),
                    *(("--format", "raw") if raw else ()),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    for spy in spies:
        spy.wait()
    load.join()
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"flame graphs in {out}")


def export(ref: str, into: Path) -> str:
    """``ref``'s ``src/`` in ``into``; the directory to put first on PYTHONPATH."""
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), ref, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return str(into / "src")


def summary(nodes: list[Node]) -> str:
    lines = [
        "| code | CPU µs/request: AP | Policy | Authentication | all three | per second | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    medians = []
    for node in nodes:
        med = {k: statistics.median(r[k] for r in node.rounds) for k in node.rounds[0]}
        medians.append(med)
        total = sum(med[k] for k in PROCESSES)
        lines.append(
            f"| {node.name} | {med['ap']:.0f} | {med['policy']:.0f} | {med['auth']:.0f} | "
            f"{total:.0f} | {med['rps']:,.0f} | {med['p99']:.1f} |"
        )
    if len(medians) == 2:
        new, old = medians
        ratios = ", ".join(f"{k} {new[k] / old[k]:.2f}x" for k in PROCESSES)
        total = sum(new[k] for k in PROCESSES) / sum(old[k] for k in PROCESSES)
        lines.append("")
        lines.append(
            f"CPU per request, {nodes[0].name} / {nodes[1].name}: {ratios}, all three "
            f"{total:.2f}x; rate {new['rps'] / old['rps']:.2f}x."
        )
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    lines.append(f"Medians of {len(nodes[0].rounds)} rounds; load average at the end {load}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--alone",
        action="store_true",
        help="call the Authentication service's relay call directly (the bench's "
        "'Authentication alone'), not through the AP",
    )
    parser.add_argument(
        "--exchange",
        type=int,
        default=0,
        metavar="CODES",
        help="measure code exchanges instead (CODES minted ahead of each round, not measured)",
    )
    parser.add_argument("--base", help="git ref whose code runs the second node (A/B)")
    parser.add_argument("--py-spy", type=Path, help="write flame graphs of the first node here")
    parser.add_argument(
        "--raw", action="store_true", help="py-spy's collapsed stacks (text) instead of SVGs"
    )
    args = parser.parse_args()
    wrk = shutil.which("wrk") or "/usr/bin/wrk"
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-profile-oidc-"))
    nodes: list[Node] = []
    try:
        nodes.append(start_node("this tree", workdir, None))
        if args.base:
            path = export(args.base, workdir)
            nodes.append(start_node(args.base, workdir, path))
        for node in nodes if not args.exchange else []:  # warm-up
            oidc.wrk_round(wrk, node.gatehouse.through_ap, node.token, 2, args.connections, workdir)
        for number in range(args.rounds):
            log(f"round {number + 1}/{args.rounds}")
            order = nodes if number % 2 == 0 else list(reversed(nodes))
            for node in order:
                measure(
                    node,
                    wrk,
                    args.seconds,
                    args.connections,
                    workdir,
                    args.alone,
                    args.exchange,
                )
        print(summary(nodes), end="")
        if args.py_spy:
            flame_graphs(nodes[0], wrk, args.seconds, args.connections, args.py_spy, args.raw)
    finally:
        for node in nodes:
            node.gatehouse.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

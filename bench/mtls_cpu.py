#!/usr/bin/env python3
"""CPU time per decision on internal links, plaintext vs mutual TLS, on both sides.

Decisions per second on a small shared machine are noisy, and the benchmark's client (a
Python process on the same cores) takes CPU from the server: ``bench/mtls.py``'s ratio moves
with both. CPU time per decision does not (much). This starts the two stacks of
``bench/mtls.py`` (plaintext and mTLS internal links), then alternates rounds of
``POST /internal/v1/decide`` through the failover client on each, reading the CPU time of the
Policy service process (every thread's run time, from /proc/PID/task/*/schedstat) and of this
process (the client) around each round.

    .venv/bin/python bench/mtls_cpu.py                      # 6 rounds of 10,000 per stack
    .venv/bin/python bench/mtls_cpu.py --rounds 4 --calls 20000
    .venv/bin/python bench/mtls_cpu.py --profile 10         # then py-spy --native the mTLS
                                                            # Policy service for 10 s
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mtls
import uvloop
from signals import terminate_on_signals

from gatehouse.internal.client import FailoverClient
from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import POLICY
from gatehouse.trust.tls import ClientTLS, Credentials

POLICY_PROC = 2  # Stack.procs: demo backend, Authentication, Policy, Access Point


def process_cpu(pid: int) -> float:
    """Seconds on a CPU of every thread of process ``pid`` (nanosecond schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def process_switches(pid: int) -> int:
    """Context switches (voluntary and not) of every thread of process ``pid`` so far."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


async def _new_connections(stack: mtls.Stack, count: int) -> int:
    """``count`` decisions in turn, each on a new connection (a handshake each with mTLS)."""
    tls = None
    if stack.ap_credentials is not None:
        tls = ClientTLS(Credentials(stack.ap_credentials).client, frozenset({POLICY}))
    scheme = "https" if tls else "http"
    body = mtls.decision_body(stack.session)
    async with FailoverClient(
        [f"{scheme}://127.0.0.1:{stack.policy_port}"], tls=tls, max_idle=0
    ) as client:
        for _ in range(count):
            answer = await client.call("POST", "/internal/v1/decide", body, retry_safe=True)
            if answer.status != 200:
                raise RuntimeError(f"decide answered {answer.status}")
        opened = client.pool_stats()
    return sum(pool["opened"] for pool in opened.values())


def new_connections(stack: mtls.Stack, count: int) -> tuple[float, float]:
    """(server, client) CPU µs for one decision on a new connection."""
    pid = stack.procs[POLICY_PROC].pid
    s0, c0 = process_cpu(pid), time.process_time()
    opened = uvloop.run(_new_connections(stack, count))
    s1, c1 = process_cpu(pid), time.process_time()
    if opened < count:
        raise RuntimeError(f"{stack.name}: {opened} connections for {count} decisions")
    return (s1 - s0) / count * 1e6, (c1 - c0) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="decisions per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per stack, alternating")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--connections",
        type=int,
        default=300,
        help="then this many decisions each on a new connection, per stack (0: none)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the Policy services on CPU 0 and this process (the client) on CPU 1",
    )
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--only", choices=("plaintext", "mTLS"), help="one stack only")
    parser.add_argument(
        "--attach",
        metavar="COMMAND",
        help="run COMMAND ({pid}: the Policy service, {client}: this process, {name}: the stack) "
        "during one more round "
        "on each stack, then stop it with SIGINT (e.g. 'strace -c -f -p {pid}')",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-mtls-cpu-"))
    ca = CertificateAuthority.create()
    stacks = {
        "plaintext": mtls.Stack("plaintext", workdir / "plain", tls=False),
        "mTLS": mtls.Stack("mTLS", workdir / "mtls", tls=True),
    }
    if args.only:
        stacks = {args.only: stacks[args.only]}
    server: dict[str, list[float]] = {name: [] for name in stacks}
    client: dict[str, list[float]] = {name: [] for name in stacks}
    rates: dict[str, list[float]] = {name: [] for name in stacks}
    switches: dict[str, list[tuple[float, float]]] = {name: [] for name in stacks}
    with terminate_on_signals():
        try:
            for stack in stacks.values():
                stack.workdir.mkdir(parents=True)
                stack.start(sys.executable, ca if stack.tls else None)
            if args.pin:
                for stack in stacks.values():
                    os.sched_setaffinity(stack.procs[POLICY_PROC].pid, {0})
                os.sched_setaffinity(0, {1})
            for stack in stacks.values():  # warm-up: connections, caches
                mtls.decisions(stack, 2_000, args.clients)
            for _ in range(args.rounds):
                for name, stack in stacks.items():
                    pid = stack.procs[POLICY_PROC].pid
                    f0, g0 = process_switches(pid), process_switches(os.getpid())
                    s0, c0 = process_cpu(pid), time.process_time()
                    result = mtls.decisions(stack, args.calls, args.clients)
                    s1, c1 = process_cpu(pid), time.process_time()
                    f1, g1 = process_switches(pid), process_switches(os.getpid())
                    switches[name].append(((f1 - f0) / result.count, (g1 - g0) / result.count))
                    if result.errors:
                        raise RuntimeError(f"{name}: {result.errors} failed decisions")
                    server[name].append((s1 - s0) / result.count * 1e6)
                    client[name].append((c1 - c0) / result.count * 1e6)
                    rates[name].append(result.rate)
            print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print("| links | server µs/decision | client µs/decision | sum | decisions/s |")
            print("|---|---:|---:|---:|---:|")
            for name in stacks:
                s, c = statistics.median(server[name]), statistics.median(client[name])
                print(
                    f"| {name} | {s:.1f} | {c:.1f} | {s + c:.1f} | "
                    f"{statistics.median(rates[name]):,.0f} |"
                )
            if len(stacks) == 2:
                ps, pc = (
                    statistics.median(server["plaintext"]),
                    statistics.median(client["plaintext"]),
                )
                ts, tc = statistics.median(server["mTLS"]), statistics.median(client["mTLS"])
                print(
                    f"plaintext/mTLS CPU: server {ps / ts:.3f}x, client {pc / tc:.3f}x, "
                    f"both {(ps + pc) / (ts + tc):.3f}x"
                )
            for name in stacks:
                fs = statistics.median(f for f, _ in switches[name])
                fc = statistics.median(f for _, f in switches[name])
                print(f"{name}: context switches per decision: server {fs:.2f}, client {fc:.2f}")
            for name in stacks:
                print(
                    f"{name} rounds: server "
                    + " ".join(f"{x:.1f}" for x in server[name])
                    + " | client "
                    + " ".join(f"{x:.1f}" for x in client[name])
                )
            if args.connections:
                print(f"one decision on a new connection ({args.connections} per stack, in turn):")
                print("| links | server µs | client µs |")
                print("|---|---:|---:|")
                for name, stack in stacks.items():
                    server_us, client_us = new_connections(stack, args.connections)
                    print(f"| {name} | {server_us:,.0f} | {client_us:,.0f} |")
            if args.attach:
                for name, stack in stacks.items():
                    command = args.attach.format(
                        pid=stack.procs[POLICY_PROC].pid, client=os.getpid(), name=name
                    )
                    print(f"== {name}: {command}", flush=True)
                    attached = subprocess.Popen(command, shell=True, start_new_session=True)
                    time.sleep(1.0)
                    result = mtls.decisions(stack, args.calls, args.clients)
                    os.killpg(attached.pid, signal.SIGINT)
                    attached.wait(30)
                    print(f"== {name}: {result.count} decisions", flush=True)
            if args.profile:
                spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                for name, stack in stacks.items():
                    out = Path(tempfile.gettempdir()) / f"mtls-cpu-{name}.txt"
                    pid = stack.procs[POLICY_PROC].pid
                    prof = subprocess.Popen(
                        [
                            spy,
                            "record",
                            "--native",
                            "-r",
                            "250",
                            "-d",
                            str(int(args.profile)),
                            "-f",
                            "raw",
                            "-o",
                            str(out),
                            "-p",
                            str(pid),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    deadline = time.monotonic() + args.profile + 1
                    s0, count = process_cpu(pid), 0
                    while time.monotonic() < deadline:
                        count += mtls.decisions(stack, args.calls, args.clients).count
                    prof.wait(30)
                    used = (process_cpu(pid) - s0) / count * 1e6
                    print(
                        f"profile of the {name} Policy service ({used:.1f} µs/decision with "
                        f"the profiler): {out}"
                    )
        finally:
            for stack in stacks.values():
                stack.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""CPU time the Access Point spends per proxied request: public vs protected (cached decision).

Throughput on a small shared machine is noisy; CPU time per request is not (much). This starts
the same servers as ``bench/run.py``'s protected scenarios (backend, Authentication and Policy
services, one AP worker with a decision cache), signs in, then alternates wrk runs on the public
and the protected resource, reading the AP's CPU time (utime + stime of its process group, from
/proc) before and after each run.

    .venv/bin/python bench/cpu_cost.py --rounds 5 --duration 5
    .venv/bin/python bench/cpu_cost.py --profile 10   # then py-spy the protected load
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import run
from signals import terminate_on_signals

CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """utime + stime of every process in the group, in seconds."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def worker_pids(pgid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:
                out.append(int(entry))
    return out


def measure(
    settings: run.Settings, server: run.Server, path: str, headers: list[tuple[str, str]]
) -> tuple[float, int, float]:
    """(µs of AP CPU per request, requests, requests/s) of one wrk run."""
    before = group_cpu(server.proc.pid)
    result = run.run_wrk(settings, server.url + path, settings.duration, headers)
    after = group_cpu(server.proc.pid)
    if result.errors:
        raise run.BenchError(f"{path}: {result.errors} errors")
    return (after - before) / result.requests * 1e6, result.requests, result.rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--profile", type=int, default=0, help="seconds: py-spy the worker under protected load"
    )
    args = parser.parse_args()
    settings = run.Settings(
        duration=args.duration,
        connections=args.connections,
        threads=1,
        warmup=2,
        startup_timeout=20.0,
        nginx=shutil.which("nginx") or "/usr/sbin/nginx",
        wrk=shutil.which("wrk") or "/usr/bin/wrk",
        python=sys.executable,
    )
    with terminate_on_signals(), run.Lab(settings) as lab:
        server = run.protected_access_point(100_000)(lab, 1)
        session = lab.get_policy().login(server)
        cookie = [("Cookie", f"{run.SESSION_COOKIE}={session}")]
        targets = {"public": (run.PUBLIC_PATH, []), "protected": ("/", cookie)}
        for path, headers in targets.values():
            run.probe(server, path, headers)
            run.run_wrk(settings, server.url + path, settings.warmup, headers)
        if args.profile:
            pids = worker_pids(server.proc.pid)
            print(f"AP processes: {pids}", file=sys.stderr)
            wrk = subprocess.Popen(
                settings.wrk_command(server.url + "/", args.profile + 2, cookie),
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1)
            for pid in pids:
                out = Path(f"/tmp/ap-profile-{pid}.txt")
                subprocess.run(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(args.profile),
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                        "--nonblocking",
                    ],
                    check=False,
                )
                print(f"profile: {out}", file=sys.stderr)
            wrk.wait()
            return 0
        costs: dict[str, list[float]] = {name: [] for name in targets}
        rates: dict[str, list[float]] = {name: [] for name in targets}
        for i in range(args.rounds):
            for name, (path, headers) in targets.items():
                us, requests, rps = measure(settings, server, path, headers)
                costs[name].append(us)
                rates[name].append(rps)
                print(
                    f"round {i + 1} {name:9}: {us:6.2f} µs/request ({requests} requests, "
                    f"{rps:,.0f}/s, load {os.getloadavg()[0]:.2f})",
                    file=sys.stderr,
                )
        for name in targets:
            print(
                f"{name:9}: median {statistics.median(costs[name]):6.2f} µs/request, "
                f"min {min(costs[name]):6.2f}; median {statistics.median(rates[name]):,.0f} req/s"
            )
        pub, prot = (statistics.median(costs[n]) for n in targets)
        print(f"protected/public CPU: {prot / pub:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where an Access Point worker's time goes: flame graphs and a per-request breakdown.

One AP worker in front of the bench's nginx backend (a public resource), under
``wrk -t1 -cN``. For each connection count:

* ``py-spy record`` (the Python stacks, with C calls attributed to the Python line that
  made them) writes a flame graph, ``docs/profiles/ap-cN.svg`` by default;
* ``perf record`` (when perf is installed) splits the worker's CPU time between the kernel,
  the interpreter, httptools (llhttp), uvloop and libc;
* the worker's CPU time per request (``/proc/PID/stat``) and its system calls per request
  (``strace -c``, when installed; a separate short run, strace slows the worker).

    .venv/bin/python bench/profile_ap.py                     # 50 and 256 connections
    .venv/bin/python bench/profile_ap.py --connections 50 --out /tmp/profiles

The numbers are printed as a markdown table; docs/benchmarks.md keeps the reading of them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import tls_edge

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
PY_SPY = REPO / ".venv" / "bin" / "py-spy"
DSO_GROUPS = {
    "[kernel.kallsyms]": "kernel (system calls, TCP on loopback)",
    "libpython": "Python interpreter (gatehouse code, objects)",
    "parser.cpython": "httptools (llhttp parser)",
    "loop.cpython": "uvloop (event loop)",
    "libc": "libc",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def wrk(url: str, connections: int, seconds: int) -> tuple[int, float]:
    requests, rps, _ = tls_edge.wrk_latency(url, connections, seconds)
    return requests, rps


def perf_split(pid: int, seconds: int, workdir: Path) -> dict[str, float]:
    """Share of the worker's samples per library (perf), or {} without perf."""
    if shutil.which("perf") is None:
        return {}
    data = workdir / "perf.data"
    subprocess.run(
        [
            "perf",
            "record",
            "-F",
            "999",
            "-p",
            str(pid),
            "-o",
            str(data),
            "--",
            "sleep",
            str(seconds),
        ],
        capture_output=True,
        check=False,
    )
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-g", "none"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    shares: Counter[str] = Counter()
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if not match:
            continue
        name = next((label for key, label in DSO_GROUPS.items() if key in match[2]), "other")
        shares[name] += float(match[1])
    return dict(shares)


def syscalls_per_request(pid: int, url: str, connections: int) -> dict[str, float]:
    """System calls per request of the worker under load (strace -c), or {}."""
    if shutil.which("strace") is None:
        return {}
    load = threading.Thread(target=wrk, args=(url, connections, 5))
    load.start()
    time.sleep(1)
    traced = subprocess.run(
        ["timeout", "-s", "INT", "3", "strace", "-c", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    load.join()
    calls: dict[str, int] = {}
    for line in traced.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
            calls[parts[-1]] = int(parts[3])
    requests = calls.get("write", 0) / 2 or 1  # every request: one write each way
    return {name: count / requests for name, count in calls.items() if name != "total"}


def profile(connections: int, seconds: int, out: Path, python: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gatehouse-profile-") as tmp:
        workdir = Path(tmp)
        backend_port = tls_edge.free_port()
        backend = tls_edge.start_nginx(
            "backend", tls_edge.backend_conf(workdir, backend_port), workdir, backend_port
        )
        port = tls_edge.free_port()
        ap = tls_edge.start_access_point(python, workdir, port, 1, backend_port)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 20
            while subprocess.run(["curl", "-s", "-o", "/dev/null", url]).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Access Point did not start")
                time.sleep(0.1)
            pid = ap.popen.pid
            wrk(url, connections, 2)  # warm-up
            before = cpu_seconds(pid)
            requests, rps = wrk(url, connections, seconds)
            cpu_us = (cpu_seconds(pid) - before) / requests * 1e6
            log(f"[c{connections}] {rps:,.0f} requests/s, {cpu_us:.1f} µs of CPU per request")
            svg = out / f"ap-c{connections}.svg"
            load = threading.Thread(target=wrk, args=(url, connections, seconds + 2))
            load.start()
            time.sleep(1)
            subprocess.run(
                [
                    *(str(PY_SPY), "record", "-p", str(pid), "-d", str(seconds), "-r", "250"),
                    *("--nonblocking", "-o", str(svg)),
                ],
                capture_output=True,
                check=False,
            )
            split = perf_split(pid, 3, workdir)
            load.join()
            calls = syscalls_per_request(pid, url, connections)
        finally:
            ap.stop()
            backend.stop()
    return {
        "connections": connections,
        "rps": rps,
        "cpu_us": cpu_us,
        "flame": str(svg.relative_to(REPO) if svg.is_relative_to(REPO) else svg),
        "split": split,
        "syscalls": calls,
    }


def render(results: list[dict[str, object]]) -> str:
    lines = [
        "| connections | requests/s | CPU µs per request | kernel | interpreter | httptools "
        "| uvloop | system calls per request | flame graph |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        split = r["split"]
        assert isinstance(split, dict)
        calls = r["syscalls"]
        assert isinstance(calls, dict)
        shares = [
            f"{split.get(label, 0):.0f} %" if split else "—"
            for label in (
                DSO_GROUPS["[kernel.kallsyms]"],
                DSO_GROUPS["libpython"],
                DSO_GROUPS["parser.cpython"],
                DSO_GROUPS["loop.cpython"],
            )
        ]
        per = ", ".join(f"{name} {n:.2f}" for name, n in sorted(calls.items(), key=lambda x: -x[1]))
        lines.append(
            f"| {r['connections']} | {r['rps']:,.0f} | {r['cpu_us']:.1f} | "
            + " | ".join(shares)
            + f" | {per or '—'} | `{r['flame']}` |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="50,256", help="comma list (default 50,256)")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "profiles")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    if not PY_SPY.exists():
        print(f"profile_ap: {PY_SPY} not found (pip install py-spy)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results = [
        profile(int(c), args.seconds, args.out, args.python) for c in args.connections.split(",")
    ]
    print(render(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

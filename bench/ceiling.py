#!/usr/bin/env python3
"""How close to nginx can a reverse proxy written in Python get on this machine?

Issue 20 asks the Access Point for 0.75x the nginx proxy's requests/s with one worker. This
measures, in one run and in alternating turns, the same load (``wrk -t1``, one worker each,
the bench's nginx backend) through:

- the nginx proxy (the bench's reference);
- ``bare_proxy.py relay``: a TCP relay on uvloop, bytes forwarded as they come, no parsing:
  the floor of any Python proxy with the same system calls per request;
- ``bare_proxy.py parse``: the same with httptools parsing both directions and writing the
  request and response again: the least an HTTP proxy does;
- the Gatehouse Access Point (public resource, 1 worker).

For each: requests/s, p99 and the proxy process's CPU time per request (user + system,
``/proc``), and the ratio to nginx.

    .venv/bin/python bench/ceiling.py                  # 50 and 256 connections, 2 turns
    .venv/bin/python bench/ceiling.py --connections 50 --turns 3 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import tls_edge

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
SYSTEMS = ("nginx proxy", "Python TCP relay", "Python parse-and-write proxy", "Gatehouse AP")


def group_cpu(pgid: int) -> tuple[float, float]:
    """User and system CPU seconds of every process in process group ``pgid``."""
    user = system = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            user += int(fields[11])
            system += int(fields[12])
    return user / TICKS, system / TICKS


@dataclass
class Row:
    system: str
    connections: int
    rps: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    user_us: list[float] = field(default_factory=list)


def wait_http(url: str, proc: tls_edge.Proc) -> None:
    deadline = time.monotonic() + 20
    while subprocess.run(["curl", "-sf", "-o", "/dev/null", url], check=False).returncode:
        if proc.popen.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: {proc.name} did not start:\n{proc.log.read_text()[-2000:]}")
        time.sleep(0.1)


def start(system: str, workdir: Path, backend: int, python: str) -> tls_edge.Proc:
    port = tls_edge.free_port()
    if system == "nginx proxy":
        conf = tls_edge.nginx_proxy_conf(workdir, port, 1, backend)
        return tls_edge.start_nginx("nginx-proxy", conf, workdir, port)
    if system == "Gatehouse AP":
        return tls_edge.start_access_point(python, workdir, port, 1, backend)
    mode = "relay" if system == "Python TCP relay" else "parse"
    argv = [python, str(HERE / "bare_proxy.py"), mode, f"127.0.0.1:{port}", f"127.0.0.1:{backend}"]
    return tls_edge.spawn(mode, argv, workdir, port)


def run(connections: list[int], turns: int, seconds: int, python: str) -> list[Row]:
    rows = {(s, c): Row(s, c) for c in connections for s in SYSTEMS}
    with tempfile.TemporaryDirectory(prefix="gatehouse-ceiling-") as tmp:
        workdir = Path(tmp)
        backend_port = tls_edge.free_port()
        backend = tls_edge.start_nginx(
            "backend", tls_edge.backend_conf(workdir, backend_port), workdir, backend_port
        )
        procs: dict[str, tls_edge.Proc] = {}
        try:
            for system in SYSTEMS:
                procs[system] = proc = start(system, workdir, backend_port, python)
                wait_http(f"http://127.0.0.1:{proc.port}/", proc)
            for turn in range(turns):
                order = SYSTEMS if turn % 2 == 0 else tuple(reversed(SYSTEMS))
                for count in connections:
                    for system in order:
                        proc = procs[system]
                        url = f"http://127.0.0.1:{proc.port}/"
                        tls_edge.wrk_latency(url, count, 1)  # warm-up: connections, pools
                        user0, sys0 = group_cpu(proc.popen.pid)
                        requests, rps, p99 = tls_edge.wrk_latency(url, count, seconds)
                        user1, sys1 = group_cpu(proc.popen.pid)
                        cpu = (user1 - user0 + sys1 - sys0) / requests * 1e6
                        row = rows[system, count]
                        row.rps.append(rps)
                        row.p99.append(p99)
                        row.cpu_us.append(cpu)
                        row.user_us.append((user1 - user0) / requests * 1e6)
                        print(
                            f"[ceiling] turn {turn + 1}, c{count}, {system}: {rps:,.0f}/s, "
                            f"p99 {p99:.2f} ms, {cpu:.1f} µs CPU/request "
                            f"({row.user_us[-1]:.1f} in user space)",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            for proc in procs.values():
                proc.stop()
            backend.stop()
    return list(rows.values())


def render(rows: list[Row], seconds: int, turns: int) -> str:
    lines = [
        f"`wrk -t1 -cN -d{seconds}s --latency`, one worker each, the bench's nginx backend; "
        f"medians of {turns} alternating turns.",
        "",
        "| connections | proxy | requests/s | x nginx | p99 ms | x nginx "
        "| CPU µs per request | of which user space |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    nginx = {r.connections: r for r in rows if r.system == "nginx proxy"}
    for r in rows:
        base = nginx[r.connections]
        rps, p99 = statistics.median(r.rps), statistics.median(r.p99)
        ratio = rps / statistics.median(base.rps)
        tail = p99 / statistics.median(base.p99)
        lines.append(
            f"| {r.connections} | {r.system} | {rps:,.0f} | {ratio:.2f}x | {p99:.2f} | "
            f"{tail:.2f}x | {statistics.median(r.cpu_us):.1f} | "
            f"{statistics.median(r.user_us):.1f} |"
        )
    load = os.getloadavg()
    lines += ["", f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[50, 256])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    rows = run(args.connections, args.turns, args.seconds, args.python)
    print(render(rows, args.seconds, args.turns))
    return 0


if __name__ == "__main__":
    sys.exit(main())

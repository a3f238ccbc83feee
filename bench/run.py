#!/usr/bin/env python3
"""Gatehouse benchmark: the Access Point side by side with nginx, in one run, as ratios.

Every scenario puts load (wrk) on one system in front of the same backend (an nginx that
answers ``return 200`` with a 100-byte body) and records requests/s, latency p50/p99 and
errors. Access Point rows are compared with the nginx reverse proxy at equal workers.

    .venv/bin/python bench/run.py                       # all scenarios, print a markdown table
    .venv/bin/python bench/run.py --only direct,nginx   # a subset (groups or scenario names)
    .venv/bin/python bench/run.py --write docs/benchmarks.md

Adding a scenario is one entry in ``SCENARIOS``. Every server runs on 127.0.0.1 on a free
port in its own temporary directory, and all of them are stopped at the end, also on
Ctrl-C, SIGTERM or error. Raw results go to ``bench/results/`` as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
DOCS_START = "<!-- bench:start -->"
DOCS_END = "<!-- bench:end -->"

# What the backend answers: exactly 100 bytes, no characters that need escaping in nginx.
BODY = ("gatehouse bench backend " + "x" * 100)[:99] + "\n"
assert len(BODY.encode()) == 100

# Goals for the Access Point, relative to the nginx reverse proxy with the same workers.
GOAL_RPS_RATIO = 0.5  # AP requests/s >= 0.5 x nginx
GOAL_P99_RATIO = 2.0  # AP p99 latency <= 2 x nginx

STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


class BenchError(Exception):
    """A scenario could not be run (server failed to start, wrk failed, ...)."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    duration: int
    connections: int
    threads: int
    warmup: int
    startup_timeout: float
    nginx: str
    wrk: str
    python: str

    def wrk_command(self, url: str, duration: int) -> list[str]:
        return [
            self.wrk,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{duration}s",
            "--latency",
            url,
        ]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url_host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"{url_host}:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Server:
    """A server process we started, in its own session (process group) and directory."""

    name: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    logs: list[Path]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def diagnostics(self) -> str:
        parts = [f"{self.name}: exit code {self.proc.poll()}" if not self.alive() else self.name]
        for log in self.logs:
            text = tail(log)
            if text:
                parts.append(f"--- {log.name} (last lines) ---\n{text}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after a grace period."""
        pgid = self.proc.pid  # start_new_session=True: the group id is the leader's pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        # Children (workers) may outlive the leader; make sure the group is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT)

    def wait_ready(self, path: str, timeout: float) -> None:
        """Poll ``GET path`` until it answers 200, the process dies or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(f"{self.name} exited during startup\n{self.diagnostics()}")
            try:
                status, _ = http_get("127.0.0.1", self.port, path, timeout=1.0)
            except OSError as exc:
                last = str(exc)
            else:
                if status == 200:
                    return
                last = f"HTTP {status}"
            time.sleep(0.1)
        raise BenchError(
            f"{self.name} not ready after {timeout:.0f}s (GET {path}: {last})\n{self.diagnostics()}"
        )


class Lab:
    """Owns the temporary directory and every server started in it; stops them all on exit."""

    def __init__(self, settings: Settings, keep_tmp: bool = False) -> None:
        self.settings = settings
        self.keep_tmp = keep_tmp
        self.root = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
        self.servers: list[Server] = []
        self.backend: Server | None = None

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        if self.keep_tmp:
            print(f"bench: kept temporary files in {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def stop_all(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def stop(self, server: Server) -> None:
        if server in self.servers:
            self.servers.remove(server)
            server.stop()

    def workdir(self, name: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        return path

    def spawn(self, name: str, argv: list[str], workdir: Path, port: int) -> Server:
        out = workdir / "stdout.log"
        err = workdir / "stderr.log"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # Ctrl-C goes to us; we stop the group ourselves
            )
        logs = [out, err, *sorted(workdir.glob("*error.log"))]
        server = Server(name=name, port=port, workdir=workdir, proc=proc, logs=logs)
        self.servers.append(server)
        return server

    def nginx(self, name: str, conf: Callable[[Path, int], str], ready_path: str = "/") -> Server:
        """Start an nginx in the foreground with its own prefix, config, pid and logs."""
        workdir = self.workdir(name)
        port = free_port()
        (workdir / "nginx.conf").write_text(conf(workdir, port))
        (workdir / "error.log").touch()
        argv = [
            self.settings.nginx,
            "-p",
            f"{workdir}/",
            "-e",
            str(workdir / "error.log"),
            "-c",
            str(workdir / "nginx.conf"),
            "-g",
            f"daemon off; pid {workdir / 'nginx.pid'};",
        ]
        server = self.spawn(name, argv, workdir, port)
        server.logs.append(workdir / "error.log")
        server.wait_ready(ready_path, self.settings.startup_timeout)
        return server

    def get_backend(self) -> Server:
        """The one backend shared by all scenarios (started on first use)."""
        if self.backend is None or not self.backend.alive():
            self.backend = self.nginx("backend", backend_conf)
        return self.backend


# --------------------------------------------------------------------------- configs


def _nginx_common(workdir: Path, workers: int) -> str:
    lines = [
        # As root, nginx would switch its workers to "nobody"; stay root instead.
        *(["user root;"] if os.geteuid() == 0 else []),
        f"worker_processes {workers};",
        "worker_rlimit_nofile 16384;",
        f"error_log {workdir}/error.log warn;",
        "events {",
        "    worker_connections 8192;",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _nginx_http_common(workdir: Path) -> str:
    return textwrap.indent(
        textwrap.dedent(
            f"""\
            access_log off;
            keepalive_requests 1000000;
            client_body_temp_path {workdir}/client_body;
            proxy_temp_path {workdir}/proxy;
            """
        ),
        "    ",
    )


def backend_conf(workdir: Path, port: int) -> str:
    """The backend: one nginx worker answering every request with the same 100 bytes."""
    return _nginx_common(workdir, 1) + (
        "http {\n" + _nginx_http_common(workdir) + f"    server {{\n"
        f"        listen 127.0.0.1:{port} reuseport;\n"
        f"        location / {{\n"
        f"            default_type text/plain;\n"
        f'            return 200 "{BODY.rstrip()}\\n";\n'
        f"        }}\n"
        f"    }}\n"
        "}\n"
    )


def proxy_conf(workers: int, backend_port: int) -> Callable[[Path, int], str]:
    """nginx as a reverse proxy with pooled keep-alive connections to the backend."""

    def render(workdir: Path, port: int) -> str:
        return _nginx_common(workdir, workers) + (
            "http {\n" + _nginx_http_common(workdir) + f"    upstream backend {{\n"
            f"        server 127.0.0.1:{backend_port};\n"
            f"        keepalive 64;\n"
            f"        keepalive_requests 1000000;\n"
            f"    }}\n"
            f"    server {{\n"
            f"        listen 127.0.0.1:{port} reuseport;\n"
            f"        location / {{\n"
            f"            proxy_pass http://backend;\n"
            f"            proxy_http_version 1.1;\n"
            f'            proxy_set_header Connection "";\n'
            f"        }}\n"
            f"    }}\n"
            "}\n"
        )

    return render


def access_point_yaml(port: int, backend_port: int, resource_extra: dict[str, Any]) -> str:
    resource: dict[str, Any] = {
        "id": "bench",
        "hosts": ["*"],
        "path_prefix": "/",
        "backends": [f"http://127.0.0.1:{backend_port}"],
        "public": True,
        **resource_extra,
    }
    config = {"access_point": {"listen": f"127.0.0.1:{port}"}, "resources": [resource]}
    # JSON is valid YAML: no PyYAML needed in the harness.
    return json.dumps(config, indent=2) + "\n"


# --------------------------------------------------------------------------- scenarios

# A starter brings up the system under test for a scenario and returns the server to load.
Starter = Callable[[Lab, int], Server]


def start_direct(lab: Lab, workers: int) -> Server:
    return lab.get_backend()


def start_nginx_proxy(lab: Lab, workers: int) -> Server:
    backend = lab.get_backend()
    return lab.nginx(f"nginx-proxy-{workers}", proxy_conf(workers, backend.port))


def access_point(**resource_extra: Any) -> Starter:
    """A starter for the Access Point; ``resource_extra`` adds fields to the bench resource."""

    def start(lab: Lab, workers: int) -> Server:
        backend = lab.get_backend()
        name = f"access-point-{workers}"
        workdir = lab.workdir(name)
        port = free_port()
        cfg = workdir / "access-point.yaml"
        cfg.write_text(access_point_yaml(port, backend.port, resource_extra))
        argv = [
            lab.settings.python,
            "-m",
            "gatehouse",
            "access-point",
            "--config",
            str(cfg),
            "--workers",
            str(workers),
        ]
        server = lab.spawn(name, argv, workdir, port)
        server.wait_ready("/_gatehouse/health", lab.settings.startup_timeout)
        return server

    return start


@dataclass(frozen=True)
class Scenario:
    name: str  # unique, selectable with --only
    group: str  # selectable with --only: all scenarios of the group
    label: str  # shown in the table
    workers: int
    start: Starter
    path: str = "/"
    baseline: str | None = None  # group to compare with at equal workers
    warmup: bool = True
    shared: bool = False  # the server is shared (the backend): do not stop it afterwards


SCENARIOS: list[Scenario] = [
    Scenario("direct", "direct", "backend direct", 1, start_direct, warmup=False, shared=True),
    Scenario("nginx-1", "nginx", "nginx proxy", 1, start_nginx_proxy),
    Scenario("nginx-2", "nginx", "nginx proxy", 2, start_nginx_proxy),
    Scenario("ap-1", "ap", "Gatehouse AP", 1, access_point(), baseline="nginx"),
    Scenario("ap-2", "ap", "Gatehouse AP", 2, access_point(), baseline="nginx"),
]


def select(only: str | None) -> list[Scenario]:
    if not only:
        return list(SCENARIOS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {s.name for s in SCENARIOS} | {s.group for s in SCENARIOS}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        choices = ", ".join(sorted(known))
        raise SystemExit(f"bench: unknown scenario(s) {', '.join(unknown)}; choose from {choices}")
    return [s for s in SCENARIOS if s.name in wanted or s.group in wanted]


# --------------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests: int = 0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)  # "50", "75", "90", "99"
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())


_TIME_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.M)
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
)
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> WrkResult:
    """Parse ``wrk --latency`` output; latencies are converted to milliseconds."""
    rps = _RPS.search(output)
    if not rps:
        raise BenchError(f"cannot parse wrk output:\n{output}")
    result = WrkResult(rps=float(rps.group(1)))
    if m := _REQUESTS.search(output):
        result.requests = int(m.group(1))
    section = output.split("Latency Distribution", 1)[-1]
    for pct, value, unit in _PERCENTILE.findall(section):
        result.latency_ms[pct.removesuffix(".0").removesuffix(".00")] = (
            float(value) * _TIME_UNITS[unit]
        )
    if m := _SOCKET.search(output):
        keys = ("connect", "read", "write", "timeout")
        result.socket_errors = {k: int(v) for k, v in zip(keys, m.groups(), strict=True)}
    if m := _NON2XX.search(output):
        result.non_2xx_3xx = int(m.group(1))
    return result


def run_wrk(settings: Settings, url: str, duration: int) -> WrkResult:
    argv = settings.wrk_command(url, duration)
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}{proc.stderr}"
        )
    return parse_wrk(proc.stdout)


# --------------------------------------------------------------------------- running


@dataclass
class Row:
    scenario: str
    group: str
    label: str
    workers: int
    result: WrkResult | None = None
    failure: str | None = None
    rps_ratio: float | None = None
    p99_ratio: float | None = None
    baseline: str | None = None

    @property
    def p50(self) -> float | None:
        return self.result.latency_ms.get("50") if self.result else None

    @property
    def p99(self) -> float | None:
        return self.result.latency_ms.get("99") if self.result else None


def probe(server: Server, path: str) -> None:
    """One request before the load: the answer must be the backend's, untouched."""
    try:
        status, body = http_get("127.0.0.1", server.port, path, timeout=5.0)
    except OSError as exc:
        raise BenchError(f"{server.name}: GET {path} failed: {exc}") from exc
    if status != 200 or body != BODY.encode():
        raise BenchError(
            f"{server.name}: GET {path} answered HTTP {status} with {body[:200]!r}, "
            f"expected 200 with the backend's {len(BODY)}-byte body"
        )


def run_scenario(lab: Lab, scenario: Scenario) -> Row:
    row = Row(scenario.name, scenario.group, scenario.label, scenario.workers)
    settings = lab.settings
    server: Server | None = None
    try:
        server = scenario.start(lab, scenario.workers)
        url = server.url + scenario.path
        probe(server, scenario.path)
        if scenario.warmup and settings.warmup > 0:
            log(f"  warm-up {settings.warmup}s")
            run_wrk(settings, url, settings.warmup)
        command = " ".join(settings.wrk_command(url, settings.duration))
        log(f"  measuring {settings.duration}s: {command}")
        row.result = run_wrk(settings, url, settings.duration)
        if not server.alive():
            raise BenchError(f"{server.name} died during the run\n{server.diagnostics()}")
    except BenchError as exc:
        row.failure = str(exc)
        log(f"  FAILED: {exc}")
    finally:
        if server is not None and not scenario.shared:
            lab.stop(server)
    if row.result:
        r = row.result
        log(
            f"  {r.rps:,.0f} req/s, p50 {fmt_ms(row.p50)} ms, p99 {fmt_ms(row.p99)} ms, "
            f"errors {r.errors}"
        )
    return row


def compute_ratios(rows: list[Row], scenarios: dict[str, Scenario]) -> None:
    for row in rows:
        base_group = scenarios[row.scenario].baseline
        if not base_group or row.result is None:
            continue
        base = next(
            (
                b
                for b in rows
                if b.group == base_group and b.workers == row.workers and b.result is not None
            ),
            None,
        )
        if base is None or base.result is None:
            continue
        row.baseline = base.scenario
        if base.result.rps > 0:
            row.rps_ratio = row.result.rps / base.result.rps
        if row.p99 is not None and base.p99:
            row.p99_ratio = row.p99 / base.p99


# --------------------------------------------------------------------------- reporting


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _command_version(argv: list[str], pattern: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1).strip() if m else "unknown"


def machine_info(settings: Settings) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = _command_version(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=10"], r"(\S+)"
    )
    python = _command_version(
        [settings.python, "-c", "import platform; print(platform.python_version())"], r"(\S+)"
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "kernel": f"{platform.system()} {platform.release()}",
        "python": python,
        "nginx": _command_version([settings.nginx, "-v"], r"nginx version:\s*(\S+)"),
        "wrk": _command_version([settings.wrk, "-v"], r"^(wrk\s+\S+)"),
        "commit": commit,
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def error_cell(row: Row) -> str:
    if row.result is None:
        return "—"
    r = row.result
    if r.errors == 0:
        return "0"
    parts = [f"non-2xx {r.non_2xx_3xx}"] if r.non_2xx_3xx else []
    parts += [f"{k} {v}" for k, v in r.socket_errors.items() if v]
    return f"{r.errors} ({', '.join(parts)})"


def render_markdown(rows: list[Row], info: dict[str, str], settings: Settings) -> str:
    lines = [
        f"Measured {info['date']} at commit `{info['commit']}`.",
        "",
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}, {info['kernel']}; "
        f"load average {info['load']} at start",
        f"- Software: Python {info['python']}, {info['nginx']}, {info['wrk']}",
        f"- Load: `wrk -t{settings.threads} -c{settings.connections} -d{settings.duration}s "
        f"--latency`, {settings.warmup} s warm-up per proxy; backend: nginx, 1 worker, "
        f"`return 200` with a {len(BODY)}-byte body",
        "",
        "| scenario | workers | requests/s | p50 ms | p99 ms | errors "
        "| rps vs nginx | p99 vs nginx |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        if row.result is None:
            first = (row.failure or "failed").splitlines()[0].replace("|", "\\|")
            lines.append(f"| {row.label} | {row.workers} | failed: {first} | — | — | — | — | — |")
            continue
        lines.append(
            f"| {row.label} | {row.workers} | {row.result.rps:,.0f} | {fmt_ms(row.p50)} "
            f"| {fmt_ms(row.p99)} | {error_cell(row)} | {fmt_ratio(row.rps_ratio)} "
            f"| {fmt_ratio(row.p99_ratio)} |"
        )
    goals = goal_lines(rows)
    if goals:
        lines += ["", *goals]
    return "\n".join(lines) + "\n"


def goal_lines(rows: list[Row]) -> list[str]:
    out = []
    for row in rows:
        if row.rps_ratio is None and row.p99_ratio is None:
            continue
        rps_ok = row.rps_ratio is not None and row.rps_ratio >= GOAL_RPS_RATIO
        p99_ok = row.p99_ratio is not None and row.p99_ratio <= GOAL_P99_RATIO
        verdict = "met" if rps_ok and p99_ok else "not met"
        workers = f"{row.workers} worker{'s' if row.workers != 1 else ''}"
        out.append(
            f"- {row.label}, {workers}: goal {verdict}: "
            f"requests/s {fmt_ratio(row.rps_ratio)} of nginx (goal ≥ {GOAL_RPS_RATIO}x) "
            f"{'✓' if rps_ok else '✗'}, p99 {fmt_ratio(row.p99_ratio)} of nginx "
            f"(goal ≤ {GOAL_P99_RATIO:g}x) {'✓' if p99_ok else '✗'}"
        )
    return out


DOCS_INTRO = f"""\
# Benchmarks

How fast is the Access Point compared with nginx doing the same job? `bench/run.py` measures
both side by side, in one run on one machine, and reports the Access Point as ratios to nginx:
absolute numbers depend on the machine, ratios much less.

## Running it

```sh
make bench                                      # all scenarios, prints a markdown table
make bench BENCH_ARGS="--only direct,nginx"     # a subset: groups or scenario names
make bench BENCH_ARGS="--duration 30"           # longer runs (default 10 s each)
make bench BENCH_ARGS="--write docs/benchmarks.md"   # also update the results below
```

It needs `nginx` (Debian's `nginx-light` is enough) and `wrk`. Every server runs on 127.0.0.1
on a free port, in its own temporary directory, and all are stopped at the end (also on
Ctrl-C). The default run takes about a minute. Raw results are saved as JSON in
`bench/results/` (not committed).

## What it measures

- **backend**: one nginx worker answering every request with `return 200` and a
  {len(BODY)}-byte body, access log off. It is the same backend for every scenario and always
  has one worker, whatever the number of workers of the proxy in front of it.
- **backend direct**: wrk against the backend, the ceiling for this machine.
- **nginx proxy**: nginx as a reverse proxy (`proxy_pass` to an upstream with `keepalive 64`,
  HTTP/1.1 to the backend), with 1 and with 2 worker processes.
- **Gatehouse AP**: `gatehouse access-point --workers N` with one public resource for `/`
  pointing at the backend, with 1 and with 2 workers.

Each proxy gets a 2 s warm-up, then `wrk -t1 -c50 -d10s --latency` (`--duration`,
`--connections`, `--threads` and `--warmup` change these). Before the load, one request checks
that the proxy returns the backend's exact body. Both nginx instances allow a million requests
per keep-alive connection (`keepalive_requests`) so that nginx's default of 1000 does not add
reconnections that the Access Point would not have.

Scenarios are rows of the `SCENARIOS` table in `bench/run.py`; `--only` takes their names
(`direct`, `nginx-1`, `nginx-2`, `ap-1`, `ap-2`) or groups (`direct`, `nginx`, `ap`). A new
scenario, such as a protected or a cached resource, is one more row.

## Reading the results

`requests/s` is throughput; `p50`/`p99` are wrk's latency percentiles in milliseconds;
`errors` counts non-2xx/3xx answers and socket errors (connect, read, write, timeout) and
should be 0. For the Access Point, `rps vs nginx` is its requests/s divided by the nginx
proxy's with the same number of workers (higher is better) and `p99 vs nginx` the same
ratio of p99 latencies (lower is better).

wrk, the proxy and the backend share the machine's cores, so a proxy that uses less CPU leaves
more for the others; that is the same for nginx and the Access Point, which is why the ratios
are the numbers to watch. On a small machine with other work running, results move by 10-20 %
between runs (the header shows the load average at the start); compare ratios within one run,
and repeat a run before drawing conclusions from a small difference.

## Goals

With equal workers, the Access Point should reach

- at least **{GOAL_RPS_RATIO}x** the nginx proxy's requests/s, and
- at most **{GOAL_P99_RATIO:g}x** its p99 latency.

## Latest results

"""


def write_docs(path: Path, table: str) -> None:
    block = f"{DOCS_START}\n{table.rstrip()}\n{DOCS_END}"
    text = path.read_text() if path.exists() else DOCS_INTRO + f"{DOCS_START}\n{DOCS_END}\n"
    start, end = text.find(DOCS_START), text.find(DOCS_END)
    if start == -1 or end == -1 or end < start:
        text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = text[:start] + block + text[end + len(DOCS_END) :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def save_json(rows: list[Row], info: dict[str, str], settings: Settings) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    data = {
        "machine": info,
        "settings": dataclasses.asdict(settings),
        "goals": {"rps_ratio_min": GOAL_RPS_RATIO, "p99_ratio_max": GOAL_P99_RATIO},
        "results": [
            {**dataclasses.asdict(row), "errors": row.result.errors if row.result else None}
            for row in rows
        ],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- main


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return int(value)


def _non_negative_int(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number, not {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(dict.fromkeys([s.group for s in SCENARIOS] + [s.name for s in SCENARIOS]))
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark the Gatehouse Access Point side by side with nginx.",
    )
    parser.add_argument(
        "--only", metavar="LIST", help=f"comma list of scenario groups or names ({names})"
    )
    parser.add_argument("--duration", type=_positive_int, default=10, help="seconds per run")
    parser.add_argument("--connections", type=_positive_int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=_positive_int, default=1, help="wrk threads")
    parser.add_argument(
        "--warmup", type=_non_negative_int, default=2, help="warm-up seconds per proxy (0: none)"
    )
    parser.add_argument(
        "--write",
        metavar="FILE",
        type=Path,
        help=f"replace the section between {DOCS_START} and {DOCS_END} in FILE "
        "(created if missing), e.g. docs/benchmarks.md",
    )
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter that runs gatehouse (default: this)"
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=20.0, help="seconds to wait for a server"
    )
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)"
    )
    return parser


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so that cleanup runs as for Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scenarios = select(args.only)
    settings = Settings(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        startup_timeout=args.startup_timeout,
        nginx=args.nginx,
        wrk=args.wrk,
        python=args.python,
    )
    for tool in (settings.nginx, settings.wrk):
        if not (Path(tool).is_file() and os.access(tool, os.X_OK)):
            print(f"bench: {tool} not found or not executable", file=sys.stderr)
            return 2

    info = machine_info(settings)
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"bench: warning: load average {load:.2f} before starting; results may be noisy")

    rows: list[Row] = []
    try:
        with terminate_on_signals(), Lab(settings, keep_tmp=args.keep_tmp) as lab:
            for scenario in scenarios:
                log(f"[{scenario.name}] {scenario.label}, {scenario.workers} worker(s)")
                rows.append(run_scenario(lab, scenario))
                if lab.backend is not None and not lab.backend.alive():
                    log("bench: the backend died; stopping")
                    break
    except KeyboardInterrupt:
        log("bench: interrupted; all servers stopped")
        return 130

    compute_ratios(rows, {s.name: s for s in SCENARIOS})
    table = render_markdown(rows, info, settings)
    print(table, end="")
    json_path = save_json(rows, info, settings)
    log(f"bench: raw results in {json_path.relative_to(REPO)}")

    failed = [row for row in rows if row.failure]
    if failed:
        log(f"bench: {len(failed)} scenario(s) failed: {', '.join(r.scenario for r in failed)}")
        if args.write:
            log(f"bench: not updating {args.write} because of the failures")
        return 1
    if args.write:
        write_docs(args.write, table)
        log(f"bench: updated {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

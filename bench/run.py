#!/usr/bin/env python3
"""Gatehouse benchmark: the Access Point side by side with nginx, in one run, as ratios.

Every scenario puts load (wrk) on one system in front of the same backend (an nginx that
answers ``return 200`` with a 100-byte body) and records requests/s, latency p50/p99 and
errors. Access Point rows are compared with the nginx reverse proxy at equal workers.

Protected resources add Authentication and Policy services and a user: wrk rows for a
protected resource with a cached decision and with the decision cache off, then (with
``bench/protected.py``, the client side) the cost of asking the Policy service at a fixed
request rate (open loop), the latency of decisions, and logins per second.

    .venv/bin/python bench/run.py                       # everything, print markdown tables
    .venv/bin/python bench/run.py --only direct,nginx   # a subset (groups or scenario names)
    .venv/bin/python bench/run.py --only nginx-1,ap-1,protected
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
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cores
import db_failover
import failover
import login
import metrics_cost
import mtls
import otp
import password_check
import protected
import publish
import scale
import tls_edge
from signals import terminate_on_signals

import distribution
import oidc

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
DOCS_START = "<!-- bench:start -->"
DOCS_END = "<!-- bench:end -->"
DOCS_MAIN = (DOCS_START, DOCS_END)
DOCS_PROTECTED = ("<!-- bench:protected:start -->", "<!-- bench:protected:end -->")
DOCS_PUBLISH = ("<!-- bench:publish:start -->", "<!-- bench:publish:end -->")
DOCS_FAILOVER = ("<!-- bench:failover:start -->", "<!-- bench:failover:end -->")
DOCS_HEADINGS = {
    DOCS_PROTECTED: "## Latest results: protected resources",
    DOCS_PUBLISH: "## Latest results: publishing a configuration",
    DOCS_FAILOVER: "## Latest results: failover",
    db_failover.DOCS: db_failover.HEADING,
    login.DOCS: login.HEADING,
    password_check.DOCS: password_check.HEADING,
    tls_edge.DOCS: tls_edge.HEADING,
    mtls.DOCS: mtls.HEADING,
    otp.DOCS: otp.HEADING,
    distribution.DOCS: distribution.HEADING,
    oidc.DOCS: oidc.HEADING,
    scale.DOCS: scale.HEADING,
    metrics_cost.DOCS: metrics_cost.HEADING,
}

# What the backend answers: exactly 100 bytes, no characters that need escaping in nginx.
BODY = ("gatehouse bench backend " + "x" * 100)[:99] + "\n"
assert len(BODY.encode()) == 100

# Goals for the Access Point, relative to the nginx reverse proxy with the same workers.
GOAL_RPS_RATIO = 0.5  # AP requests/s >= 0.5 x nginx
GOAL_P99_RATIO = 2.0  # AP p99 latency <= 2 x nginx
GOAL_PROTECTED_RPS_RATIO = 0.45  # protected resource, cached decision: >= 0.45 x nginx
GOAL_UNCACHED_ADDED_P99_MS = 3.0  # asking the Policy service adds <= 3 ms at p99 (open loop)
# Issue 20: public and protected (cached decision), 1 and 2 workers, 50 and 256 connections.
GOAL_LIMIT_RPS_RATIO = 0.75  # requests/s >= 0.75 x nginx's with the same workers
GOAL_LIMIT_P99_RATIO = 1.5  # p99 <= 1.5 x nginx's
MANY_CONNECTIONS = 256
NGINX_KEEPALIVE = 512  # the nginx proxy's idle backend connections per worker

# Protected scenarios: one user, resource "bench" (rule: authenticated) under "/", and a
# public resource under PUBLIC_PATH on the same Access Point.
BENCH_USER = "bench"
PROTECTED_RESOURCE = "bench"
PUBLIC_RESOURCE = "bench-public"
PUBLIC_PATH = "/public/"
SESSION_COOKIE = "gatehouse_session"
EVENT_STREAM_SETTLE = 1.0  # seconds for a new AP to follow the Policy service's events

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

    rate: int = 500
    decide_calls: int = 2000
    decide_clients: int = 8
    login_clients: int = 4

    def wrk_command(
        self,
        url: str,
        duration: int,
        headers: Sequence[tuple[str, str]] = (),
        connections: int | None = None,
    ) -> list[str]:
        extra = [arg for name, value in headers for arg in ("-H", f"{name}: {value}")]
        return [
            self.wrk,
            f"-t{self.threads}",
            f"-c{connections or self.connections}",
            f"-d{duration}s",
            "--latency",
            *extra,
            url,
        ]


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(
    url_host: str,
    port: int,
    path: str,
    timeout: float = 2.0,
    headers: Sequence[tuple[str, str]] = (),
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(url_host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"{url_host}:{port}", **dict(headers)})
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
        self.stack: PolicyStack | None = None

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

    def gatehouse(self, name: str, argv: list[str], config: dict[str, Any]) -> Server:
        """Start ``gatehouse ARGV --config FILE`` with ``config`` on a free port; not waited for.

        ``config`` may hold the placeholder ``{port}`` in strings (the port chosen here).
        """
        workdir = self.workdir(name)
        port = free_port()
        cfg = workdir / "config.yaml"
        # JSON is valid YAML: no PyYAML needed in the harness.
        cfg.write_text(json.dumps(config, indent=2).replace("{port}", str(port)) + "\n")
        command = [self.settings.python, "-m", "gatehouse", *argv, "--config", str(cfg)]
        return self.spawn(name, command, workdir, port)

    def get_policy(self) -> PolicyStack:
        """The Authentication and Policy services and a user, shared by all protected
        scenarios (started on first use, on one SQLite database in a fresh home)."""
        stack = self.stack
        if stack is not None and stack.authentication.alive() and stack.policy.alive():
            return stack
        if stack is not None:
            self.stop(stack.policy)
            self.stop(stack.authentication)
        home = self.workdir("home")
        password = secrets.token_urlsafe(18)
        add_user = [
            self.settings.python,
            *("-m", "gatehouse", "users", "add", BENCH_USER, "--password-stdin"),
            *("--home", str(home)),
        ]
        try:
            done = subprocess.run(
                add_user, input=password + "\n", capture_output=True, text=True, timeout=60
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{' '.join(add_user)} did not finish") from exc
        if done.returncode != 0:
            raise BenchError(f"{' '.join(add_user)} failed: {done.stdout}{done.stderr}")
        home_arg = ["--home", str(home)]
        auth = self.gatehouse(
            "authentication",
            ["authentication", *home_arg],
            {"authentication": {"listen": "127.0.0.1:{port}"}},
        )
        auth.wait_ready("/internal/v1/health", self.settings.startup_timeout)
        policy = self.gatehouse(
            "policy",
            ["policy", *home_arg],
            {
                "policy": {"listen": "127.0.0.1:{port}", "authentication": [auth.url]},
                "resources": {PROTECTED_RESOURCE: "authenticated"},
            },
        )
        policy.wait_ready("/internal/v1/health", self.settings.startup_timeout)
        self.stack = PolicyStack(auth, policy, home, BENCH_USER, password)
        return self.stack


@dataclass
class PolicyStack:
    """What protected resources need besides an Access Point: the services and a user."""

    authentication: Server
    policy: Server
    home: Path
    username: str
    password: str

    def login(self, access_point: Server) -> str:
        """Sign in through ``access_point``'s portal relay; the session id."""
        try:
            return protected.login_once(access_point.port, self.username, self.password)
        except protected.ClientError as exc:
            raise BenchError(f"login through {access_point.name} failed: {exc}") from exc


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
            f"        keepalive {NGINX_KEEPALIVE};\n"
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


def bench_resource(backend_port: int, **extra: Any) -> dict[str, Any]:
    """The AP resource every scenario loads: everything under ``/`` to the backend."""
    return {
        "id": "bench",
        "hosts": ["*"],
        "path_prefix": "/",
        "backends": [f"http://127.0.0.1:{backend_port}"],
        "public": True,
        **extra,
    }


def access_point_config(resources: list[dict[str, Any]], **access_point: Any) -> dict[str, Any]:
    return {
        "access_point": {"listen": "127.0.0.1:{port}", **access_point},
        "resources": resources,
    }


# --------------------------------------------------------------------------- scenarios

# A starter brings up the system under test for a scenario and returns the server to load.
Starter = Callable[[Lab, int], Server]


def start_direct(lab: Lab, workers: int) -> Server:
    return lab.get_backend()


def start_nginx_proxy(lab: Lab, workers: int) -> Server:
    backend = lab.get_backend()
    return lab.nginx(f"nginx-proxy-{workers}", proxy_conf(workers, backend.port))


def start_access_point(lab: Lab, name: str, workers: int, config: dict[str, Any]) -> Server:
    server = lab.gatehouse(name, ["access-point", "--workers", str(workers)], config)
    server.wait_ready("/_gatehouse/health", lab.settings.startup_timeout)
    return server


def access_point(**resource_extra: Any) -> Starter:
    """A starter for the Access Point; ``resource_extra`` adds fields to the bench resource."""

    def start(lab: Lab, workers: int) -> Server:
        resource = bench_resource(lab.get_backend().port, **resource_extra)
        config = access_point_config([resource])
        return start_access_point(lab, f"access-point-{workers}", workers, config)

    return start


def protected_config(lab: Lab, decision_cache_entries: int) -> dict[str, Any]:
    """An AP whose ``/`` is protected (rule ``authenticated``) and ``/public/`` is public,
    both to the backend, asking the bench Policy service."""
    backend = lab.get_backend().port
    resources = [
        bench_resource(backend, id=PUBLIC_RESOURCE, path_prefix=PUBLIC_PATH.rstrip("/")),
        bench_resource(backend, id=PROTECTED_RESOURCE, public=False),
    ]
    return access_point_config(
        resources,
        policy_services=[lab.get_policy().policy.url],
        decision_cache_entries=decision_cache_entries,
    )


def protected_access_point(decision_cache_entries: int) -> Starter:
    """A starter for an AP in front of the Policy service; 0 entries: no decision cache."""

    def start(lab: Lab, workers: int) -> Server:
        config = protected_config(lab, decision_cache_entries)
        name = f"access-point-protected-{workers}"
        server = start_access_point(lab, name, workers, config)
        # The cache is used once the AP follows the Policy service's event stream, a moment
        # after start; the warm-up covers it, this covers --warmup 0.
        time.sleep(EVENT_STREAM_SETTLE)
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
    headers: tuple[tuple[str, str], ...] = ()  # sent with the probe and by wrk
    login: bool = False  # sign in through the portal first and send the session cookie
    goal_rps: float | None = None  # requests/s at least this times the baseline's
    goal_p99: float | None = None  # p99 at most this times the baseline's
    table: str = "main"  # "main" or "protected": the docs section it is reported in
    connections: int | None = None  # wrk connections; None: --connections


SCENARIOS: list[Scenario] = [
    Scenario("direct", "direct", "backend direct", 1, start_direct, warmup=False, shared=True),
    Scenario("nginx-1", "nginx", "nginx proxy", 1, start_nginx_proxy),
    Scenario("nginx-2", "nginx", "nginx proxy", 2, start_nginx_proxy),
    *(
        Scenario(
            f"ap-{workers}",
            "ap",
            "Gatehouse AP",
            workers,
            access_point(),
            baseline="nginx",
            goal_rps=GOAL_LIMIT_RPS_RATIO,
            goal_p99=GOAL_LIMIT_P99_RATIO,
        )
        for workers in (1, 2)
    ),
    Scenario(
        "ap-protected-2",
        "protected",
        "AP, protected, cached decision",
        2,
        protected_access_point(decision_cache_entries=100_000),
        baseline="nginx",
        login=True,
        goal_rps=GOAL_LIMIT_RPS_RATIO,
        goal_p99=GOAL_LIMIT_P99_RATIO,
    ),
    # The same at many connections (issue 20): wrk --connections 256.
    *(
        Scenario(
            f"nginx-{workers}-c{MANY_CONNECTIONS}",
            "nginx",
            "nginx proxy",
            workers,
            start_nginx_proxy,
            connections=MANY_CONNECTIONS,
        )
        for workers in (1, 2)
    ),
    *(
        Scenario(
            f"ap-{workers}-c{MANY_CONNECTIONS}",
            "ap",
            "Gatehouse AP",
            workers,
            access_point(),
            baseline="nginx",
            goal_rps=GOAL_LIMIT_RPS_RATIO,
            goal_p99=GOAL_LIMIT_P99_RATIO,
            connections=MANY_CONNECTIONS,
        )
        for workers in (1, 2)
    ),
    *(
        Scenario(
            f"ap-protected-{workers}-c{MANY_CONNECTIONS}",
            "protected",
            "AP, protected, cached decision",
            workers,
            protected_access_point(decision_cache_entries=100_000),
            baseline="nginx",
            login=True,
            goal_rps=GOAL_LIMIT_RPS_RATIO,
            goal_p99=GOAL_LIMIT_P99_RATIO,
            connections=MANY_CONNECTIONS,
        )
        for workers in (1, 2)
    ),
    Scenario(
        "ap-protected",
        "protected",
        "AP, protected, cached decision",
        1,
        protected_access_point(decision_cache_entries=100_000),
        baseline="nginx",
        login=True,
        goal_rps=GOAL_LIMIT_RPS_RATIO,  # issue 20 (the first goal was 0.45x)
        goal_p99=GOAL_LIMIT_P99_RATIO,
        table="protected",
    ),
    Scenario(
        "ap-uncached",
        "protected",
        "AP, protected, decision cache off",
        1,
        protected_access_point(decision_cache_entries=0),
        baseline="nginx",
        login=True,
        table="protected",
    ),
]

# The protected section's wrk table: these rows of the run, in this order, with these labels.
PROTECTED_TABLE = {
    "nginx-1": "nginx proxy",
    "ap-1": "AP, public resource",
    "ap-protected": "AP, protected, cached decision",
    "ap-uncached": "AP, protected, decision cache off (asks the Policy service)",
}

# Measurements of the protected section that are not wrk rows (group "protected").
PUBLISH_SERVICES = 20
PUBLISH_COUNT = 50
STEPS = (
    "open-loop",
    "decide",
    "logins",
    "publish",
    "failover",
    "login-node",
    "password",
    "tls",
    "mtls",
    "otp",
    "distribution",
    "oidc",
    "scale",
    "metrics",
)
#: The steps of the protected section (the others stand alone).
PROTECTED_STEPS = ("open-loop", "decide", "logins")


def select(only: str | None) -> tuple[list[Scenario], list[str]]:
    """The wrk scenarios and the other measurements (``STEPS``) to run."""
    if not only:
        return list(SCENARIOS), list(STEPS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {s.name for s in SCENARIOS} | {s.group for s in SCENARIOS} | set(STEPS)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        choices = ", ".join(sorted(known))
        raise SystemExit(f"bench: unknown scenario(s) {', '.join(unknown)}; choose from {choices}")
    steps = [s for s in STEPS if s in wanted or ("protected" in wanted and s in PROTECTED_STEPS)]
    return [s for s in SCENARIOS if s.name in wanted or s.group in wanted], steps


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


def run_wrk(
    settings: Settings,
    url: str,
    duration: int,
    headers: Sequence[tuple[str, str]] = (),
    connections: int | None = None,
) -> WrkResult:
    argv = settings.wrk_command(url, duration, headers, connections)
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {redact(shlex.join(argv))}") from exc
    if proc.returncode != 0:
        raise BenchError(
            f"wrk failed ({proc.returncode}): {redact(shlex.join(argv))}\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return parse_wrk(proc.stdout)


# --------------------------------------------------------------------------- running


@dataclass
class Row:
    scenario: str
    group: str
    label: str
    workers: int
    connections: int = 0
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


def probe(server: Server, path: str, headers: Sequence[tuple[str, str]] = ()) -> None:
    """One request before the load: the answer must be the backend's, untouched."""
    try:
        status, body = http_get("127.0.0.1", server.port, path, timeout=5.0, headers=headers)
    except OSError as exc:
        raise BenchError(f"{server.name}: GET {path} failed: {exc}") from exc
    if status != 200 or body != BODY.encode():
        raise BenchError(
            f"{server.name}: GET {path} answered HTTP {status} with {body[:200]!r}, "
            f"expected 200 with the backend's {len(BODY)}-byte body"
        )


def run_scenario(lab: Lab, scenario: Scenario) -> Row:
    settings = lab.settings
    connections = scenario.connections or settings.connections
    row = Row(scenario.name, scenario.group, scenario.label, scenario.workers, connections)
    server: Server | None = None
    try:
        server = scenario.start(lab, scenario.workers)
        url = server.url + scenario.path
        headers = list(scenario.headers)
        if scenario.login:
            session = lab.get_policy().login(server)
            headers.append(("Cookie", f"{SESSION_COOKIE}={session}"))
        probe(server, scenario.path, headers)
        if scenario.warmup and settings.warmup > 0:
            log(f"  warm-up {settings.warmup}s")
            run_wrk(settings, url, settings.warmup, headers, connections)
        command = shlex.join(settings.wrk_command(url, settings.duration, headers, connections))
        log(f"  measuring {settings.duration}s: {redact(command)}")
        row.result = run_wrk(settings, url, settings.duration, headers, connections)
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
                if b.group == base_group
                and b.workers == row.workers
                and b.connections == row.connections
                and b.result is not None
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


# --------------------------------------------------------------------------- protected steps

OPEN_LOOP_BLOCK = 2.0  # seconds: targets take turns in blocks this long (A B C A B C ...)
OPEN_LOOP_WARMUP = 0.2  # seconds at the rate before each block's measurement starts
OPEN_LOOP_CONNECTIONS = 32
DECIDE_WARMUP = 200  # calls per connection before measuring
OPEN_LOOP_TARGETS = {
    "nginx": "nginx proxy",
    "public": "AP, public resource",
    "uncached": "AP, protected, decision cache off",
}


@dataclass
class StepResults:
    """The protected section's measurements that are not wrk rows."""

    open_loop: dict[str, protected.OpenLoopResult] = field(default_factory=dict)
    decide: dict[int, protected.Latencies] = field(default_factory=dict)  # by clients
    logins: protected.Latencies | None = None
    publish: publish.PublishResult | None = None
    failover: failover.FailoverResult | None = None
    failures: dict[str, str] = field(default_factory=dict)
    #: bench/metrics_cost.py's pairs (metrics on and off), as summaries.
    metrics_cost: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "open_loop": {
                name: {
                    "sent": r.sent,
                    "rate": r.rate,
                    "latency": r.latency.summary(),
                    "generator_lag": r.lag.summary(),
                }
                for name, r in self.open_loop.items()
            },
            "decide": {str(clients): r.summary() for clients, r in self.decide.items()},
            "logins": self.logins.summary() if self.logins else None,
            "publish": self.publish.summary() if self.publish else None,
            "failover": self.failover.summary() if self.failover else None,
            "metrics_cost": self.metrics_cost,
            "failures": self.failures,
        }


def run_steps(lab: Lab, steps: Sequence[str]) -> StepResults:
    """Open-loop cost of undecided requests, decision latency, logins/s: one AP (1 worker)
    with a public resource under PUBLIC_PATH and a protected one, no decision cache."""
    results = StepResults()
    if not steps:
        return results
    settings = lab.settings
    started: list[Server] = []
    try:
        log("[protected] Access Point, public and protected resource, decision cache off")
        server = start_access_point(lab, "access-point-steps", 1, protected_config(lab, 0))
        started.append(server)
        time.sleep(EVENT_STREAM_SETTLE)
        stack = lab.get_policy()
        session = stack.login(server)
        cookie = [("Cookie", f"{SESSION_COOKIE}={session}")]
        probe(server, PUBLIC_PATH)
        probe(server, "/", cookie)
        for step in steps:
            try:
                if step == "open-loop":
                    nginx = start_nginx_proxy(lab, 1)
                    started.append(nginx)
                    probe(nginx, "/")
                    results.open_loop = step_open_loop(settings, nginx, server, cookie)
                    lab.stop(nginx)
                elif step == "decide":
                    results.decide = step_decide(settings, stack, session)
                elif step == "logins":
                    results.logins = step_logins(settings, stack, server)
                for proc in (server, stack.policy, stack.authentication):
                    if not proc.alive():
                        raise BenchError(f"{proc.name} died\n{proc.diagnostics()}")
            except (BenchError, protected.ClientError) as exc:
                results.failures[step] = str(exc)
                log(f"  FAILED: {exc}")
    except BenchError as exc:
        log(f"  FAILED: {exc}")
        for step in steps:
            results.failures.setdefault(step, str(exc))
    finally:
        for proc in started:
            lab.stop(proc)
    return results


def run_publish(settings: Settings) -> publish.PublishResult:
    log(
        f"[publish] {PUBLISH_SERVICES} services following one Administration service, "
        f"{PUBLISH_COUNT} publishes"
    )
    result = publish.run(settings.python, PUBLISH_SERVICES, PUBLISH_COUNT)
    if result.failure:
        log(f"  FAILED: {result.failure}")
    else:
        summary = result.summary()
        log(f"  p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms")
    return result


def run_failover(settings: Settings) -> failover.FailoverResult:
    """The cluster runs its services with this interpreter (``sys.executable``)."""
    log(
        f"[failover] the example HA cluster, {failover.SESSIONS} sessions on "
        f"{failover.ACCESS_POINT} at {failover.RATE:g} requests/s, SIGKILL to "
        f"{failover.PRIMARY}, then fail-back"
    )
    result = failover.run(failover.SESSIONS, failover.RATE)
    if result.failure:
        log(f"  FAILED: {result.failure}")
    else:
        summary = result.summary()
        log(
            f"  first request served by {failover.SECONDARY} {summary['first_ok_ms']} ms after "
            f"the kill, {summary['total']['failed']} failed, fail-back "
            f"{summary['failback_s']} s after {failover.PRIMARY} was healthy"
        )
    return result


def step_open_loop(
    settings: Settings, nginx: Server, ap: Server, cookie: list[tuple[str, str]]
) -> dict[str, protected.OpenLoopResult]:
    rounds = open_loop_rounds(settings)
    log(
        f"[open-loop] {settings.rate} requests/s, {settings.duration}s per target in "
        f"{rounds} turns of {settings.duration / rounds:g}s (+{OPEN_LOOP_WARMUP:g}s warm-up), "
        f"{OPEN_LOOP_CONNECTIONS} keep-alive connections"
    )

    def target(
        server: Server, path: str, headers: list[tuple[str, str]]
    ) -> Callable[[float], protected.OpenLoopResult]:
        def run(duration: float) -> protected.OpenLoopResult:
            return protected.open_loop(
                server.port,
                path,
                headers,
                BODY.encode(),
                rate=settings.rate,
                duration=duration,
                warmup=OPEN_LOOP_WARMUP,
                connections=OPEN_LOOP_CONNECTIONS,
            )

        return run

    results = protected.open_loop_alternating(
        [
            ("nginx", target(nginx, "/", [])),
            ("public", target(ap, PUBLIC_PATH, [])),
            ("uncached", target(ap, "/", cookie)),
        ],
        settings.duration,
        rounds,
    )
    for name, r in results.items():
        log(
            f"  {OPEN_LOOP_TARGETS[name]}: {r.latency.count} answers, p50 "
            f"{fmt_ms(r.latency.p(50))} ms, p99 {fmt_ms(r.latency.p(99))} ms, errors "
            f"{r.latency.errors}; generator lag p99 {fmt_ms(r.lag.p(99))} ms"
        )
    return results


def open_loop_rounds(settings: Settings) -> int:
    return max(1, round(settings.duration / OPEN_LOOP_BLOCK))


def decision_payload(session: str) -> bytes:
    return json.dumps(
        {
            "session": session,
            "resource": PROTECTED_RESOURCE,
            "method": "GET",
            "path": "/",
            "url": "http://127.0.0.1/",
            "client_ip": "127.0.0.1",
            "headers": {},
            "ap": "ap1",
        }
    ).encode()


def step_decide(
    settings: Settings, stack: PolicyStack, session: str
) -> dict[int, protected.Latencies]:
    out: dict[int, protected.Latencies] = {}
    for clients in (1, settings.decide_clients):
        log(
            f"[decide] {settings.decide_calls} calls over {clients} persistent connection(s), "
            f"after {DECIDE_WARMUP} per connection"
        )
        r = protected.decision_latency(
            stack.policy.port,
            decision_payload(session),
            calls=settings.decide_calls,
            clients=clients,
            warmup=DECIDE_WARMUP,
        )
        log(
            f"  {r.rate:,.0f}/s, p50 {fmt_ms(r.p(50))} ms, p99 {fmt_ms(r.p(99))} ms, "
            f"errors {r.errors}{f' (first: {r.first_error})' if r.errors else ''}"
        )
        out[clients] = r
    return out


def step_logins(settings: Settings, stack: PolicyStack, ap: Server) -> protected.Latencies:
    log(f"[logins] {settings.login_clients} clients for {settings.duration}s through the AP")
    r = protected.login_rate(
        ap.port,
        stack.username,
        stack.password,
        clients=settings.login_clients,
        duration=settings.duration,
    )
    log(
        f"  {r.count} logins, {r.rate:.1f}/s, p50 {fmt_ms(r.p(50))} ms, "
        f"p99 {fmt_ms(r.p(99))} ms, errors {r.errors}"
        f"{f' (first: {r.first_error})' if r.errors else ''}"
    )
    return r


# --------------------------------------------------------------------------- reporting


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def redact(text: str) -> str:
    """Session ids stay out of logs and error messages."""
    return re.sub(rf"({SESSION_COOKIE}=)[^\s'\";]+", r"\1…", text)


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
        "cores": _cores(),
    }


def _cores() -> str:
    """How much two busy CPUs slow each other now (bench/cores.py): on a shared virtual
    machine this moves every ratio against nginx, whatever the code does."""
    ratio = cores.speed_together()
    return "one CPU" if ratio is None else f"{ratio:.2f}x"


def error_cell(row: Row) -> str:
    if row.result is None:
        return "—"
    r = row.result
    if r.errors == 0:
        return "0"
    parts = [f"non-2xx {r.non_2xx_3xx}"] if r.non_2xx_3xx else []
    parts += [f"{k} {v}" for k, v in r.socket_errors.items() if v]
    return f"{r.errors} ({', '.join(parts)})"


def machine_lines(info: dict[str, str]) -> list[str]:
    return [
        f"- Machine: {info['nproc']} CPUs, {info['cpu']}, {info['kernel']}; "
        f"load average {info['load']} at start"
        + (f", {info['load_end']} at the end" if "load_end" in info else "")
        + (
            f"; two busy CPUs at once ran at {info['cores']} the speed of one alone"
            " (`bench/cores.py`; 1.00x: cores of its own)"
            if "cores" in info
            else ""
        ),
        f"- Software: Python {info['python']}, {info['nginx']}, {info['wrk']}",
    ]


def wrk_line(settings: Settings) -> str:
    return (
        f"`wrk -t{settings.threads} -c{settings.connections} -d{settings.duration}s "
        f"--latency`, {settings.warmup} s warm-up per proxy"
    )


def render_markdown(
    rows: list[Row], info: dict[str, str], settings: Settings, scenarios: dict[str, Scenario]
) -> str:
    """The main section: every row of the ``main`` table."""
    rows = [row for row in rows if scenarios[row.scenario].table == "main"]
    lines = [
        f"Measured {info['date']} at commit `{info['commit']}`.",
        "",
        *machine_lines(info),
        f"- Load: {wrk_line(settings)}; backend: nginx, 1 worker, "
        f"`return 200` with a {len(BODY)}-byte body",
        "",
        "| scenario | workers | connections | requests/s | p50 ms | p99 ms | errors "
        "| rps vs nginx | p99 vs nginx |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        if row.result is None:
            lines.append(
                f"| {row.label} | {row.workers} | {row.connections} | {failed_cell(row.failure)} "
                "| — | — | — | — | — |"
            )
            continue
        lines.append(
            f"| {row.label} | {row.workers} | {row.connections} | {row.result.rps:,.0f} "
            f"| {fmt_ms(row.p50)} "
            f"| {fmt_ms(row.p99)} | {error_cell(row)} | {fmt_ratio(row.rps_ratio)} "
            f"| {fmt_ratio(row.p99_ratio)} |"
        )
    goals = goal_lines(rows, scenarios)
    if goals:
        lines += ["", *goals]
    return "\n".join(lines) + "\n"


def failed_cell(failure: str | None) -> str:
    first = (failure or "failed").splitlines()[0].replace("|", "\\|")
    return f"failed: {first}"


def goal_lines(
    rows: list[Row], scenarios: dict[str, Scenario], labels: dict[str, str] | None = None
) -> list[str]:
    out = []
    for row in rows:
        scenario = scenarios[row.scenario]
        if row.result is None or (scenario.goal_rps is None and scenario.goal_p99 is None):
            continue
        checks = []
        if scenario.goal_rps is not None:
            ok = row.rps_ratio is not None and row.rps_ratio >= scenario.goal_rps
            checks.append(
                (
                    ok,
                    f"requests/s {fmt_ratio(row.rps_ratio)} of nginx "
                    f"(goal ≥ {scenario.goal_rps:g}x) {'✓' if ok else '✗'}",
                )
            )
        if scenario.goal_p99 is not None:
            ok = row.p99_ratio is not None and row.p99_ratio <= scenario.goal_p99
            checks.append(
                (
                    ok,
                    f"p99 {fmt_ratio(row.p99_ratio)} of nginx "
                    f"(goal ≤ {scenario.goal_p99:g}x) {'✓' if ok else '✗'}",
                )
            )
        verdict = "met" if all(ok for ok, _ in checks) else "not met"
        label = (labels or {}).get(row.scenario, row.label)
        workers = f"{row.workers} worker{'s' if row.workers != 1 else ''}"
        workers += f", {row.connections} connections" if row.connections else ""
        out.append(f"- {label}, {workers}: goal {verdict}: {', '.join(text for _, text in checks)}")
    return out


def render_protected(
    rows: list[Row],
    steps: StepResults,
    info: dict[str, str],
    settings: Settings,
    scenarios: dict[str, Scenario],
) -> str:
    """The protected section: wrk rows next to nginx, open loop, decisions, logins."""
    lines = [
        f"Measured {info['date']} at commit `{info['commit']}`, in the same run as the "
        "table above.",
        "",
        *machine_lines(info),
        "- Services: one Authentication and one Policy service (a process each), SQLite in "
        "a temporary home, one user; the protected resource's rule is `authenticated`. "
        "Every Access Point and nginx proxy has 1 worker; the backend is the same nginx.",
    ]
    by_name = {row.scenario: row for row in rows}
    table_rows = [by_name[name] for name in PROTECTED_TABLE if name in by_name]
    if table_rows:
        lines += [
            "",
            f"**Throughput** ({wrk_line(settings)}; protected rows send a logged-in "
            "session's cookie)",
            "",
            "| scenario | requests/s | p50 ms | p99 ms | errors | rps vs nginx | p99 vs nginx |",
            "|---|---:|---:|---:|---|---:|---:|",
        ]
        for row in table_rows:
            label = PROTECTED_TABLE[row.scenario]
            if row.result is None:
                lines.append(f"| {label} | {failed_cell(row.failure)} | — | — | — | — | — |")
                continue
            lines.append(
                f"| {label} | {row.result.rps:,.0f} | {fmt_ms(row.p50)} | {fmt_ms(row.p99)} "
                f"| {error_cell(row)} | {fmt_ratio(row.rps_ratio)} | {fmt_ratio(row.p99_ratio)} |"
            )
        goal_rows = [row for row in table_rows if scenarios[row.scenario].table == "protected"]
        goals = goal_lines(goal_rows, scenarios, PROTECTED_TABLE)
        if goals:
            lines += ["", *goals]
    lines += render_open_loop(steps, settings)
    lines += render_decide(steps, settings)
    lines += render_logins(steps, settings)
    return "\n".join(lines) + "\n"


def render_open_loop(steps: StepResults, settings: Settings) -> list[str]:
    if "open-loop" not in steps.failures and not steps.open_loop:
        return []
    lines = [
        "",
        f"**Cost of asking the Policy service, at a fixed rate** (open loop: "
        f"{settings.rate} requests/s, {settings.duration} s per target in "
        f"{open_loop_rounds(settings)} turns, {OPEN_LOOP_CONNECTIONS} keep-alive "
        "connections; latency from each request's scheduled instant, so queueing counts)",
        "",
    ]
    if "open-loop" in steps.failures:
        return [*lines, failed_cell(steps.failures["open-loop"])]
    lines += [
        "| target | answers | errors | p50 ms | p99 ms | p99.9 ms | max ms | p99 vs nginx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nginx = steps.open_loop.get("nginx")
    nginx_p99 = nginx.latency.p(99) if nginx else None
    for name, label in OPEN_LOOP_TARGETS.items():
        r = steps.open_loop.get(name)
        if r is None:
            continue
        lat = r.latency
        p99 = lat.p(99)
        ratio = p99 / nginx_p99 if p99 is not None and nginx_p99 else None
        lines.append(
            f"| {label} | {lat.count:,} | {lat.errors} | {fmt_ms(lat.p(50))} | {fmt_ms(p99)} "
            f"| {fmt_ms(lat.p(99.9))} | {fmt_ms(max(lat.samples, default=None))} "
            f"| {fmt_ratio(ratio)} |"
        )
    public, uncached = steps.open_loop.get("public"), steps.open_loop.get("uncached")
    if public and uncached:
        added = added_ms(public.latency, uncached.latency, 99)
        added50 = added_ms(public.latency, uncached.latency, 50)
        ok = added is not None and added <= GOAL_UNCACHED_ADDED_P99_MS
        lines += [
            "",
            f"- Asking the Policy service for every request adds {fmt_signed(added)} ms at p99 "
            f"({fmt_signed(added50)} ms at p50) over the public resource on the same AP: goal "
            f"{'met' if ok else 'not met'} (≤ {GOAL_UNCACHED_ADDED_P99_MS:g} ms at p99) "
            f"{'✓' if ok else '✗'}",
        ]
    lags = [x for r in steps.open_loop.values() for x in r.lag.samples]
    lines.append(
        f"- The load generator handed requests over late by at most "
        f"{fmt_ms(protected.percentile(lags, 99))} ms at p99 "
        f"({fmt_ms(max(lags, default=None))} ms max); that lateness is inside the latencies."
    )
    return lines


def added_ms(base: protected.Latencies, other: protected.Latencies, q: float) -> float | None:
    a, b = base.p(q), other.p(q)
    return None if a is None or b is None else b - a


def fmt_signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.2f}"


def render_decide(steps: StepResults, settings: Settings) -> list[str]:
    if "decide" not in steps.failures and not steps.decide:
        return []
    lines = [
        "",
        f"**Decision latency** (`POST /internal/v1/decide` for a valid session, straight to "
        f"the Policy service over persistent connections, {DECIDE_WARMUP} warm-up calls each; "
        "each client waits for its answer before the next call)",
        "",
    ]
    if "decide" in steps.failures:
        return [*lines, failed_cell(steps.failures["decide"])]
    lines += [
        "| clients | calls | decisions/s | p50 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for clients, r in steps.decide.items():
        label = "1 (sequential)" if clients == 1 else f"{clients} concurrent"
        lines.append(
            f"| {label} | {r.count:,} | {r.rate:,.0f} | {fmt_ms(r.p(50))} | {fmt_ms(r.p(99))} "
            f"| {fmt_ms(max(r.samples, default=None))} | {r.errors} |"
        )
    return lines


def render_logins(steps: StepResults, settings: Settings) -> list[str]:
    if "logins" not in steps.failures and steps.logins is None:
        return []
    lines = [
        "",
        f"**Logins** ({settings.login_clients} clients for {settings.duration} s through the "
        "AP's portal relay, each login a GET of the form and a POST of it; argon2id with "
        "47 MiB is slow on purpose)",
        "",
    ]
    if steps.logins is None:
        return [*lines, failed_cell(steps.failures.get("logins"))]
    r = steps.logins
    lines += [
        "| clients | logins | logins/s | p50 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| {settings.login_clients} | {r.count:,} | {r.rate:.1f} | {fmt_ms(r.p(50))} "
        f"| {fmt_ms(r.p(99))} | {fmt_ms(max(r.samples, default=None))} | {r.errors} |",
    ]
    if "logins" in steps.failures:
        lines += ["", failed_cell(steps.failures["logins"])]
    return lines


DOCS_INTRO = f"""\
# Benchmarks

How fast is the Access Point compared with nginx doing the same job, and what do protected
resources cost? `bench/run.py` measures them side by side, in one run on one machine, and
reports the Access Point as ratios to nginx: absolute numbers depend on the machine, ratios
much less.

## Running it

```sh
make bench                                      # everything, prints markdown tables
make bench BENCH_ARGS="--only direct,nginx"     # a subset: groups or scenario names
make bench BENCH_ARGS="--only nginx-1,ap-1,protected"   # the protected section
make bench BENCH_ARGS="--duration 30"           # longer runs (default 10 s each)
make bench BENCH_ARGS="--write docs/benchmarks.md"   # also update the results below
```

It needs `nginx` (Debian's `nginx-light` is enough) and `wrk`. Every server runs on 127.0.0.1
on a free port, in its own temporary directory, and all are stopped at the end (also on
Ctrl-C). The default run takes about three minutes. Raw results are saved as JSON in
`bench/results/` (not committed).

## What it measures

- **backend**: one nginx worker answering every request with `return 200` and a
  {len(BODY)}-byte body, access log off. It is the same backend for every scenario and always
  has one worker, whatever the number of workers of the proxy in front of it.
- **backend direct**: wrk against the backend, the ceiling for this machine.
- **nginx proxy**: nginx as a reverse proxy (`proxy_pass` to an upstream with
  `keepalive {NGINX_KEEPALIVE}`, HTTP/1.1 to the backend), with 1 and with 2 worker processes.
  {NGINX_KEEPALIVE} idle connections per worker is enough for {MANY_CONNECTIONS} concurrent
  requests, so nginx never closes a backend connection it needs again (with `keepalive 64`
  one request in five opened a new one at {MANY_CONNECTIONS} connections). The Access Point
  keeps its default (`upstream_keepalive: 64`), above which it keeps the connections a burst
  needs while it reuses them.
- **Gatehouse AP**: `gatehouse access-point --workers N` with one public resource for `/`
  pointing at the backend, with 1 and with 2 workers.

Each proxy gets a 2 s warm-up, then `wrk -t1 -c50 -d10s --latency` (`--duration`,
`--connections`, `--threads` and `--warmup` change these). Before the load, one request checks
that the proxy returns the backend's exact body. Both nginx instances allow a million requests
per keep-alive connection (`keepalive_requests`) so that nginx's default of 1000 does not add
reconnections that the Access Point would not have.

Scenarios are rows of the `SCENARIOS` table in `bench/run.py`; `--only` takes their names
(`direct`, `nginx-1`, `nginx-2`, `ap-1`, `ap-2`, `ap-protected`, `ap-uncached`), the other
measurements (`open-loop`, `decide`, `logins`) or groups (`direct`, `nginx`, `ap`,
`protected`). A new scenario is one more row; a row can send extra request headers
(`headers`) or sign in first and send the session cookie (`login=True`).

### Protected resources

- **Services**: one Authentication and one Policy service (`gatehouse authentication`,
  `gatehouse policy`, a process each) on one SQLite database in a temporary home, with one
  user made by `gatehouse users add` and the rule `authenticated` for the protected
  resource. All protected measurements share them. Each Access Point has 1 worker, a
  protected resource for `/` and a public one for `/public/`, both to the same backend.
- **AP, protected, cached decision** (`ap-protected`): the run signs in through the AP's
  portal relay (GET the form, POST it), checks that the session cookie gets the backend's
  body, and wrk sends that cookie with every request. After the warm-up the decisions come
  from the AP's cache (the Policy service lets APs keep them for 30 s).
- **AP, protected, decision cache off** (`ap-uncached`): the same with
  `decision_cache_entries: 0`, so every request is a `POST /internal/v1/decide` to the
  Policy service. The protected table shows both next to the `nginx-1` and `ap-1` rows of
  the same run.
- **Cost at a fixed rate** (`open-loop`): wrk saturates the system, so the Policy
  service's cost shows as fewer requests/s; what users feel is latency at a given load.
  `bench/protected.py` sends GETs at fixed instants, 500 per second (`--rate`), over 32
  keep-alive connections, whatever the server does. A request that finds every connection
  busy waits in line, and latency runs from the instant the request was scheduled for, so a
  stall is charged to every request behind it (no coordinated omission). A thread sleeping
  with the kernel's precision hands each request to the event loop at its instant; how late
  it was is reported, and is inside the latencies. Targets: the nginx proxy (for reference),
  and the public and the protected resource (cache off) of one AP, taking turns in blocks
  of 2 s (`--duration` seconds per target in total, plus 0.2 s of warm-up per block), so a
  change in the machine's load hits all three alike. The difference between the protected
  and the public resource's p99 is what asking the Policy service costs.
- **Decision latency** (`decide`): `POST /internal/v1/decide` for the session of a login,
  straight to the Policy service: 2,000 calls (`--decide-calls`) one after another on one
  persistent connection, then 2,000 spread over 8 persistent connections in parallel
  (`--decide-clients`), after 200 warm-up calls per connection.
- **Logins** (`logins`): 4 clients (`--login-clients`) for `--duration` seconds, each login
  a GET of the form and a POST of it through the AP; logins per second and the latency of
  the pair. argon2id with 47 MiB makes every login expensive on purpose.

## Reading the results

`requests/s` is throughput; `p50`/`p99` are wrk's latency percentiles in milliseconds;
`errors` counts non-2xx/3xx answers and socket errors (connect, read, write, timeout) and
should be 0. For the Access Point, `rps vs nginx` is its requests/s divided by the nginx
proxy's with the same number of workers (higher is better) and `p99 vs nginx` the same
ratio of p99 latencies (lower is better). In the other protected tables, percentiles are
the bench's own (nearest rank over every answer) and `errors` counts answers that were not
the expected ones.

wrk, the proxy and the backend share the machine's cores, so a proxy that uses less CPU leaves
more for the others; that is the same for nginx and the Access Point, which is why the ratios
are the numbers to watch. On a small machine with other work running, results move by 10-20 %
between runs (the header shows the load average at the start and at the end); compare ratios
within one run, and repeat a run before drawing conclusions from a small difference. Tail
latencies (the open loop's and the decisions' p99) move much more than that: one stall of a
few tens of milliseconds, from the machine or from the service, is a p99 of its own.

## Goals

With equal workers, the Access Point should reach

- at least **{GOAL_RPS_RATIO:g}x** the nginx proxy's requests/s, and
- at most **{GOAL_P99_RATIO:g}x** its p99 latency (the first goals);
- issue 20: at least **{GOAL_LIMIT_RPS_RATIO:g}x** and at most **{GOAL_LIMIT_P99_RATIO:g}x**,
  with 1 and 2 workers, at 50 (the default `--connections`) and {MANY_CONNECTIONS}
  connections, for a public resource and a protected one with a cached decision (the rows'
  goal lines).

For protected resources (1 worker):

- with a cached decision, at least **{GOAL_PROTECTED_RPS_RATIO:g}x** the nginx proxy's requests/s
  (the first goal; issue 20's above applies now);
- at 500 requests/s, asking the Policy service for every request (cache off) adds at most
  **{GOAL_UNCACHED_ADDED_P99_MS:g} ms** to the p99 latency of the public resource on the same AP.

## Latest results

"""


def write_docs(path: Path, sections: dict[tuple[str, str], str]) -> None:
    """Replace the text between each pair of markers; a missing pair is appended."""
    new_page = DOCS_INTRO + f"{DOCS_MAIN[0]}\n{DOCS_MAIN[1]}\n"
    text = path.read_text() if path.exists() else new_page
    for (start_marker, end_marker), content in sections.items():
        block = f"{start_marker}\n{content.rstrip()}\n{end_marker}"
        start, end = text.find(start_marker), text.find(end_marker)
        if start == -1 or end == -1 or end < start:
            heading = DOCS_HEADINGS.get((start_marker, end_marker))
            text = text.rstrip() + "\n\n" + (f"{heading}\n\n" if heading else "") + block + "\n"
        else:
            text = text[:start] + block + text[end + len(end_marker) :]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def save_json(
    rows: list[Row], steps: StepResults, info: dict[str, str], settings: Settings
) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}.json"
    data = {
        "machine": info,
        "settings": dataclasses.asdict(settings),
        "goals": {
            "rps_ratio_min": GOAL_RPS_RATIO,
            "p99_ratio_max": GOAL_P99_RATIO,
            "protected_cached_rps_ratio_min": GOAL_PROTECTED_RPS_RATIO,
            "uncached_added_p99_ms_max": GOAL_UNCACHED_ADDED_P99_MS,
        },
        "results": [
            {**dataclasses.asdict(row), "errors": row.result.errors if row.result else None}
            for row in rows
        ],
        "protected": steps.to_json(),
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


def run_metrics_cost(lab: Lab) -> list[metrics_cost.Pair]:
    """bench/metrics_cost.py: the same Access Point with metrics on and off, in turns."""
    settings = lab.settings
    pairs = []
    for workers in metrics_cost.WORKERS:
        resource = bench_resource(lab.get_backend().port)
        metrics_port = free_port()
        started: list[Server] = []
        try:
            off = start_access_point(
                lab, f"access-point-metrics-off-{workers}", workers, access_point_config([resource])
            )
            started.append(off)
            config = access_point_config(
                [resource], metrics={"listen": f"127.0.0.1:{metrics_port}"}
            )
            on = start_access_point(lab, f"access-point-metrics-on-{workers}", workers, config)
            started.append(on)
            probe(off, "/")
            probe(on, "/")
            log(f"[metrics] {workers} worker(s): metrics off and on, in turns")
            servers = {False: off, True: on}
            pair = metrics_cost.measure(
                workers,
                off.url + "/",
                on.url + "/",
                metrics_port,
                lambda url, seconds: run_wrk(settings, url, seconds),
                settings.warmup,
                # Each server leads its own process group (start_new_session).
                lambda is_on, servers=servers: metrics_cost.process_group_cpu(
                    servers[is_on].proc.pid
                ),
            )
            log(
                f"  off {pair.rps(False) or 0:,.0f} req/s, on {pair.rps(True) or 0:,.0f} req/s, "
                f"ratio {pair.ratio or 0:.3f} ({pair.verdict()}); "
                f"CPU {pair.cpu_us(False) or 0:.2f} / "
                f"{pair.cpu_us(True) or 0:.2f} us per request, ratio {pair.cpu_ratio or 0:.3f}; "
                f"counted {pair.counted:,} / wrk {pair.completed:,}"
            )
        except (BenchError, OSError, RuntimeError) as exc:
            pair = metrics_cost.Pair(workers, failure=str(exc))
            log(f"  FAILED: {exc}")
        finally:
            for server in started:
                lab.stop(server)
        pairs.append(pair)
    return pairs


def run_scale(lab: Lab) -> scale.ScaleResult:
    """bench/scale.py's measurements; the routing rows are wrk scenarios of this harness."""
    settings = lab.settings
    result = scale.ScaleResult()
    for backend in ("sqlite", "postgresql"):
        try:
            result.sessions += scale.sessions_at_sizes(
                lab, settings.python, backend, startup_timeout=settings.startup_timeout
            )
        except (BenchError, RuntimeError, OSError) as exc:
            result.failures.append(f"decisions on {backend}: {exc}")

    def routes(count: int) -> Starter:
        def start(lab: Lab, workers: int) -> Server:
            resources = scale.route_resources(count, lab.get_backend().port)
            config = access_point_config(resources)
            return start_access_point(lab, f"access-point-routes-{count}", workers, config)

        return start

    for count in scale.ROUTE_SIZES:
        scenario = Scenario(
            f"routes-{count}",
            "scale",
            f"AP, {count} resources",
            1,
            routes(count),
            path=scale.ROUTE_PATH,
            table="scale",
        )
        log(f"[routes-{count}] {scenario.label}")
        row = run_scenario(lab, scenario)
        r = row.result
        result.routes.append(
            scale.RouteRow(
                count, r.rps if r else 0.0, row.p50, row.p99, r.errors if r else 0, row.failure
            )
        )
        if row.failure:
            result.failures.append(f"routes-{count}: {row.failure}")
    result.publish = scale.publish_at_sizes(settings.python)
    result.failures += [
        f"publish to {row.services}: {row.result.failure}"
        for row in result.publish
        if row.result.failure
    ]
    return result


def build_parser() -> argparse.ArgumentParser:
    names = ", ".join(
        dict.fromkeys([s.group for s in SCENARIOS] + [s.name for s in SCENARIOS] + list(STEPS))
    )
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
        help=f"replace the sections between {DOCS_START} and {DOCS_END} and between "
        f"{DOCS_PROTECTED[0]} and {DOCS_PROTECTED[1]} in FILE with what this run measured "
        "(created if missing), e.g. docs/benchmarks.md",
    )
    parser.add_argument(
        "--rate", type=_positive_int, default=500, help="open-loop requests/s (default 500)"
    )
    parser.add_argument(
        "--decide-calls",
        type=_positive_int,
        default=2000,
        help="decision calls per measurement (default 2000)",
    )
    parser.add_argument(
        "--decide-clients",
        type=_positive_int,
        default=8,
        help="concurrent decision clients (default 8)",
    )
    parser.add_argument(
        "--login-clients", type=_positive_int, default=4, help="concurrent logins (default 4)"
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scenarios, steps = select(args.only)
    settings = Settings(
        duration=args.duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
        startup_timeout=args.startup_timeout,
        nginx=args.nginx,
        wrk=args.wrk,
        python=args.python,
        rate=args.rate,
        decide_calls=args.decide_calls,
        decide_clients=args.decide_clients,
        login_clients=args.login_clients,
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
    step_results = StepResults()
    sections: dict[tuple[str, str], str] = {}
    started = time.monotonic()
    try:
        with terminate_on_signals(), Lab(settings, keep_tmp=args.keep_tmp) as lab:
            for scenario in scenarios:
                log(f"[{scenario.name}] {scenario.label}, {scenario.workers} worker(s)")
                rows.append(run_scenario(lab, scenario))
                if lab.backend is not None and not lab.backend.alive():
                    log("bench: the backend died; stopping")
                    break
            else:
                step_results = run_steps(lab, [s for s in steps if s in PROTECTED_STEPS])
                if "publish" in steps:
                    step_results.publish = run_publish(settings)
                    if step_results.publish.failure:
                        step_results.failures["publish"] = step_results.publish.failure
                if "failover" in steps:
                    step_results.failover = run_failover(settings)
                    if step_results.failover.failure:
                        step_results.failures["failover"] = step_results.failover.failure
                    # The database row: SIGKILL of the PostgreSQL primary, Patroni's
                    # defaults beside the tuned settings (bench/db_failover.py).
                    log("[failover] database: SIGKILL of the PostgreSQL primary's postmaster")
                    db_rows, sections[db_failover.DOCS] = db_failover.run()
                    db_failed = [r.variant for r in db_rows if r.failure]
                    if db_failed:
                        step_results.failures["db-failover"] = ", ".join(db_failed)
                if "login-node" in steps:  # bench/login.py: a whole node, 4 clients
                    log(f"[login-node] gatehouse up, {settings.login_clients} clients")
                    _, login_table = login.run(settings.login_clients, settings.duration)
                    sections[login.DOCS] = login_table
                if "password" in steps:  # bench/password_check.py: argon2id, bare libraries
                    log("[password] one argon2id check: argon2-cffi, libsodium, Gatehouse")
                    rounds, times = password_check.ROUNDS, password_check.TIMES
                    checks = password_check.measure(rounds, times)
                    sections[password_check.DOCS] = password_check.render(checks, rounds, times)
                if "tls" in steps:  # bench/tls_edge.py: AP vs nginx, both over TLS
                    _, tls_table = tls_edge.run(
                        (1, 2),
                        settings.duration,
                        settings.connections,
                        settings.threads,
                        settings.warmup,
                        settings.python,
                        settings.wrk,
                    )
                    sections[tls_edge.DOCS] = tls_table
                if "mtls" in steps:  # bench/mtls.py: internal links on mTLS vs plaintext
                    log("[mtls] the same stack with plaintext and with mutual TLS links")
                    _, mtls_table = mtls.run(settings.python)
                    sections[mtls.DOCS] = mtls_table
                if "otp" in steps:  # bench/otp.py: OTP validations vs privacyIDEA
                    log("[otp] OTP validations: Gatehouse and privacyIDEA side by side")
                    _, otp_table = otp.run(settings.python, seconds=settings.duration)
                    sections[otp.DOCS] = otp_table
                if "distribution" in steps:  # bench/distribution.py: outbox to SMTP
                    log("[distribution] two Distribution services beside a bare SMTP loop")
                    _, distribution_table = distribution.run(settings.python)
                    sections[distribution.DOCS] = distribution_table
                if "oidc" in steps:  # bench/oidc.py: the OpenID Provider vs oidc-provider
                    log("[oidc] introspection and code exchange: Gatehouse and oidc-provider")
                    oidc_result, oidc_table = oidc.run(
                        seconds=settings.duration, connections=16, wrk=settings.wrk
                    )
                    sections[oidc.DOCS] = oidc_table
                    if oidc_result.failure:
                        step_results.failures["oidc"] = oidc_result.failure
                if "metrics" in steps:  # bench/metrics_cost.py: metrics on vs off
                    pairs = run_metrics_cost(lab)
                    step_results.metrics_cost = [pair.summary() for pair in pairs]
                    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
                    sections[metrics_cost.DOCS] = metrics_cost.render(
                        pairs, info, settings.connections
                    )
                    failed_pairs = [p for p in pairs if p.failure]
                    if failed_pairs:
                        step_results.failures["metrics"] = str(failed_pairs[0].failure)
                if "scale" in steps:  # bench/scale.py: sessions, resources, services
                    log("[scale] decisions, routing and publishing at several sizes")
                    scale_result = run_scale(lab)
                    sections[scale.DOCS] = scale.render(scale_result)
                    if scale_result.failures:
                        step_results.failures["scale"] = "; ".join(scale_result.failures)
    except KeyboardInterrupt:
        log("bench: interrupted; all servers stopped")
        return 130

    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    by_name = {s.name: s for s in SCENARIOS}
    compute_ratios(rows, by_name)
    if any(by_name[row.scenario].table == "main" for row in rows):
        sections[DOCS_MAIN] = render_markdown(rows, info, settings, by_name)
    if step_results.publish is not None:
        sections[DOCS_PUBLISH] = publish.render(step_results.publish)
    if step_results.failover is not None:
        sections[DOCS_FAILOVER] = failover.render(step_results.failover)
    protected_steps = [s for s in steps if s in PROTECTED_STEPS]
    if protected_steps or any(
        row.scenario in PROTECTED_TABLE and row.scenario != "nginx-1" for row in rows
    ):
        sections[DOCS_PROTECTED] = render_protected(rows, step_results, info, settings, by_name)
    print("\n".join(sections.values()), end="")
    json_path = save_json(rows, step_results, info, settings)
    took = time.monotonic() - started
    log(f"bench: raw results in {json_path.relative_to(REPO)}; the run took {took:.0f}s")

    failed = [row.scenario for row in rows if row.failure] + list(step_results.failures)
    if failed:
        log(f"bench: {len(failed)} measurement(s) failed: {', '.join(failed)}")
        if args.write:
            log(f"bench: not updating {args.write} because of the failures")
        return 1
    if args.write:
        write_docs(args.write, sections)
        log(f"bench: updated {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

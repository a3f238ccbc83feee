#!/usr/bin/env python3
"""The cost of mutual TLS on internal links: the same single-node stack (Authentication,
Policy, Access Point with its decision cache off, the demo backend) run twice, side by side in
one run: once with plaintext internal links (development mode) and once with every internal
link on mutual TLS (certificates from an internal CA made for the run, ``--tls DIR``).

Two measurements:

- **decisions/s**: ``POST /internal/v1/decide`` straight to the Policy service through the
  failover client the Access Point uses (pooled connections: handshakes only at the start),
  from C concurrent callers; mTLS vs plaintext as a ratio (goal >= 0.9x);
- **added p99 of an uncached decision at a fixed rate**: GETs through each Access Point at
  500 requests/s (open loop, latency from each request's scheduled instant), protected (every
  request asks the Policy service) minus public (the same AP and backend, no decision), for
  both stacks; goal with mTLS: <= 1 ms.

    .venv/bin/python bench/mtls.py                     # prints the table
    .venv/bin/python bench/run.py --only mtls          # the same, as a step of make bench
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import protected
import yaml
from signals import terminate_on_signals

from gatehouse.internal.client import FailoverClient
from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import ACCESS_POINT, POLICY, Identity
from gatehouse.trust.tls import ClientTLS, Credentials, write_credentials

DOCS = ("<!-- bench:mtls:start -->", "<!-- bench:mtls:end -->")
HEADING = "## Latest results: mutual TLS on internal links"
GOAL_DECISIONS = 0.9  # decisions/s over mTLS >= 0.9 x plaintext
#: Decisions per stack (half in each of two turns): about 3 s a turn here. With 6,000 (a
#: third of a second a turn) the ratio moved between 0.62x and 1.14x from run to run.
CALLS = 60_000
GOAL_ADDED_P99_MS = 1.0  # uncached decision's added p99 over mTLS <= 1 ms
USER = "bench"
RESOURCE_PROTECTED = "app"
RESOURCE_PUBLIC = "pub"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


@dataclass
class Stack:
    name: str
    workdir: Path
    tls: bool
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    policy_port: int = 0
    ap_port: int = 0
    session: str = ""
    ap_credentials: Path | None = None

    def start(self, python: str, ca: CertificateAuthority | None) -> None:
        home = self.workdir / "home"
        home.mkdir(parents=True)
        password = secrets.token_urlsafe(18)
        subprocess.run(
            [
                python,
                "-m",
                "gatehouse",
                "users",
                "add",
                USER,
                "--password-stdin",
                "--home",
                str(home),
            ],
            input=(password + "\n").encode(),
            check=True,
            capture_output=True,
            timeout=60,
        )
        backend, auth, self.policy_port, self.ap_port = (free_port() for _ in range(4))

        def tls_args(role: str, service_id: str) -> list[str]:
            if ca is None:
                return []
            directory = self.workdir / "tls" / service_id
            key, cert = ca.issue_key_pair(Identity(role, service_id))
            write_credentials(directory, ca.certificate_pem, cert, key)
            if role == ACCESS_POINT:
                self.ap_credentials = directory
            return ["--tls", str(directory)]

        def config(name: str, document: dict[str, Any]) -> str:
            path = self.workdir / f"{name}.yaml"
            path.write_text(yaml.safe_dump(document))
            return str(path)

        scheme = "https" if ca else "http"
        self._spawn(python, ["demo-backend", "--listen", f"127.0.0.1:{backend}"], backend)
        auth_cfg = config("auth", {"authentication": {"listen": f"127.0.0.1:{auth}"}})
        self._spawn(
            python,
            [
                "authentication",
                "--config",
                auth_cfg,
                "--home",
                str(home),
                *tls_args("authentication", "auth1"),
            ],
            auth,
        )
        policy_cfg = config(
            "policy",
            {
                "policy": {
                    "listen": f"127.0.0.1:{self.policy_port}",
                    "authentication": [f"{scheme}://127.0.0.1:{auth}"],
                },
                "resources": {RESOURCE_PROTECTED: "authenticated", RESOURCE_PUBLIC: "public"},
            },
        )
        self._spawn(
            python,
            ["policy", "--config", policy_cfg, "--home", str(home), *tls_args(POLICY, "ps1")],
            self.policy_port,
        )
        backends = [f"http://127.0.0.1:{backend}"]
        ap_cfg = config(
            "ap",
            {
                "access_point": {
                    "id": "ap1",
                    "listen": f"127.0.0.1:{self.ap_port}",
                    "policy_services": [f"{scheme}://127.0.0.1:{self.policy_port}"],
                    "decision_cache_entries": 0,
                },
                "resources": [
                    {
                        "id": RESOURCE_PUBLIC,
                        "hosts": ["*"],
                        "path_prefix": "/public",
                        "backends": backends,
                        "public": True,
                    },
                    {
                        "id": RESOURCE_PROTECTED,
                        "hosts": ["*"],
                        "path_prefix": "/",
                        "backends": backends,
                    },
                ],
            },
        )
        self._spawn(
            python,
            ["access-point", "--config", ap_cfg, *tls_args(ACCESS_POINT, "ap1")],
            self.ap_port,
        )
        time.sleep(1.0)  # the AP's event stream to the Policy service
        self.session = protected.login_once(self.ap_port, USER, password)

    def _spawn(self, python: str, args: list[str], port: int) -> None:
        log = open(self.workdir / f"{args[0]}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [python, "-m", "gatehouse", *args], stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        wait_port(port, proc)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def fetch(port: int, path: str, headers: list[tuple[str, str]]) -> bytes:
    """The body of one GET through the AP (what every open-loop answer must be)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=dict(headers))
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    if answer.status != 200:
        raise RuntimeError(f"GET {path} through the AP answered {answer.status}: {body[:200]!r}")
    return body


def decision_body(session: str) -> dict[str, Any]:
    return {
        "session": session,
        "resource": RESOURCE_PROTECTED,
        "method": "GET",
        "path": "/",
        "url": "http://127.0.0.1/",
        "client_ip": "127.0.0.1",
        "headers": {},
        "ap": "ap1",
    }


async def _decisions(stack: Stack, calls: int, clients: int) -> protected.Latencies:
    tls = None
    if stack.ap_credentials is not None:
        creds = Credentials(stack.ap_credentials)
        tls = ClientTLS(creds.client, frozenset({POLICY}))
    scheme = "https" if tls else "http"
    body = decision_body(stack.session)
    result = protected.Latencies()
    async with FailoverClient(
        [f"{scheme}://127.0.0.1:{stack.policy_port}"], tls=tls, max_idle=clients
    ) as client:

        async def one() -> float:
            started = time.perf_counter()
            answer = await client.call("POST", "/internal/v1/decide", body, retry_safe=True)
            if answer.status != 200 or orjson.loads(answer.body)["decision"] != "allow":
                raise RuntimeError(f"decide answered {answer.status}: {answer.body[:200]!r}")
            return (time.perf_counter() - started) * 1000

        async def caller(count: int) -> None:
            for _ in range(count):
                try:
                    result.samples.append(await one())
                except Exception as exc:
                    result.error(str(exc))

        await asyncio.gather(*(caller(100) for _ in range(clients)))  # warm-up, connections
        result.samples.clear()
        started = time.perf_counter()
        await asyncio.gather(*(caller(calls // clients) for _ in range(clients)))
        result.elapsed = time.perf_counter() - started
    return result


def decisions(stack: Stack, calls: int, clients: int) -> protected.Latencies:
    import uvloop

    return uvloop.run(_decisions(stack, calls, clients))


@dataclass
class Result:
    decisions: dict[str, protected.Latencies]
    open_loop: dict[str, protected.OpenLoopResult]
    clients: int
    rate: float
    duration: float
    rounds: int

    def added_p99(self, stack: str) -> float | None:
        protected_p99 = self.open_loop[f"{stack} protected"].latency.p(99)
        public_p99 = self.open_loop[f"{stack} public"].latency.p(99)
        if protected_p99 is None or public_p99 is None:
            return None
        return protected_p99 - public_p99

    @property
    def decision_ratio(self) -> float:
        plain = self.decisions["plaintext"].rate
        return self.decisions["mTLS"].rate / plain if plain else 0.0


def run(
    python: str = sys.executable,
    calls: int = CALLS,
    clients: int = 8,
    rate: float = 500.0,
    duration: float = 10.0,
    rounds: int = 5,
    keep: bool = False,
) -> tuple[Result, str]:
    """Both stacks, both measurements; (result, Markdown section for docs/benchmarks.md)."""
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-mtls-bench-"))
    ca = CertificateAuthority.create()
    stacks = {
        "plaintext": Stack("plaintext", workdir / "plain", tls=False),
        "mTLS": Stack("mTLS", workdir / "mtls", tls=True),
    }
    try:
        for name, stack in stacks.items():
            stack.workdir.mkdir(parents=True)
            stack.start(python, ca if stack.tls else None)
            print(f"[mtls] {name} stack up (AP on {stack.ap_port})", file=sys.stderr)
        measured: dict[str, protected.Latencies] = {}
        for _ in range(2):  # A B A B: a drift in the machine's load hits both alike
            for name, stack in stacks.items():
                part = decisions(stack, calls // 2, clients)
                if name in measured:
                    measured[name].extend(part)
                else:
                    measured[name] = part
        targets = []
        for name, stack in stacks.items():
            cookie = [("Cookie", protected.session_cookie_header(stack.session))]
            for kind, path, headers in (
                ("public", "/public/status/200", []),
                ("protected", "/status/200", cookie),
            ):
                expect = fetch(stack.ap_port, path, headers)

                def target(
                    d: float,
                    port: int = stack.ap_port,
                    p: str = path,
                    h: list[tuple[str, str]] = headers,
                    e: bytes = expect,
                ) -> protected.OpenLoopResult:
                    return protected.open_loop(port, p, h, e, rate, d, 1.0, 32)

                targets.append((f"{name} {kind}", target))
        loops = protected.open_loop_alternating(targets, duration, rounds)
        result = Result(measured, loops, clients, rate, duration, rounds)
        return result, render(result)
    finally:
        for stack in stacks.values():
            stack.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def render(result: Result) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(
        ["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        f"Measured {now} at commit `{commit}`; {os.cpu_count()} CPUs; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.",
        "",
        f"**Decisions** (`POST /internal/v1/decide` straight to the Policy service through the "
        f"failover client, {result.clients} concurrent callers over pooled connections, "
        "handshakes only at the start; the two stacks in turn, twice)",
        "",
        "| internal links | decisions | decisions/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in result.decisions.items():
        lines.append(
            f"| {name} | {r.count:,} | {r.rate:,.0f} | {_ms(r.p(50))} | {_ms(r.p(99))} | "
            f"{r.errors} |"
        )
    lines += [
        "",
        f"**An uncached decision at a fixed rate** (open loop through each Access Point, "
        f"{result.rate:.0f} requests/s, {result.duration:g} s per target in {result.rounds} "
        "turns, 32 keep-alive connections, decision cache off)",
        "",
        "| target | answers | errors | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in result.open_loop.items():
        lat = r.latency
        lines.append(
            f"| {name} | {lat.count:,} | {lat.errors} | {_ms(lat.p(50))} | {_ms(lat.p(99))} | "
            f"{_ms(max(lat.samples) if lat.samples else None)} |"
        )
    ratio = result.decision_ratio
    added = result.added_p99("mTLS")
    plain_added = result.added_p99("plaintext")
    lines += [
        "",
        f"- Decisions/s over mTLS: **{ratio:.2f}x** plaintext: goal "
        f"{'met' if ratio >= GOAL_DECISIONS else 'missed'} (≥ {GOAL_DECISIONS}x) "
        f"{'✓' if ratio >= GOAL_DECISIONS else '✗'}",
        f"- An uncached decision adds **{_ms(added)} ms** at p99 over the public resource with "
        f"mTLS ({_ms(plain_added)} ms with plaintext links): goal "
        f"{'met' if added is not None and added <= GOAL_ADDED_P99_MS else 'missed'} "
        f"(≤ {GOAL_ADDED_P99_MS:g} ms)",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    with terminate_on_signals():
        _, table = run(
            calls=args.calls,
            clients=args.clients,
            rate=args.rate,
            duration=args.duration,
            rounds=args.rounds,
            keep=args.keep,
        )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

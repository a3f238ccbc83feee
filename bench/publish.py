"""How long a published configuration takes to reach every service.

One real Administration service and ``services`` real services on loopback (Access Points,
Policy and Authentication services in the proportions of :func:`plan`), each started with
``--state DIR --join URL --token TOKEN`` as an operator would. Then ``publishes`` times: add
a resource (every service's view changes: the APs route it, the Policy services decide on
it), ``POST /api/v1/publish``, and wait until Admin's services table shows every service
running the new version. The time of a publish is from just before the publish call to the
moment the services table (polled every 5 ms per 20 services on one kept-alive connection)
shows the last acknowledgement: Admin's own timestamps are to the second.

    .venv/bin/python bench/publish.py                     # 20 services, 50 publishes
    .venv/bin/python bench/publish.py --services 20 --publishes 50

bench/run.py runs it as the ``publish`` step and writes its table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatehouse.administration.config_cli import AdminClient
from gatehouse.administration.credentials import operator_context
from gatehouse.administration.service import read_token

REPO = Path(__file__).resolve().parent.parent
GOAL_P99_SECONDS = 1.0
GOAL_MTLS_P99_SECONDS = 0.25  # issue 14: publishing with every internal link on mutual TLS
STARTUP_TIMEOUT = 120.0
ACK_TIMEOUT = 30.0
POLL_INTERVAL = 0.005  # seconds between reads of Admin's services table, at 20 services
STARTUP_POLL = 0.25
START_WAVE = 20  # services started together, each wave once the one before runs version 1
COMMANDS = {"access_point": "access-point", "policy": "policy", "authentication": "authentication"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: every probe socket stays open until all are chosen
    (one probe after another may be given the same port again)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Planned:
    id: str
    role: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def plan(count: int) -> list[Planned]:
    """``count`` services: 2/5 Access Points, the rest Policy and Authentication services
    in equal parts (20 → 8 APs, 6 Policy, 6 Authentication), at least one of each."""
    aps = max(1, count * 2 // 5)
    policies = max(1, (count - aps) // 2)
    auths = max(1, count - aps - policies)
    ports = iter(free_ports(aps + policies + auths))
    services = [Planned(f"ap{i + 1}", "access_point", next(ports)) for i in range(aps)]
    services += [Planned(f"ps{i + 1}", "policy", next(ports)) for i in range(policies)]
    services += [Planned(f"auth{i + 1}", "authentication", next(ports)) for i in range(auths)]
    return services


def installation(services: Sequence[Planned], extra_resources: int) -> dict[str, Any]:
    """The configuration: every AP prefers one Policy service and falls back on the others;
    every Policy service uses the Authentication services in turn."""
    aps = [s for s in services if s.role == "access_point"]
    policies = [s.id for s in services if s.role == "policy"]
    auths = [s.id for s in services if s.role == "authentication"]
    backend = "http://127.0.0.1:9"  # never called: the benchmark sends no requests
    resources = [{"id": "app", "path_prefix": "/", "backends": [backend]}]
    resources += [
        {"id": f"r{n}", "path_prefix": f"/r{n}", "backends": [backend]}
        for n in range(1, extra_resources + 1)
    ]
    return {
        "services": [
            {"id": s.id, "role": s.role, "endpoint": s.endpoint, "node": "bench"} for s in services
        ],
        "access_points": [
            {
                "id": ap.id,
                "workers": 1,
                "policy_services": policies[i % len(policies) :] + policies[: i % len(policies)],
            }
            for i, ap in enumerate(aps)
        ],
        "policy_services": [
            {"id": ps, "authentication": auths[i % len(auths) :] + auths[: i % len(auths)]}
            for i, ps in enumerate(policies)
        ],
        "resources": resources,
        "global_rule": "authenticated",
    }


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_SECONDS = 5.0  # the quiet spell measured before the publishes


def session_cpu(leaders: Sequence[int]) -> dict[int, float]:
    """CPU seconds (user + system) so far of every process in the sessions led by
    ``leaders`` (the bench starts each service in a session of its own, so an Access
    Point's workers count with their supervisor), by leader."""
    wanted = set(leaders)
    totals = dict.fromkeys(wanted, 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        session = int(fields[3])  # field 6 of stat(5): the session id
        if session in wanted:
            totals[session] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return totals


def tcp_states() -> dict[str, int]:
    """Loopback TCP sockets by state (``ss``): established and TIME_WAIT."""
    counts = {}
    for state in ("established", "time-wait"):
        done = subprocess.run(
            ["ss", "-Htan", "state", state], capture_output=True, text=True, check=False
        )
        counts[state] = len(done.stdout.splitlines())
    return counts


@dataclass
class CpuSnapshot:
    """CPU seconds by role (``admin`` and the services' roles) at one moment."""

    at: float
    by_role: dict[str, float]

    @classmethod
    def take(cls, lab: Lab) -> CpuSnapshot:
        leaders = {proc.pid: name for name, proc in lab.processes}
        roles: dict[str, float] = {}
        for pid, seconds in session_cpu(list(leaders)).items():
            role = lab.roles.get(leaders[pid], "admin")
            roles[role] = roles.get(role, 0.0) + seconds
        return cls(time.monotonic(), roles)

    def since(self, before: CpuSnapshot) -> dict[str, float]:
        return {
            role: round(seconds - before.by_role.get(role, 0.0), 3)
            for role, seconds in self.by_role.items()
        }


@dataclass
class PublishResult:
    services: dict[str, int] = field(default_factory=dict)  # by role
    seconds: list[float] = field(default_factory=list)  # publish → last ack
    publish_call: list[float] = field(default_factory=list)  # the publish call alone
    startup: float = 0.0  # start of the services → all run version 1
    failure: str | None = None
    #: CPU seconds per second by role while nothing is published (all registered).
    idle_cpu: dict[str, float] = field(default_factory=dict)
    #: CPU seconds by role per publish (the publishes' whole spell, idle cost included).
    publish_cpu: dict[str, float] = field(default_factory=dict)
    #: Loopback TCP sockets by state while idle, and TIME_WAIT after the publishes.
    sockets: dict[str, int] = field(default_factory=dict)
    #: The load average (1 min) at the start and at the end.
    load: tuple[float, float] = (0.0, 0.0)

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "services": self.services,
            "publishes": len(self.seconds),
            "startup_s": round(self.startup, 2),
            "failure": self.failure,
        }
        if self.seconds:
            data.update(
                p50_ms=round(percentile(self.seconds, 50) * 1000, 1),
                p99_ms=round(percentile(self.seconds, 99) * 1000, 1),
                max_ms=round(max(self.seconds) * 1000, 1),
                publish_call_p50_ms=round(percentile(self.publish_call, 50) * 1000, 1),
            )
        data.update(
            idle_cpu_per_s=self.idle_cpu,
            cpu_per_publish_s=self.publish_cpu,
            sockets=self.sockets,
            load=self.load,
        )
        return data


class Lab:
    """The processes of one run, all stopped at the end."""

    def __init__(self, python: str, directory: Path) -> None:
        self.python = python
        self.directory = directory
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        #: The role of each service process by name (Admin is not listed).
        self.roles: dict[str, str] = {}

    def start(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        out = (self.directory / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [self.python, "-m", "gatehouse", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.directory,
        )
        out.close()
        self.processes.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.processes:
            if proc.poll() is not None:
                tail = (self.directory / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in self.processes:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def start_admin(lab: Lab) -> AdminClient:
    home = lab.directory / "admin"
    home.mkdir()
    port = free_port()
    config = home / "administration.yaml"
    config.write_text(yaml.safe_dump({"administration": {"listen": f"127.0.0.1:{port}"}}))
    lab.start("admin", ["administration", "--config", str(config), "--home", str(home)])
    deadline = time.monotonic() + STARTUP_TIMEOUT
    token_file = home / "admin.token"
    while True:
        lab.check_alive()
        if token_file.exists() and (home / "ca" / "ca.pem").exists():
            # Over HTTPS, verified against the installation's CA, as the operator's CLI.
            client = AdminClient(
                f"https://127.0.0.1:{port}",
                read_token(token_file),
                token_file,
                tls=operator_context(home),
            )
            with contextlib.suppress(Exception):
                client.call("GET", "/api/v1/health")
                return client
        if time.monotonic() > deadline:
            raise RuntimeError("the Administration service did not start")
        time.sleep(0.05)


def publish(admin: AdminClient, config: dict[str, Any], comment: str) -> tuple[int, float, float]:
    """Save the draft and publish it; the version, the ``perf_counter`` time just before the
    publish call, and how long the call took."""
    admin.call("PUT", "/api/v1/draft", {"text": yaml.safe_dump(config, sort_keys=False)})
    start = time.perf_counter()
    number = int(admin.call("POST", "/api/v1/publish", {"comment": comment})["version"])
    return number, start, time.perf_counter() - start


class ServicesTable:
    """``GET /api/v1/services`` on one kept-alive connection: polled every 5 ms, a new
    mutual TLS connection per poll would cost Admin, the process under measurement, about
    200 handshakes a second while it answers the services."""

    def __init__(self, admin: AdminClient) -> None:
        self.admin = admin
        self.conn: http.client.HTTPConnection | None = None

    def rows(self) -> list[dict[str, Any]]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = self.admin.connect()
            try:
                self.conn.request(
                    "GET", self.admin.prefix + "/api/v1/services", None, self.admin.headers()
                )
                response = self.conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"services table: HTTP {response.status}: {raw[:200]!r}")
            rows: list[dict[str, Any]] = json.loads(raw)
            return rows
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def wait_all(
    table: ServicesTable,
    lab: Lab,
    ids: set[str],
    number: int,
    timeout: float,
    interval: float = POLL_INTERVAL,
) -> float:
    """Wait until every service in ``ids`` runs ``number``; the ``perf_counter`` time when
    the services table first showed it."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {row["id"]: row for row in table.rows()}
        done = [rows[i] for i in ids if i in rows and (rows[i]["running_version"] or 0) >= number]
        if len(done) == len(ids):
            failed = [r for r in done if r["last_error"]]
            if failed:
                raise RuntimeError(f"{failed[0]['id']} refused version {number}: {failed[0]}")
            return time.perf_counter()
        if time.monotonic() > deadline:
            missing = sorted(ids - {r["id"] for r in done})
            lab.check_alive()
            raise RuntimeError(f"no acknowledgement of version {number} from {missing}")
        time.sleep(interval)


def run(python: str, services: int = 20, publishes: int = 30, keep: bool = False) -> PublishResult:
    result = PublishResult()
    directory = Path(tempfile.mkdtemp(prefix="gatehouse-bench-publish-"))
    lab = Lab(python, directory)
    try:
        admin = start_admin(lab)
        planned = plan(services)
        for s in planned:
            result.services[s.role] = result.services.get(s.role, 0) + 1
        publish(admin, installation(planned, 0), "bench: first version")
        started = time.monotonic()
        admin_url = admin.url
        ids = {s.id for s in planned}
        table = ServicesTable(admin)
        # Every poll makes Admin list every service: at 100 services a 5 ms poll would keep
        # it busy answering the bench instead of the acknowledgements it measures.
        poll = POLL_INTERVAL * max(1.0, len(planned) / 20)
        try:
            # In waves: a hundred Python processes starting at once on a small machine leave
            # Admin so little CPU that registrations time out; what is measured is publishing.
            for first in range(0, len(planned), START_WAVE):
                wave = planned[first : first + START_WAVE]
                for s in wave:
                    token = admin.call(
                        "POST",
                        "/api/v1/join-tokens",
                        {"role": s.role, "service_id": s.id, "ttl": 600},
                    )
                    args = [COMMANDS[s.role], "--state", str(directory / s.id / "state")]
                    args += ["--join", admin_url, "--token", token["token"], "--id", s.id]
                    args += ["--endpoint", s.endpoint, "--node", "bench"]
                    if s.role != "access_point":
                        args += ["--home", str(directory / s.id / "home")]
                    lab.start(s.id, args)
                    lab.roles[s.id] = s.role
                wait_all(table, lab, {s.id for s in wave}, 1, STARTUP_TIMEOUT, STARTUP_POLL)
            wait_all(table, lab, ids, 1, STARTUP_TIMEOUT, STARTUP_POLL)
            result.startup = time.monotonic() - started
            log(f"[publish] {len(ids)} services run version 1 after {result.startup:.1f}s")
            # What the installation costs while nothing happens (registration settled).
            time.sleep(1.0)
            before = CpuSnapshot.take(lab)
            time.sleep(IDLE_SECONDS)
            idle = CpuSnapshot.take(lab)
            result.idle_cpu = {
                role: round(cpu / (idle.at - before.at), 3)
                for role, cpu in idle.since(before).items()
            }
            result.sockets = {f"idle_{k}": v for k, v in tcp_states().items()}
            log(f"[publish] idle: CPU s/s by role {result.idle_cpu}, sockets {result.sockets}")
            start_load = os.getloadavg()[0]
            for n in range(1, publishes + 1):
                config = installation(planned, n)
                number, start, call = publish(admin, config, f"bench: publish {n}")
                last_ack = wait_all(table, lab, ids, number, ACK_TIMEOUT, poll)
                result.seconds.append(last_ack - start)
                result.publish_call.append(call)
            done = CpuSnapshot.take(lab)
            result.publish_cpu = {
                role: round(cpu / publishes, 3) for role, cpu in done.since(idle).items()
            }
            result.sockets["after_time_wait"] = tcp_states()["time-wait"]
            result.load = (round(start_load, 2), round(os.getloadavg()[0], 2))
            log(
                f"[publish] CPU s per publish by role {result.publish_cpu}, "
                f"load {result.load}, sockets {result.sockets}"
            )
        finally:
            table.close()
        lab.check_alive()
    except Exception as exc:  # a failed measurement is reported, not a traceback
        result.failure = str(exc)
    finally:
        lab.stop()
        if keep:
            log(f"[publish] kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return result


def render(result: PublishResult) -> str:
    """The docs table."""
    roles = ", ".join(f"{n} {role.replace('_', ' ')}" for role, n in result.services.items())
    total = sum(result.services.values())
    if result.failure or not result.seconds:
        return f"Publish to {total} services: FAILED: {result.failure}\n"
    s = result.summary()
    ok = "✓" if s["p99_ms"] < GOAL_P99_SECONDS * 1000 else "✗"
    ok_mtls = "✓" if s["p99_ms"] < GOAL_MTLS_P99_SECONDS * 1000 else "✗"
    return (
        "Time from `POST /api/v1/publish` to the last acknowledgement (Admin's services table "
        f"polled every {POLL_INTERVAL * 1000 * max(1.0, total / 20):g} ms on one kept-alive "
        f"connection), {total} real services "
        f"on loopback ({roles}), every internal link on mutual TLS, {s['publishes']} publishes "
        "one after the other, each adding a resource (every view changes):\n\n"
        "| services | publishes | p50 | p99 | max | publish call p50 | goal p99 < 1 s "
        "| issue 14: p99 < 250 ms |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {total} | {s['publishes']} | {s['p50_ms']:.0f} ms | {s['p99_ms']:.0f} ms | "
        f"{s['max_ms']:.0f} ms | {s['publish_call_p50_ms']:.0f} ms | {ok} | {ok_mtls} |\n\n"
        f"All {total} services registered (started {START_WAVE} at a time) and ran version 1 "
        f"{s['startup_s']:.1f} s after the first was started.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--publishes", type=int, default=50)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.python, args.services, args.publishes, args.keep_tmp)
    print(render(result), end="")
    return 1 if result.failure else 0


if __name__ == "__main__":
    sys.exit(main())

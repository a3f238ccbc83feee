"""What losing the PostgreSQL primary costs under load, with Patroni's defaults and with the
tuned settings Gatehouse ships, side by side in one run (issue 18).

For each variant the example HA topology (``examples/ha-cluster.yaml``: HAProxy, two APs,
two Policy, two Authentication and two Distribution services, Admin, PostgreSQL pg1 and pg2
under Patroni on three etcd members) runs on free ports in a temporary directory with the
variant's ``databases.patroni``. ``SESSIONS`` signed-in users request a protected page
through HAProxy at ``RATE`` requests/s in total (each request at a fixed instant on its
user's keep-alive connection), and two sign-in loops sign the demo user in again and again
(each sign-in bounded by ``SIGN_IN_TIMEOUT``). ``KILL_AT`` seconds in, the primary's
postmaster gets SIGKILL (``Cluster.kill("pg1")``, nothing else: Patroni is on its own).
Measured from the kill:

- writes back: the first ``INSERT`` accepted by a primary (a probe tries both nodes as the
  superuser every ``PROBE_INTERVAL``; the node that took it is shown);
- failed requests and failed sign-ins from the kill to the end of the load;
- the longest sign-in started in that window.

Patroni's defaults: ``ttl 30, loop_wait 10, retry_timeout 10, primary_start_timeout 300``
(a crashed primary is restarted in place, for up to 300 s, before anyone fails over); tuned:
``ttl 10, loop_wait 1, retry_timeout 4, primary_start_timeout 0`` (fail over at once to the
synchronous standby). Why: docs/operations.md, "Database HA (Patroni)".

    .venv/bin/python bench/db_failover.py     # two clusters, about two minutes; the table

bench/run.py runs it with the ``failover`` step and writes its table into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatehouse.cluster.drill import Connection, get_request, login, on_free_ports
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.topology_patroni import PATRONI_DEFAULTS, PatroniSettings
from gatehouse.storage.postgres_ha.errors import ReplicationError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ha-cluster.yaml"
DOCS = ("<!-- bench:db-failover:start -->", "<!-- bench:db-failover:end -->")
HEADING = "## Latest results: database failover (Patroni)"

SESSIONS = 10
RATE = 100.0  # requests/s, all sessions together
SIGN_IN_LOOPS = 2
KILL_AT = 4.0
LOAD_SECONDS = 40.0  # the defaults may take up to loop_wait + a restart: keep loading
REQUEST_TIMEOUT = 30.0
SIGN_IN_TIMEOUT = 60.0
PROBE_INTERVAL = 0.1
PATH = "/hello"

TUNED = PatroniSettings()
VARIANTS: dict[str, dict[str, Any]] = {
    "Patroni defaults": {**PATRONI_DEFAULTS, "failsafe_mode": True},
    "tuned (Gatehouse's defaults)": {
        "ttl": TUNED.ttl,
        "loop_wait": TUNED.loop_wait,
        "retry_timeout": TUNED.retry_timeout,
        "primary_start_timeout": TUNED.primary_start_timeout,
        "failsafe_mode": TUNED.failsafe_mode,
    },
}


@dataclass
class Outcome:
    at: float
    ok: bool
    latency: float
    what: str = ""


@dataclass
class Row:
    variant: str
    settings: dict[str, Any]
    writes_back: float | None = None
    writes_on: str = ""
    requests: list[Outcome] = field(default_factory=list)
    sign_ins: list[Outcome] = field(default_factory=list)
    killed_at: float = 0.0
    failure: str = ""

    def after_kill(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Those that ended after the kill (in flight at the kill included)."""
        return [o for o in outcomes if o.at + o.latency >= self.killed_at]

    def summary(self) -> dict[str, Any]:
        requests = self.after_kill(self.requests)
        sign_ins = self.after_kill(self.sign_ins)
        outage_end = self.killed_at + (self.writes_back or 0.0)
        # Sign-ins and requests that were under way while no primary took writes.
        in_outage = [o for o in sign_ins if o.at < outage_end]
        return {
            "variant": self.variant,
            "settings": self.settings,
            "writes_back_s": round(self.writes_back, 2) if self.writes_back is not None else None,
            "writes_on": self.writes_on,
            "requests": len(requests),
            "failed_requests": sum(not o.ok for o in requests),
            "sign_ins": len(sign_ins),
            "failed_sign_ins": sum(not o.ok for o in sign_ins),
            "longest_sign_in_s": round(max((o.latency for o in sign_ins), default=0.0), 2),
            "sign_ins_in_outage": len(in_outage),
            "longest_request_s": round(max((o.latency for o in requests), default=0.0), 2),
            "failure": self.failure,
        }


async def _user(host: str, port: int, cookie: str, interval: float, until: float, row: Row) -> None:
    conn = Connection(host, port)
    raw = get_request(PATH, f"{host}:{port}", cookie)
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    try:
        while (now := loop.time()) < until:
            if next_at > now:
                await asyncio.sleep(next_at - now)
            next_at += interval
            sent = time.monotonic()
            what = ""
            for attempt in (1, 2):
                reused = conn.used and conn.writer is not None
                try:
                    status, _, _ = await asyncio.wait_for(conn.request(raw), REQUEST_TIMEOUT)
                    what = "" if status == 200 else f"HTTP {status}"
                    break
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    conn.close()
                    what = type(exc).__name__
                    if attempt == 1 and reused and not isinstance(exc, TimeoutError):
                        continue  # a keep-alive connection closed: once more, as browsers do
                    break
            row.requests.append(Outcome(sent, not what, time.monotonic() - sent, what))
    finally:
        conn.close()


async def _sign_ins(host: str, port: int, password: str, until: float, row: Row) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        sent = time.monotonic()
        try:
            await asyncio.wait_for(login(host, port, "demo", password, PATH), SIGN_IN_TIMEOUT)
            row.sign_ins.append(Outcome(sent, True, time.monotonic() - sent))
        except Exception as exc:  # any failure of a sign-in is what we count
            row.sign_ins.append(Outcome(sent, False, time.monotonic() - sent, repr(exc)))
            await asyncio.sleep(0.2)


async def _load(host: str, port: int, cookies: list[str], password: str, row: Row) -> None:
    until = asyncio.get_running_loop().time() + LOAD_SECONDS
    interval = len(cookies) / RATE
    await asyncio.gather(
        *(_user(host, port, c, interval, until, row) for c in cookies),
        *(_sign_ins(host, port, password, until, row) for _ in range(SIGN_IN_LOOPS)),
    )


def _probe_writes(cluster: Cluster, row: Row, stop: threading.Event) -> None:
    """After the kill: the first INSERT a node accepts (either may be the primary)."""
    databases = cluster.databases
    assert databases is not None
    marker = uuid.uuid4().hex
    while not stop.is_set():
        for node in databases.nodes:
            try:
                node.sql(f"INSERT INTO bench_writes VALUES ('{marker}')", "gatehouse", timeout=5)
            except ReplicationError:
                continue
            row.writes_back = time.monotonic() - row.killed_at
            row.writes_on = node.name
            return
        time.sleep(PROBE_INTERVAL)


def run_variant(name: str, patroni: dict[str, Any]) -> Row:
    row = Row(name, patroni)
    root = Path(tempfile.mkdtemp(prefix="gh-dbfo-"))
    root.chmod(0o755)  # the postgres user traverses it
    topology = on_free_ports(EXAMPLE, root / "topology.yaml")
    data = yaml.safe_load(topology.read_text())
    data["databases"]["patroni"] = patroni
    topology.write_text(yaml.safe_dump(data, sort_keys=False))
    cluster = Cluster.prepare(root / "home", topology, fsync=False)
    try:
        cluster.up()
        password = cluster.add_demo_user()
        assert password is not None
        databases = cluster.databases
        assert databases is not None
        primary = databases.primary()
        primary.sql("CREATE TABLE bench_writes (marker text)", "gatehouse")
        host, _, port_text = cluster.url.removeprefix("http://").rstrip("/").rpartition(":")
        port = int(port_text)

        async def sign_in_all() -> list[str]:
            return [await login(host, port, "demo", password, PATH) for _ in range(SESSIONS)]

        cookies = asyncio.run(sign_in_all())
        stop = threading.Event()
        load = threading.Thread(
            target=asyncio.run, args=(_load(host, port, cookies, password, row),), daemon=True
        )
        load.start()
        time.sleep(KILL_AT)
        row.killed_at = time.monotonic()
        cluster.kill(primary.name)  # SIGKILL of the postmaster only
        probe = threading.Thread(target=_probe_writes, args=(cluster, row, stop), daemon=True)
        probe.start()
        load.join(LOAD_SECONDS + SIGN_IN_TIMEOUT + 10)
        stop.set()
        probe.join(10)
        if row.writes_back is None:
            row.failure = f"no write accepted within {LOAD_SECONDS - KILL_AT:g}s of the kill"
    except Exception as exc:
        row.failure = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            cluster.down()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return row


def run() -> tuple[list[Row], str]:
    rows = []
    for name, patroni in VARIANTS.items():
        print(f"[db-failover] {name}: {patroni}", file=sys.stderr, flush=True)
        row = run_variant(name, patroni)
        print(f"  {row.summary()}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows, render(rows)


def render(rows: list[Row]) -> str:
    lines = [
        "SIGKILL of the PostgreSQL primary's postmaster (`gatehouse cluster kill pg1`) under "
        f"load: {SESSIONS} signed-in sessions at {RATE:g} requests/s through HAProxy and "
        f"{SIGN_IN_LOOPS} sign-in loops, `bench/db_failover.py` (the `failover` step of "
        "`make bench`). Writes back: the first INSERT a node accepts after the kill. Failed "
        "and longest: what ended after the kill (in flight at the kill included), to the end "
        "of the load "
        f"({LOAD_SECONDS - KILL_AT:g} s).",
        "",
        "| Patroni settings | writes back after | taken by | failed requests | "
        "longest request | failed sign-ins | sign-ins during the outage | longest sign-in |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = row.summary()
        settings = ", ".join(f"{k} {v}" for k, v in row.settings.items() if k != "failsafe_mode")
        if row.failure:
            lines.append(f"| {row.variant} ({settings}) | failed: {row.failure} | | | | | | |")
            continue
        lines.append(
            f"| {row.variant} ({settings}) | {s['writes_back_s']:.1f} s | {s['writes_on']} | "
            f"{s['failed_requests']} of {s['requests']:,} | {s['longest_request_s']:.1f} s | "
            f"{s['failed_sign_ins']} of {s['sign_ins']} | {s['sign_ins_in_outage']} | "
            f"{s['longest_sign_in_s']:.1f} s |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    _, table = run()
    print(f"{HEADING}\n\n{table}")

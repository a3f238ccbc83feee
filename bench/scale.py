"""How cost grows with the size of an installation: sessions, resources, services.

Three measurements, each at several sizes within one run, reported as the ratio to the
smallest size:

* **Decisions with many live sessions.** A Policy service (with an Authentication service,
  as ``bench/run.py``'s protected steps start them) on a session database holding 10
  thousand, 100 thousand and 1 million live sessions, on SQLite and on PostgreSQL. 8 clients
  call ``POST /internal/v1/decide`` straight (no Access Point, so no decision cache), every
  call for a different session chosen at random among all of them, so that the Policy
  service's own 2 s session cache never answers and every decision reads the database: the
  index lookup at that size. The sessions were seen a moment ago (``last_seen_at`` ahead of
  the measurement), so a decision reads and does not write: the write a first decision after
  5 s idle makes (the "touch") is measured by the protected section's decide step. Goal:
  decisions/s and p99 within 1.2x of the smallest size.
* **Routing with many resources.** An Access Point (1 worker) with 10, 1,000 and 10,000
  public resources under one host pattern (``*``), path prefixes ``/r0`` ... ``/rN``, all to
  the same nginx backend; wrk asks ``/r0/index.html`` (the shortest prefix: the last a scan
  longest-first would reach). Goal: requests/s within 1.1x.
* **Publishing to many services.** ``bench/publish.py`` with 20, 50 and 100 real services.
  Goal: p99 to the last acknowledgement < 1 s at 100.

bench/run.py runs it as the ``scale`` step (the routing rows use its Lab, nginx and wrk) and
writes the tables into docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import protected
import publish

REPO = Path(__file__).resolve().parent.parent
DOCS = ("<!-- bench:scale:start -->", "<!-- bench:scale:end -->")
HEADING = "## Latest results: how cost grows"

SESSION_SIZES = (10_000, 100_000, 1_000_000)
ROUTE_SIZES = (10, 1_000, 10_000)
PUBLISH_SIZES = (20, 50, 100)
PUBLISHES = 20  # per size
DECIDE_CLIENTS = 8
DECIDE_CALLS = 8_000  # per size, every one for a different session
DECIDE_WARMUP = 50  # calls per client before measuring (other sessions)

GOAL_SESSIONS = 1.2  # decisions/s and p99 within this factor of the smallest size
GOAL_ROUTES = 1.1  # requests/s within this factor of the smallest size
GOAL_PUBLISH_P99_S = 1.0  # at the largest size

RESOURCE = "bench"
USERS = 10_000  # the sessions belong to this many users (user0 ... user9999)
INSERT_BATCH = 20_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Server(Protocol):
    port: int

    @property
    def url(self) -> str: ...

    def wait_ready(self, path: str, timeout: float) -> None: ...


class Lab(Protocol):
    """What this module needs of bench/run.py's Lab."""

    def gatehouse(self, name: str, argv: list[str], config: dict[str, Any]) -> Any: ...

    def stop(self, server: Any) -> None: ...

    def workdir(self, name: str) -> Path: ...


# --------------------------------------------------------------------------- sessions


def session_id(index: int) -> str:
    """The bench's session ``index``: 43 URL-safe characters, like a real one."""
    return f"scalebench{index:033d}"


def session_hash(index: int) -> str:
    # gatehouse.policy.sessions.hash_session_id: the first 32 hex digits of SHA-256.
    return hashlib.sha256(session_id(index).encode()).hexdigest()[:32]


def session_rows(start: int, stop: int, now: datetime) -> list[tuple[Any, ...]]:
    """Live sessions ``start`` ... ``stop - 1``: seen "now" (ahead of the measurement, so
    decisions do not touch them), idle for 8 h more, absolute expiry in 12 h."""
    seen = now + timedelta(hours=1)
    idle = now + timedelta(hours=8)
    absolute = now + timedelta(hours=12)
    return [
        (
            session_hash(i),
            f"user{i % USERS}",
            f"User {i % USERS}",
            f"user{i % USERS}@example.test",
            '["staff"]',
            '["password"]',
            now,
            seen,
            idle,
            absolute,
            "127.0.0.1",
            "scale bench",
        )
        for i in range(start, stop)
    ]


COLUMNS = (
    "id_hash",
    "username",
    "display_name",
    "email",
    "groups",
    "methods",
    "created_at",
    "last_seen_at",
    "idle_expires_at",
    "absolute_expires_at",
    "client_ip",
    "user_agent",
)


def _sqlite_text(value: Any) -> Any:
    # gatehouse.storage.types.UTCDateTime on SQLite: naive UTC, fixed-width text.
    if isinstance(value, datetime):
        return (
            value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        )
    return value


def grow_sqlite(path: Path, start: int, stop: int) -> None:
    now = datetime.now(UTC)
    placeholders = ", ".join("?" for _ in COLUMNS)
    statement = f"INSERT INTO sessions ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    with sqlite3.connect(path, timeout=30) as db:
        for low in range(start, stop, INSERT_BATCH):
            rows = session_rows(low, min(stop, low + INSERT_BATCH), now)
            db.executemany(statement, [tuple(_sqlite_text(v) for v in row) for row in rows])
        db.commit()
    with sqlite3.connect(path, timeout=30) as db:
        db.execute("ANALYZE")


def grow_postgres(dsn: str, start: int, stop: int) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            now = datetime.now(UTC)
            for low in range(start, stop, INSERT_BATCH):
                rows = session_rows(low, min(stop, low + INSERT_BATCH), now)
                await conn.copy_records_to_table("sessions", records=rows, columns=list(COLUMNS))
            # VACUUM too: rows just copied in have no hint bits and no visibility map, so
            # the first decisions to read them would write pages, and autovacuum would start
            # on the new rows in the middle of the measurement (seen: the 100,000 row ran
            # at 0.79-0.83x of its neighbours in two runs).
            await conn.execute("VACUUM ANALYZE sessions")
        finally:
            await conn.close()

    asyncio.run(go())


@dataclass
class SessionRow:
    backend: str
    size: int
    latency: protected.Latencies
    fill_s: float

    def summary(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "sessions": self.size,
            "fill_s": round(self.fill_s, 1),
            **self.latency.summary(),
        }


def decision_request(port: int, index: int) -> bytes:
    body = json.dumps(
        {
            "session": session_id(index),
            "resource": RESOURCE,
            "method": "GET",
            "path": "/",
            "url": "http://127.0.0.1/",
            "client_ip": "127.0.0.1",
            "headers": {},
            "ap": "ap1",
        }
    ).encode()
    return protected.build_request(
        "POST",
        "/internal/v1/decide",
        f"127.0.0.1:{port}",
        [("Content-Type", "application/json")],
        body,
    )


async def _decide(
    port: int, sessions: Sequence[int], clients: int, warmup: int
) -> protected.Latencies:
    conns = [await protected.Connection.open("127.0.0.1", port) for _ in range(clients)]
    requests = [decision_request(port, i) for i in sessions]
    result = protected.Latencies()
    perf = time.perf_counter
    position = 0

    async def one(conn: protected.Connection, raw: bytes) -> float:
        t0 = perf()
        answer = await conn.request(raw)
        elapsed = (perf() - t0) * 1000
        if answer.status != 200 or b'"allow"' not in answer.body:
            raise protected.ClientError(f"decide: HTTP {answer.status}: {answer.body[:200]!r}")
        return elapsed

    async def client(conn: protected.Connection, measured: bool, count: int) -> None:
        nonlocal position
        for _ in range(count):
            if position >= len(requests):
                return
            raw = requests[position]
            position += 1
            try:
                elapsed = await one(conn, raw)
            except protected.ClientError as exc:
                result.error(str(exc))
                return
            if measured:
                result.samples.append(elapsed)

    try:
        await asyncio.gather(*(client(c, False, warmup) for c in conns))
        start = perf()
        await asyncio.gather(*(client(c, True, len(requests)) for c in conns))
        result.elapsed = perf() - start
    finally:
        for conn in conns:
            conn.close()
    return result


def decide(port: int, size: int, clients: int, calls: int, seed: int) -> protected.Latencies:
    """``calls`` decisions (after a warm-up), each for a different session among ``size``."""
    total = min(size, calls + clients * DECIDE_WARMUP)
    sessions = random.Random(seed).sample(range(size), total)
    result = protected.run_async(_decide(port, sessions, clients, DECIDE_WARMUP))
    assert isinstance(result, protected.Latencies)
    return result


def _gatehouse(python: str, *args: str) -> None:
    command = [python, "-m", "gatehouse", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")


def sessions_at_sizes(
    lab: Lab,
    python: str,
    backend: str,
    sizes: Sequence[int] = SESSION_SIZES,
    clients: int = DECIDE_CLIENTS,
    calls: int = DECIDE_CALLS,
    startup_timeout: float = 30.0,
) -> list[SessionRow]:
    """Decisions on ``backend`` ("sqlite" or "postgresql") with the session table grown to
    each size in turn; the same Policy service throughout."""
    home = lab.workdir(f"scale-{backend}")
    cluster = None
    try:
        if backend == "postgresql":
            sys.path.insert(0, str(REPO))
            from tests.support.postgres import PostgresCluster, find_bindir

            bindir = find_bindir()
            if bindir is None:
                raise RuntimeError("PostgreSQL is not installed (initdb, pg_ctl)")
            cluster = PostgresCluster(bindir)
            database = cluster.create_database()
            url = cluster.url(database)
            (home / "databases.yaml").write_text(f"user_db: {url}\n")
            dsn = url.replace("postgresql+asyncpg://", "postgresql://")
            grow: Callable[[int, int], None] = lambda a, b: grow_postgres(dsn, a, b)  # noqa: E731
        else:
            path = home / "gatehouse.db"
            grow = lambda a, b: grow_sqlite(path, a, b)  # noqa: E731
        _gatehouse(python, "db", "upgrade", "--home", str(home))
        home_arg = ["--home", str(home)]
        auth = lab.gatehouse(
            f"scale-{backend}-authentication",
            ["authentication", *home_arg],
            {"authentication": {"listen": "127.0.0.1:{port}"}},
        )
        auth.wait_ready("/internal/v1/health", startup_timeout)
        policy = lab.gatehouse(
            f"scale-{backend}-policy",
            ["policy", *home_arg],
            {
                "policy": {"listen": "127.0.0.1:{port}", "authentication": [auth.url]},
                "resources": {RESOURCE: "authenticated"},
            },
        )
        policy.wait_ready("/internal/v1/health", startup_timeout)
        rows: list[SessionRow] = []
        have = 0
        try:
            for size in sizes:
                t0 = time.monotonic()
                grow(have, size)
                have = size
                fill = time.monotonic() - t0
                log(f"[scale] {backend}: {size:,} sessions (filled in {fill:.1f}s); deciding")
                latency = decide(policy.port, size, clients, calls, seed=size)
                log(
                    f"  {latency.rate:,.0f}/s, p50 {latency.p(50) or 0:.2f} ms, "
                    f"p99 {latency.p(99) or 0:.2f} ms, errors {latency.errors}"
                )
                rows.append(SessionRow(backend, size, latency, fill))
        finally:
            lab.stop(policy)
            lab.stop(auth)
        return rows
    finally:
        if cluster is not None:
            cluster.destroy()


# --------------------------------------------------------------------------- routes


def route_resources(count: int, backend_port: int) -> list[dict[str, Any]]:
    """``count`` public resources ``/r0`` ... under any host, all to the backend."""
    return [
        {
            "id": f"r{i}",
            "hosts": ["*"],
            "path_prefix": f"/r{i}",
            "backends": [f"http://127.0.0.1:{backend_port}"],
            "public": True,
        }
        for i in range(count)
    ]


ROUTE_PATH = "/r0/index.html"


# --------------------------------------------------------------------------- publish


@dataclass
class PublishRow:
    services: int
    result: publish.PublishResult


def publish_at_sizes(
    python: str, sizes: Sequence[int] = PUBLISH_SIZES, publishes: int = PUBLISHES
) -> list[PublishRow]:
    rows = []
    for size in sizes:
        log(f"[scale] publishing to {size} services, {publishes} publishes")
        result = publish.run(python, services=size, publishes=publishes)
        if result.failure:
            log(f"  FAILED: {result.failure}")
        else:
            s = result.summary()
            log(f"  p50 {s['p50_ms']:.0f} ms, p99 {s['p99_ms']:.0f} ms")
        rows.append(PublishRow(size, result))
    return rows


# --------------------------------------------------------------------------- report


@dataclass
class RouteRow:
    resources: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    failure: str | None = None


@dataclass
class ScaleResult:
    sessions: list[SessionRow] = field(default_factory=list)
    routes: list[RouteRow] = field(default_factory=list)
    publish: list[PublishRow] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": [row.summary() for row in self.sessions],
            "routes": [vars(row) for row in self.routes],
            "publish": [
                {"services": row.services, "failure": row.result.failure}
                | (row.result.summary() if row.result.seconds else {})
                for row in self.publish
            ],
            "failures": self.failures,
        }


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def render(result: ScaleResult) -> str:
    out = [
        "Each measurement at several sizes within one run; ratios are to the smallest size "
        "(`bench/scale.py`, the `scale` step of `bench/run.py`).\n",
        "**Decisions with many live sessions**: a Policy service asked straight by "
        f"{DECIDE_CLIENTS} clients, {DECIDE_CALLS:,} decisions per size, each for a different "
        "session picked at random among all of them (every decision reads the session "
        "database; none writes). Goal: decisions/s and p99 within "
        f"{GOAL_SESSIONS}x of the smallest size.\n",
        "| database | live sessions | decisions/s | p50 | p99 | rate vs smallest "
        "| p99 vs smallest | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for backend in ("sqlite", "postgresql"):
        rows = [r for r in result.sessions if r.backend == backend]
        if not rows:
            continue
        base = rows[0].latency
        for row in rows:
            lat = row.latency
            slower = _ratio(base.rate, lat.rate)  # >1: fewer decisions/s than the smallest
            p99 = _ratio(lat.p(99), base.p(99))
            ok = (slower or 99.0) <= GOAL_SESSIONS and (p99 or 99.0) <= GOAL_SESSIONS
            name = "SQLite" if backend == "sqlite" else "PostgreSQL"
            out.append(
                f"| {name} | {row.size:,} | {lat.rate:,.0f} | {lat.p(50) or 0:.2f} ms "
                f"| {lat.p(99) or 0:.2f} ms | {lat.rate / base.rate if base.rate else 0:.2f}x "
                f"| {p99 or 0:.2f}x | {_mark(ok) if row is not rows[0] else ''} |"
            )
    out.append("")
    if result.routes:
        out += [
            "**Routing with many resources**: an Access Point (1 worker) with N public "
            f"resources under one host pattern, wrk asking `{ROUTE_PATH}` (the shortest "
            f"prefix). Goal: requests/s within {GOAL_ROUTES}x of the smallest table.\n",
            "| resources | requests/s | p50 | p99 | rate vs smallest | goal |",
            "|---|---|---|---|---|---|",
        ]
        base_rps = result.routes[0].rps
        for i, route in enumerate(result.routes):
            if route.failure:
                out.append(f"| {route.resources:,} | FAILED: {route.failure} | | | | |")
                continue
            ratio = route.rps / base_rps if base_rps else 0.0
            ok = ratio > 0 and 1 / ratio <= GOAL_ROUTES
            out.append(
                f"| {route.resources:,} | {route.rps:,.0f} | {route.p50_ms or 0:.2f} ms "
                f"| {route.p99_ms or 0:.2f} ms | {ratio:.2f}x | {_mark(ok) if i else ''} |"
            )
        out.append("")
    if result.publish:
        out += [
            "**Publishing to many services**: `bench/publish.py` (every internal link on "
            f"mutual TLS), {PUBLISHES} publishes per size, time from the publish call to the "
            f"last acknowledgement. Goal: p99 < {GOAL_PUBLISH_P99_S:g} s at the largest size.\n",
            "| services | p50 | p99 | max | all registered after | goal |",
            "|---|---|---|---|---|---|",
        ]
        for prow in result.publish:
            if prow.result.failure or not prow.result.seconds:
                out.append(f"| {prow.services} | FAILED: {prow.result.failure} | | | | |")
                continue
            s = prow.result.summary()
            ok = s["p99_ms"] < GOAL_PUBLISH_P99_S * 1000
            out.append(
                f"| {prow.services} | {s['p50_ms']:.0f} ms | {s['p99_ms']:.0f} ms "
                f"| {s['max_ms']:.0f} ms | {s['startup_s']:.1f} s | {_mark(ok)} |"
            )
        out.append("")
    if result.failures:
        out.append("Failed: " + "; ".join(result.failures) + "\n")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """The publishing rows alone (the other two need bench/run.py's Lab, nginx and wrk):
    ``bench/scale.py --sizes 20 50 100``. Prints the table and each size's summary (CPU by
    role idle and per publish, sockets, load average); writes nothing."""
    import argparse

    parser = argparse.ArgumentParser(description="publishing to many services (bench/scale.py)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(PUBLISH_SIZES))
    parser.add_argument("--publishes", type=int, default=PUBLISHES)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    result = ScaleResult(publish=publish_at_sizes(args.python, args.sizes, args.publishes))
    for row in result.publish:
        print(json.dumps({"services": row.services, **row.result.summary()}))
    print(render(result))
    return 1 if any(row.result.failure for row in result.publish) else 0


if __name__ == "__main__":
    sys.exit(main())

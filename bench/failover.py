"""What losing the primary Policy service costs the users of an Access Point, under load.

The example HA topology (``examples/ha-cluster.yaml``: HAProxy, ap1, ap2, ps1, ps2, auth1,
auth2, Admin, a PostgreSQL pair, the demo backend) runs on free ports in a temporary
directory (``gatehouse.cluster.runner.Cluster``). Both Access Points get
``decision_cache_entries: 0`` through Admin, so that every request asks a Policy service:
with the decision cache, most requests never reach one and a Policy service's loss would
go unnoticed. Then:

1. ``SESSIONS`` users sign in directly on ap1 (not through HAProxy: ap1's Policy services
   are ps1, then ps2, so ps1's loss is ap1's failover), and send a protected page at
   ``RATE`` requests/s in total, each request at a fixed instant (open loop) on its user's
   keep-alive connection; latency runs from that instant, so a stall is charged to the
   requests that queue behind it.
2. ``KILL_AT`` seconds in, ps1 gets SIGKILL (its whole process group). Measured: the time
   from the kill to the first successful answer to a request sent after it (ps1 is dead, so
   ps2 decided it), the requests in flight at the kill, failed requests (anything but 200,
   connection errors, timeouts), and p50/p99/max latency in the failover window (the kill
   to 2 s later) against before the kill.
3. ``WINDOW`` seconds after the kill, ps1 is started again (the cluster waits until its
   health check answers); ap1's status listener (``status_listen``: its health answer with
   the Policy routing) is polled every 100 ms until its decisions go to ps1 again
   (fail-back: ``rise`` passed probes, one every ``probe_interval``), and the load goes on
   ``AFTER_FAILBACK`` seconds more. When ap1 marked ps1 down and up again is read from the
   routing's ``since`` (the transition's own time), not from the polls: each poll is a new
   mutual TLS connection to ap1, so polling is kept away from the failover window and
   sparse after it, not to load the process under measurement.

Beside it, HAProxy's default health checks (``inter 2s fall 3 rise 2``), computed, not
measured: HAProxy finds a dead server only through its checks.

    .venv/bin/python bench/failover.py            # about a minute; prints the table
    .venv/bin/python bench/failover.py --keep-tmp

bench/run.py runs it as the ``failover`` step and writes its table into docs/benchmarks.md.
Everything is stopped at the end, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from signals import terminate_on_signals

from gatehouse.cluster.drill import Connection, get_request, login, on_free_ports
from gatehouse.cluster.haproxy import HEALTH_PATH as AP_HEALTH_PATH
from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.status import access_point_status, probe
from gatehouse.config.failover import PROBE_INTERVAL, RISE, FailoverSettings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ha-cluster.yaml"

SESSIONS = 20
RATE = 300.0  # requests/s, all sessions together
KILL_AT = 3.0  # seconds after the load started
WINDOW = 2.0  # the failover window: the kill to this much later; then ps1 is started again
AFTER_FAILBACK = 2.0  # seconds of load after the fail-back
WARMUP = 0.5  # seconds at the start of the load left out of "before the kill"
FAILBACK_TIMEOUT = 20.0
REQUEST_TIMEOUT = 5.0
HEALTH_POLL = 0.1
PUBLISH_TIMEOUT = 30.0
PATH = "/hello"  # the demo resource: authenticated users only

ACCESS_POINT = "ap1"
PRIMARY, SECONDARY = "ps1", "ps2"  # ap1's Policy services, in its order
USER, PASSWORD = "bench", "a long benchmark passphrase"

# HAProxy's defaults (no "inter", "fall", "rise" on the server line): the reference row.
HAPROXY_INTER = 2.0
HAPROXY_FALL = 3
HAPROXY_RISE = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Outcome:
    scheduled: float  # monotonic: the instant the request was due
    sent: float  # when it was written (after the previous answer on its connection)
    done: float
    status: int  # 0: no answer
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error

    @property
    def latency(self) -> float:
        return self.done - self.scheduled


@dataclass
class Window:
    """Latencies and failures of the requests of one part of the run."""

    requests: int = 0
    failed: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> Window:
        if not outcomes:
            return cls()
        latencies = [o.latency * 1000 for o in outcomes]
        errors: dict[str, int] = {}
        for o in outcomes:
            if not o.ok:
                key = o.error or f"HTTP {o.status}"
                errors[key] = errors.get(key, 0) + 1
        return cls(
            requests=len(outcomes),
            failed=sum(errors.values()),
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            max_ms=max(latencies),
            errors=errors,
        )


@dataclass
class FailoverResult:
    sessions: int = SESSIONS
    rate: float = RATE
    startup_s: float = 0.0  # cluster up
    load_s: float = 0.0  # how long the load ran
    first_ok_ms: float | None = None  # kill → first 200 to a request sent after the kill
    first_ok_latency_ms: float | None = None  # that request's own latency
    marked_down_ms: float | None = None  # kill → ap1 marked ps1 down (its routing's since)
    in_flight: Window = field(default_factory=Window)  # sent before the kill, answered after
    before: Window = field(default_factory=Window)
    window: Window = field(default_factory=Window)  # answered after the kill, sent < +2 s
    failback_period: Window = field(default_factory=Window)  # ps1 start → end of load
    total: Window = field(default_factory=Window)
    restart_s: float | None = None  # ps1 start → its health check answers
    failback_s: float | None = None  # ps1 healthy → ap1's health says ps1 again
    probe_interval: float = PROBE_INTERVAL
    rise: int = RISE
    failure: str | None = None

    def summary(self) -> dict[str, Any]:
        def window(w: Window) -> dict[str, Any]:
            return {
                "requests": w.requests,
                "failed": w.failed,
                "p50_ms": round(w.p50_ms, 2),
                "p99_ms": round(w.p99_ms, 2),
                "max_ms": round(w.max_ms, 2),
                "errors": w.errors,
            }

        return {
            "sessions": self.sessions,
            "rate": self.rate,
            "startup_s": round(self.startup_s, 1),
            "load_s": round(self.load_s, 2),
            "first_ok_ms": _round(self.first_ok_ms),
            "first_ok_latency_ms": _round(self.first_ok_latency_ms),
            "marked_down_ms": _round(self.marked_down_ms),
            "in_flight": window(self.in_flight),
            "before": window(self.before),
            "window": window(self.window),
            "failback_period": window(self.failback_period),
            "total": window(self.total),
            "restart_s": _round(self.restart_s),
            "failback_s": _round(self.failback_s),
            "probe_interval": self.probe_interval,
            "rise": self.rise,
            "haproxy_reference": {
                "inter_s": HAPROXY_INTER,
                "fall": HAPROXY_FALL,
                "rise": HAPROXY_RISE,
                "detection_max_s": HAPROXY_INTER * HAPROXY_FALL,
                "failback_max_s": HAPROXY_INTER * HAPROXY_RISE,
                "computed": True,
            },
            "failure": self.failure,
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------- HTTP client


async def sign_in_all(host: str, port: int, count: int) -> list[str]:
    limit = asyncio.Semaphore(4)

    async def one() -> str:
        async with limit:
            return await asyncio.wait_for(login(host, port, USER, PASSWORD), 30)

    return await asyncio.gather(*(one() for _ in range(count)))


async def check_page(host: str, port: int, cookie: str) -> None:
    conn = Connection(host, port)
    try:
        status, _, _ = await conn.request(get_request(PATH, f"{host}:{port}", cookie))
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET {PATH} with a session on {ACCESS_POINT}: HTTP {status}")
    conn = Connection(host, port)
    try:
        status, _, _ = await conn.request(get_request(PATH, f"{host}:{port}"))
    finally:
        conn.close()
    if status == 200:
        raise RuntimeError(f"GET {PATH} without a session answered 200: not protected")


class Load:
    """Open-loop load from ``cookies`` users on a thread; runs until ``until`` (monotonic),
    which the controller moves."""

    def __init__(self, host: str, port: int, cookies: Sequence[str], rate: float) -> None:
        self.host, self.port = host, port
        self.cookies = list(cookies)
        self.interval = len(cookies) / rate
        self.until = float("inf")
        self.started = 0.0
        self.outcomes: list[Outcome] = []
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="failover load", daemon=True)

    def start(self) -> float:
        """Start the load; the monotonic time its first request is due."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the load did not start")
        return self.started

    def stop(self, at: float | None = None) -> None:
        self.until = time.monotonic() if at is None else at

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("the load did not stop")
        if self.error is not None:
            raise RuntimeError(f"the load generator failed: {self.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by join()
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.started = time.monotonic() + 0.05
        self._ready.set()
        await asyncio.gather(*(self._user(i, c) for i, c in enumerate(self.cookies)))

    async def _user(self, index: int, cookie: str) -> None:
        conn = Connection(self.host, self.port)
        raw = get_request(PATH, f"{self.host}:{self.port}", cookie)
        # Users take turns: together, one request every interval / users seconds.
        next_at = self.started + self.interval * index / len(self.cookies)
        try:
            while next_at < self.until:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                scheduled, next_at = next_at, next_at + self.interval
                sent = time.monotonic()
                status, error = 0, ""
                try:
                    status, _, _ = await asyncio.wait_for(conn.request(raw), REQUEST_TIMEOUT)
                except TimeoutError:
                    conn.close()
                    error = "timeout"
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    conn.close()
                    error = type(exc).__name__
                self.outcomes.append(Outcome(scheduled, sent, time.monotonic(), status, error))
        finally:
            conn.close()


#: Where ap1's status listener is, and the operator's TLS context for it once enrolled.
StatusListener = tuple[tuple[str, int], ssl.SSLContext | None]


def routing(status: StatusListener) -> dict[str, Any]:
    """ap1's Policy routing from its status listener's health answer ({} without an
    answer). The public health answer says only up or down."""
    address, context = status
    data = probe(address, AP_HEALTH_PATH, 1.0, context=context).answer or {}
    policy = data.get("policy")
    return policy if isinstance(policy, dict) else {}


def policy_using(status: StatusListener) -> str | None:
    """The Policy service ap1's decisions go to now (None: no answer)."""
    using = routing(status).get("using")
    return using.rstrip("/") if isinstance(using, str) else None


def changed_at(status: StatusListener, url: str, up: bool) -> float | None:
    """The UNIX time ap1 last marked ``url`` up (or down), if that is its state now."""
    for endpoint in routing(status).get("endpoints") or []:
        if isinstance(endpoint, dict) and str(endpoint.get("url", "")).rstrip("/") == url:
            since = endpoint.get("since")
            if endpoint.get("up") is up and isinstance(since, int | float):
                return float(since)
    return None


def wait_using(status: StatusListener, url: str, timeout: float) -> float | None:
    """Poll until ap1 uses ``url``; the monotonic time it was seen doing so (None: not in
    time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if policy_using(status) == url:
            return time.monotonic()
        time.sleep(HEALTH_POLL)
    return None


# --------------------------------------------------------------------------- the run


def add_user(home: Path) -> None:
    argv = [sys.executable, "-m", "gatehouse", "users", "add", USER, "--password-stdin"]
    done = subprocess.run(
        [*argv, "--home", str(home)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"gatehouse users add failed: {done.stderr.strip()}")


def publish_uncached(cluster: Cluster) -> dict[str, Any]:
    """Publish the running configuration with ``decision_cache_entries: 0`` on every Access
    Point and wait until the services it configures run it; ap1's entry."""
    admin = cluster.admin_client()
    newest = admin.call("GET", "/api/v1/versions?limit=1")[0]["version"]
    document = yaml.safe_load(admin.call("GET", f"/api/v1/versions/{newest}")["text"])
    for entry in document["access_points"]:
        entry["decision_cache_entries"] = 0
    admin.call("PUT", "/api/v1/draft", {"text": yaml.safe_dump(document, sort_keys=False)})
    comment = "bench/failover.py: decision cache off"
    number = int(admin.call("POST", "/api/v1/publish", {"comment": comment})["version"])
    ids = set(admin.call("GET", f"/api/v1/versions/{number}")["services"])
    deadline = time.monotonic() + PUBLISH_TIMEOUT
    while True:
        rows = {row["id"]: row for row in admin.call("GET", "/api/v1/services")}
        done = [rows[i] for i in ids if i in rows and (rows[i]["running_version"] or 0) >= number]
        if len(done) == len(ids):
            break
        refused = [r for r in rows.values() if r["id"] in ids and r.get("last_error")]
        if refused:
            raise RuntimeError(f"{refused[0]['id']} refused version {number}: {refused[0]}")
        if time.monotonic() > deadline:
            missing = sorted(ids - {r["id"] for r in done})
            raise RuntimeError(f"no acknowledgement of version {number} from {missing}")
        time.sleep(0.05)
    return next(e for e in document["access_points"] if e["id"] == ACCESS_POINT)


def at(instant: float) -> None:
    time.sleep(max(0.0, instant - time.monotonic()))


def measure(cluster: Cluster, result: FailoverResult, cookies: list[str]) -> None:
    """Load ap1, kill ps1, start it again, wait for the fail-back; fill ``result``."""
    topology = cluster.topology
    urls = {ps.id: topology.endpoint(ps).rstrip("/") for ps in topology.policy_services}
    address = cluster.member(ACCESS_POINT).address
    assert address is not None
    host, port = address
    status = access_point_status(cluster, ACCESS_POINT)
    if status is None:
        raise RuntimeError(f"{ACCESS_POINT} has no status_listen in the topology")
    if policy_using(status) != urls[PRIMARY]:
        raise RuntimeError(f"{ACCESS_POINT} does not use {PRIMARY} before the kill")

    load = Load(host, port, cookies, result.rate)
    start = load.start()
    kill = restarted = healthy = failback = None
    try:
        at(start + KILL_AT)
        kill, kill_wall = time.monotonic(), time.time()
        cluster.kill(PRIMARY)
        log(f"[failover] {PRIMARY} killed {kill - start:.2f}s into the load")
        at(kill + WINDOW)
        down = changed_at(status, urls[PRIMARY], up=False)
        if down is not None:
            result.marked_down_ms = (down - kill_wall) * 1000
        restarted = time.monotonic()
        cluster.start(PRIMARY)  # waits until its health check answers
        healthy, healthy_wall = time.monotonic(), time.time()
        result.restart_s = healthy - restarted
        log(f"[failover] {PRIMARY} healthy again after {result.restart_s:.2f}s")
        failback = wait_using(status, urls[PRIMARY], FAILBACK_TIMEOUT)
        if failback is None:
            raise RuntimeError(
                f"{ACCESS_POINT} did not fail back to {PRIMARY} within {FAILBACK_TIMEOUT:g}s"
            )
        back = changed_at(status, urls[PRIMARY], up=True)
        result.failback_s = (back - healthy_wall) if back is not None else failback - healthy
        log(f"[failover] fail-back {result.failback_s:.2f}s after {PRIMARY} was healthy")
        load.stop(failback + AFTER_FAILBACK)
    finally:
        if failback is None:
            load.stop()
        load.join(REQUEST_TIMEOUT + AFTER_FAILBACK + 10)
    assert kill is not None
    assert restarted is not None

    outcomes = sorted(load.outcomes, key=lambda o: o.scheduled)
    if not outcomes:
        raise RuntimeError("the load sent no request")
    result.load_s = max(o.done for o in outcomes) - start
    result.total = Window.of(outcomes)
    result.before = Window.of(
        [o for o in outcomes if start + WARMUP <= o.scheduled and o.done < kill]
    )
    result.in_flight = Window.of([o for o in outcomes if o.sent < kill <= o.done])
    result.window = Window.of([o for o in outcomes if o.done >= kill and o.sent < kill + WINDOW])
    result.failback_period = Window.of([o for o in outcomes if o.done >= restarted])
    after = [o for o in outcomes if o.sent >= kill and o.ok]
    if after:
        first = min(after, key=lambda o: o.done)
        result.first_ok_ms = (first.done - kill) * 1000
        result.first_ok_latency_ms = (first.done - first.sent) * 1000


def run(sessions: int = SESSIONS, rate: float = RATE, keep: bool = False) -> FailoverResult:
    result = FailoverResult(sessions=sessions, rate=rate)
    root = Path(tempfile.mkdtemp(prefix="gh-bench-failover-"))
    root.chmod(0o755)  # PostgreSQL may run as another user, which must traverse it
    home = root / "home"
    cluster: Cluster | None = None
    try:
        if find_haproxy() is None:
            raise RuntimeError("HAProxy is not installed (apt-get install haproxy)")
        cluster = Cluster.prepare(home, on_free_ports(EXAMPLE, root / "topology.yaml"), fsync=False)
        began = time.monotonic()
        cluster.up()
        result.startup_s = time.monotonic() - began
        log(f"[failover] cluster up in {result.startup_s:.1f}s")
        add_user(home)
        entry = publish_uncached(cluster)
        settings = FailoverSettings.model_validate(entry.get("failover") or {})
        result.probe_interval = settings.probe_interval or 0.0
        result.rise = settings.rise
        address = cluster.member(ACCESS_POINT).address
        assert address is not None
        host, port = address
        cookies = asyncio.run(sign_in_all(host, port, sessions))
        if len(set(cookies)) != sessions:
            raise RuntimeError("two sign-ins got the same session")
        asyncio.run(check_page(host, port, cookies[0]))
        log(f"[failover] {sessions} sessions on {ACCESS_POINT}, {rate:g} requests/s")
        measure(cluster, result, cookies)
    except Exception as exc:  # a failed measurement is reported, not a traceback
        result.failure = f"{type(exc).__name__}: {exc}"
    finally:
        if cluster is not None:
            try:
                cluster.down()
            except Exception as exc:
                log(f"[failover] stopping the cluster: {exc}")
                result.failure = result.failure or f"stopping the cluster: {exc}"
        if keep:
            log(f"[failover] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- rendering


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def _failed(w: Window) -> str:
    if not w.failed:
        return f"0 of {w.requests:,}"
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(w.errors.items()))
    return f"**{w.failed}** of {w.requests:,} ({kinds})"


def _in_flight(w: Window) -> str:
    if not w.requests:
        return "No request was in flight at the kill."
    outcome = "all answered 200" if not w.failed else f"{w.failed} failed"
    return (
        f"{w.requests} request(s) were in flight at the kill: {outcome}, the slowest in "
        f"{_ms(w.max_ms)}."
    )


def render(result: FailoverResult) -> str:
    """The docs section."""
    if result.failure:
        return f"Failover of the primary Policy service: FAILED: {result.failure}\n"
    r = result
    ok = "✓" if r.total.failed == 0 else "✗"
    detect = HAPROXY_INTER * HAPROXY_FALL
    back = HAPROXY_INTER * HAPROXY_RISE
    window = f"p99 {_ms(r.window.p99_ms)}, max {_ms(r.window.max_ms)}"
    failback = "-" if r.failback_s is None else f"{r.failback_s:.2f} s"
    rows = [
        "| window | requests | failed | p50 | p99 | max |",
        "|---|---|---|---|---|---|",
    ]
    for label, w in (
        (f"before the kill (answered before it, first {WARMUP:g} s left out)", r.before),
        (f"failover window (answered after the kill, sent < kill + {WINDOW:g} s)", r.window),
        ("in flight at the kill", r.in_flight),
        (f"{PRIMARY} restarted → {AFTER_FAILBACK:g} s after fail-back", r.failback_period),
        ("whole run", r.total),
    ):
        if not w.requests:
            rows.append(f"| {label} | 0 | - | - | - | - |")
            continue
        rows.append(
            f"| {label} | {w.requests:,} | {_failed(w)} | {_ms(w.p50_ms)} | "
            f"{_ms(w.p99_ms)} | {_ms(w.max_ms)} |"
        )
    return (
        f"SIGKILL to the primary Policy service ({PRIMARY}) of {ACCESS_POINT} in the example HA "
        f"topology on loopback, under {r.rate:g} requests/s of protected pages from "
        f"{r.sessions} sessions signed in on {ACCESS_POINT} (open loop, keep-alive, latency "
        "from each request's scheduled instant). Both Access Points run with "
        "`decision_cache_entries: 0`, so every request asks a Policy service: with the "
        "decision cache, most requests never reach one and the loss would hardly show. "
        f"ap2 gets no load, so {SECONDARY} takes over cold: it has served no decision before "
        "the kill. "
        f"{PRIMARY} is started again {WINDOW:g} s after the kill; fail-back is when "
        f"{ACCESS_POINT}'s routing (its status listener, read every 100 ms; the time is the "
        f"transition's own) says its decisions go to {PRIMARY} again.\n\n"
        "| | kill → first request served by the secondary | failed requests | "
        "latency in the failover window | fail-back after the primary is healthy |\n"
        "|---|---|---|---|---|\n"
        f"| Gatehouse AP → Policy services (measured) | {_ms(r.first_ok_ms)} | "
        f"{r.total.failed} of {r.total.requests:,} {ok} | {window} "
        f"(before: p99 {_ms(r.before.p99_ms)}) | {failback} "
        f"(rise {r.rise} x probe_interval {r.probe_interval:g} s) |\n"
        f"| HAProxy default checks, inter {HAPROXY_INTER:g} s x fall {HAPROXY_FALL} "
        f"(computed, not measured) | up to {detect:g} s | requests routed to the dead server "
        f"meanwhile fail unless retried | - | up to {back:g} s "
        f"(rise {HAPROXY_RISE} x inter {HAPROXY_INTER:g} s) |\n\n" + "\n".join(rows) + "\n\n"
        f"The first 200 to a request sent after the kill came {_ms(r.first_ok_ms)} after the "
        f"kill (that request's own latency: {_ms(r.first_ok_latency_ms)}); "
        f"{ACCESS_POINT} marked {PRIMARY} down "
        f"{_ms(r.marked_down_ms)} after the kill. {_in_flight(r.in_flight)} "
        f"{PRIMARY} answered its health check "
        f"{r.restart_s or 0:.1f} s after it was started again. The failover client does not "
        "wait for a detection: the request that meets the dead endpoint moves on to the next "
        "one at once, and the endpoint stays down (skipped) until its probes pass; HAProxy "
        f"learns of a dead server only from its checks, {HAPROXY_FALL} failures "
        f"{HAPROXY_INTER:g} s apart. Failed requests goal: 0.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--rate", type=float, default=RATE, help="requests/s in total")
    parser.add_argument("--keep-tmp", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print the raw figures")
    args = parser.parse_args(argv)
    with terminate_on_signals():
        result = run(args.sessions, args.rate, args.keep_tmp)
    print(render(result), end="")
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    return 1 if result.failure else 0


if __name__ == "__main__":
    sys.exit(main())

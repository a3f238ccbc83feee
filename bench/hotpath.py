#!/usr/bin/env python3
"""The Access Point's Python work per request, in process, without sockets.

A :class:`~gatehouse.access_point.connection.ClientConnection` with a fake transport is fed
keep-alive requests, its exchanges take a pooled fake backend connection that is fed the
bench backend's response; the CPU time per request is the AP's own parsing, routing, decision
and header work (the syscalls of a real run come on top). Public and protected (cached
decision) requests alternate in rounds, so both see the same machine state.

    .venv/bin/python bench/hotpath.py [--requests 100000] [--rounds 7] [--metrics]

With ``--metrics``: the public request on two such Access Points, one counting metrics (as
with ``metrics.listen``) and one not, in turns; the difference is what metrics cost the
request path in Python: its clock reads (one per read event) and its observations in native
histograms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from typing import Any

import uvloop

from gatehouse.access_point.connection import ClientConnection, WorkerState
from gatehouse.access_point.decisions import ALLOW, Decider, Decision, session_hash
from gatehouse.access_point.runtime import OriginRegistry, compile_config
from gatehouse.access_point.upstream import UpstreamConnection
from gatehouse.config.access_point import DEFAULT_IDENTITY_HEADERS, AccessPointConfig
from gatehouse.metrics.access_point import WorkerCounters

SESSION = "Jx3Zq0p1v2Yb8sKcL4mN5oR6tU7wV9aB0cD1eF2gH3i"
BODY = b"x" * 100
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + BODY
)


class FakeTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def setup(
    port: int = 8080, counters: WorkerCounters | None = None
) -> tuple[ClientConnection, UpstreamConnection, Decider]:
    config = AccessPointConfig.model_validate(
        {
            "access_point": {
                "listen": "127.0.0.1:8000",
                "policy_services": ["http://127.0.0.1:9"],
            },
            "resources": [
                {
                    "id": "bench-public",
                    "path_prefix": "/public",
                    "backends": [f"http://127.0.0.1:{port}"],
                    "public": True,
                },
                {"id": "bench", "path_prefix": "/", "backends": [f"http://127.0.0.1:{port}"]},
            ],
        }
    )
    settings = config.access_point
    decider = Decider(
        settings.policy_services,
        settings.id,
        [*DEFAULT_IDENTITY_HEADERS, *settings.identity_headers],
        settings.decision_timeout,
        settings.decision_cache_entries,
    )
    decider.cache.usable = True
    runtime = compile_config(config, OriginRegistry(), 1, decider, counters=counters)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    state = WorkerState(runtime, loop, clock=None if counters is None else counters.clock)
    state.now = loop.time()
    conn = ClientConnection(state)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    # Both resources share one origin: one pooled backend connection serves them all.
    route = runtime.router.match("127.0.0.1", "/")
    assert route is not None
    origin = route[0].group.origins[0]
    upstream = UpstreamConnection(origin)
    upstream.connection_made(FakeTransport())  # type: ignore[arg-type]
    origin.release(upstream, loop.time())
    return conn, upstream, decider


def request(path: str, cookie: str | None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1:8000"]
    if cookie is not None:
        lines.append(f"Cookie: {cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def run(conn: ClientConnection, upstream: UpstreamConnection, data: bytes, n: int) -> float:
    feed = conn.data_received
    reply = upstream.data_received
    out = conn.transport
    gc.collect()
    start = time.process_time()
    for _ in range(n):
        feed(data)
        reply(RESPONSE)
    took = time.process_time() - start
    assert out.written >= n, "no response written"  # type: ignore[union-attr]
    return took / n * 1e6


def metrics_ab(requests: int, rounds: int) -> None:
    """The public request with metrics off and on, in turns (ABBA)."""
    sides = {on: setup(counters=WorkerCounters() if on else None) for on in (False, True)}
    data = request("/public/", None)

    def timed(on: bool, n: int) -> float:
        conn, upstream, _ = sides[on]
        feed, reply = conn.data_received, upstream.data_received
        gc.collect()
        start = time.process_time()
        for _ in range(n):
            feed(data)
            reply(RESPONSE)
        return (time.process_time() - start) / n * 1e6

    results: dict[bool, list[float]] = {False: [], True: []}
    for on in results:
        timed(on, 1000)
    for round_ in range(rounds):
        for on in (False, True) if round_ % 2 == 0 else (True, False):
            results[on].append(timed(on, requests))
    off, on = (statistics.median(results[side]) for side in (False, True))
    print(f"public, metrics off: median {off:6.2f} µs, min {min(results[False]):6.2f} µs")
    print(f"public, metrics on : median {on:6.2f} µs, min {min(results[True]):6.2f} µs")
    print(f"metrics cost       : {on - off:+.2f} µs per request ({off / on:.3f}x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--metrics", action="store_true", help="metrics on vs off (public)")
    args = parser.parse_args()
    if args.metrics:
        metrics_ab(args.requests, args.rounds)
        return 0
    conn, upstream, decider = setup()
    cookie = f"gatehouse_session={SESSION}"
    targets = {
        "public": request("/public/", None),
        "protected": request("/", cookie),
        "protected+other cookies": request("/", f"theme=dark; {cookie}; lang=en"),
    }
    # One request asks the Policy service: put the answer in the cache as it would.
    identity = {"Remote-User": "bench", "Remote-Groups": "", "Remote-Email": "bench@example.com"}
    headers = tuple((n.encode(), v.encode()) for n, v in identity.items())
    allow = Decision(ALLOW, headers, 1e9)
    key = (session_hash(SESSION), "bench", b"GET", "127.0.0.1", ())
    decider.cache.put(key, allow, 0.0)
    for name, data in targets.items():
        run(conn, upstream, data, 1000)
        assert conn.queue == type(conn.queue)(), f"{name}: request not finished"
    hits = decider.cache.hits
    results: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, data in targets.items():
            results[name].append(run(conn, upstream, data, args.requests))
    assert decider.cache.hits - hits == 2 * args.rounds * args.requests, "cache not hit"
    base = statistics.median(results["public"])
    for name, values in results.items():
        med = statistics.median(values)
        print(
            f"{name:24}: median {med:6.2f} µs, min {min(values):6.2f} µs, "
            f"+{med - base:5.2f} µs vs public"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

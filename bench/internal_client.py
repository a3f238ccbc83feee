#!/usr/bin/env python3
"""Micro-benchmark of the internal failover client: latency of one call over a persistent
connection to a trivial local JSON endpoint, next to the floor a bare protocol reaches.

    .venv/bin/python bench/internal_client.py                 # raw server, 20000 calls
    .venv/bin/python bench/internal_client.py --server uvicorn --calls 5000

The server runs in its own process on 127.0.0.1 (a raw uvloop + llhttp server answering a
fixed JSON body, or uvicorn + Starlette as the services run). The client runs on uvloop as
in the Access Point. Rows:

- ``floor``: a bare asyncio protocol writing a fixed request and waiting for the fixed
  answer's last byte: loopback round trip plus the server, nothing else.
- ``client``: ``FailoverClient.call("POST", ..., json=..., retry_safe=True)`` with a
  two-endpoint list (the first one up), JSON encoded and decoded.

``client - floor`` is what the failover client adds to a call.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

BLOCK = 500  # calls per alternating block
BODY = b'{"decision":"allow","headers":{"x-user":"alice"},"ttl":5}'
REQUEST = {
    "session": "k3J9d0Qx2v8yZ5mN1pA7bC4eF6gH0iJ2kL8mN3oP5qR",
    "resource": "app",
    "method": "GET",
    "path": "/reports/2024",
    "client_ip": "192.0.2.10",
    "headers": {},
    "ap": "ap1",
}


# servers ----------------------------------------------------------------------------------
def serve_raw(port: int) -> None:
    import httptools
    import uvloop

    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(BODY), BODY)
    )

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(answer)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def serve_uvicorn(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def decide(request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json")

    app = Starlette(routes=[Route("/internal/v1/decide", decide, methods=["POST"])])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


# clients ----------------------------------------------------------------------------------
class Floor(asyncio.Protocol):
    """The least a client can do: write fixed bytes, wait for the answer's last byte."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.got = 0
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.expected and self.waiter is not None:
            self.got = 0
            self.waiter.set_result(None)

    async def call(self, request: bytes) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)  # type: ignore[attr-defined]
        await self.waiter


async def measure(fn: Callable[[], Awaitable[object]], calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await fn()
    samples = []
    perf = time.perf_counter
    for _ in range(calls):
        start = perf()
        await fn()
        samples.append(perf() - start)
    return samples


async def run_bench(port: int, calls: int, warmup: int) -> dict[str, list[float]]:
    import orjson

    from gatehouse.internal.client import FailoverClient

    url = f"http://127.0.0.1:{port}"
    spare = f"http://127.0.0.1:{free_port()}"

    # The floor: the same bytes the client sends, and the length of the known answer.
    payload = orjson.dumps(REQUEST)
    request = (
        b"POST /internal/v1/decide HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: keep-alive\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (port, len(payload), payload)
    )
    probe = socket.create_connection(("127.0.0.1", port))
    probe.sendall(request)
    answer = b""
    while not answer.endswith(BODY):
        answer += probe.recv(65536)
    probe.close()
    loop = asyncio.get_running_loop()
    transport, floor = await loop.create_connection(lambda: Floor(len(answer)), "127.0.0.1", port)

    async with FailoverClient([url, spare]) as client:

        async def one() -> object:
            response = await client.call(
                "POST", "/internal/v1/decide", json=REQUEST, retry_safe=True
            )
            return response.json()

        async def bare() -> None:
            await floor.call(request)

        # Alternate blocks, so drift (CPU frequency, other load) hits both rows alike.
        results: dict[str, list[float]] = {"floor": [], "client": []}
        gc.collect()
        await measure(bare, 0, warmup)
        await measure(one, 0, warmup)
        block = max(1, min(BLOCK, calls))
        for _ in range(max(1, calls // block)):
            results["floor"] += await measure(bare, block, 0)
            results["client"] += await measure(one, block, 0)
        assert client.pool_stats()[url]["opened"] == 1, "the connection was not reused"
    transport.close()
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(server: str, results: dict[str, list[float]]) -> None:
    print(f"server: {server}; {len(results['client'])} sequential calls, one connection")
    print(f"{'':8} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'mean us':>8}")
    for name, samples in results.items():
        print(
            f"{name:8} {pct(samples, 0.5) * 1e6:8.1f} {pct(samples, 0.9) * 1e6:8.1f} "
            f"{pct(samples, 0.99) * 1e6:8.1f} {pct(samples, 0.999) * 1e6:9.1f} "
            f"{statistics.fmean(samples) * 1e6:8.1f}"
        )
    client, floor = results["client"], results["floor"]
    print(
        f"added by the client: p50 {(pct(client, 0.5) - pct(floor, 0.5)) * 1e6:.1f} us, "
        f"p99 {(pct(client, 0.99) - pct(floor, 0.99)) * 1e6:.1f} us"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--server", choices=["raw", "uvicorn"], default="raw")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve is not None:
        (serve_raw if args.server == "raw" else serve_uvicorn)(args.serve)
        return 0

    import uvloop

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--server", args.server, "--serve", str(port)],
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        wait_port(port, proc)
        results = uvloop.run(run_bench(port, args.calls, args.warmup))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    report(args.server, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

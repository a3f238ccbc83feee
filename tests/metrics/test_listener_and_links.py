"""The metrics listener over real sockets, and the supervisor's links to its workers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from gatehouse.metrics.access_point import WorkerCounters
from gatehouse.metrics.listener import MetricsListener
from gatehouse.metrics.workers import SnapshotProtocol, WorkerLinks


def request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def _serve_listener(port_box: list[int], stop: asyncio.Event) -> None:
    async def render() -> bytes:
        return b"gatehouse_test_total 1.0\n"

    listener = MetricsListener(render)
    assert await listener.start("127.0.0.1", 0)
    assert listener.port is not None
    port_box.append(listener.port)
    await stop.wait()
    listener.close()


@pytest.fixture
def listener_port() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    box: list[int] = []
    thread = threading.Thread(target=loop.run_until_complete, args=(_serve_listener(box, stop),))
    thread.start()
    while not box:
        assert thread.is_alive()
        threading.Event().wait(0.01)
    yield box[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)
    loop.close()


def test_get_metrics(listener_port: int) -> None:
    answer = request(listener_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=0.0.4" in head
    assert body == b"gatehouse_test_total 1.0\n"


def test_other_paths_and_methods_are_refused(listener_port: int) -> None:
    assert request(listener_port, b"GET /secret HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert request(listener_port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert request(listener_port, b"junk\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_a_taken_port_is_reported_not_raised() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def start() -> bool:
            async def render() -> bytes:
                return b""

            return await MetricsListener(render).start("127.0.0.1", port)

        assert asyncio.run(start()) is False


class FakeWorker:
    """A worker's side of a link: its loop on a thread, answering with its counters."""

    def __init__(self, sock: socket.socket, counters: WorkerCounters) -> None:
        self.counters = counters
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def serve() -> asyncio.BaseTransport:
            transport, _ = await self.loop.connect_accepted_socket(
                lambda: SnapshotProtocol(self.snapshot), sock
            )
            return transport

        self.transport = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(5)

    def snapshot(self) -> dict[str, Any]:
        c = self.counters
        return {
            "workers": 1,
            "requests": [[r, m.decode(), s, n] for (r, m, s), n in c.requests.items()],
        }

    def stop(self) -> None:
        async def close() -> None:
            self.transport.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def attach(links: WorkerLinks, slot: int, counters: WorkerCounters) -> FakeWorker:
    pair = links.before_fork()
    worker_end = pair[1].dup()
    links.in_parent(slot, pair)  # closes the supervisor's copy of the worker's end
    return FakeWorker(worker_end, counters)


def requests_of(snapshot: dict[str, Any]) -> float:
    return sum(n for *_, n in snapshot["requests"])


def test_links_add_workers_up_and_keep_a_replaced_ones_counts() -> None:
    links = WorkerLinks()
    first, second = WorkerCounters(), WorkerCounters()
    for _ in range(3):
        first.request("app", b"GET", 200, 0.001)
    second.request("app", b"GET", 200, 0.001)
    workers = [attach(links, 0, first), attach(links, 1, second)]
    try:
        merged = links.collect()
        assert merged["workers"] == 2
        assert requests_of(merged) == 4
        # Worker 0 crashed and was replaced by a fresh one: its last read counts stay.
        workers[0].stop()
        workers[0] = attach(links, 0, WorkerCounters())
        merged = links.collect()
        assert merged["workers"] == 2
        assert requests_of(merged) == 4
    finally:
        for worker in workers:
            worker.stop()
        links.close()

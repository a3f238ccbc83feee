"""How the request path times requests: the read-event clock and the native histograms,
in process, and what a real Access Point measures across read events."""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator

import pytest

from gatehouse.access_point.connection import ClientConnection
from gatehouse.access_point.upstream import UpstreamConnection
from gatehouse.metrics.access_point import WorkerCounters
from gatehouse.metrics.names import DURATION_BUCKETS
from gatehouse.metrics.timing import HIST_LEN, EventClock, Histogram, bucket_of, check_bounds
from tests.metrics.test_access_point_workers import get, scrape
from tests.support.fake_socket import FakeTransport, wired_access_point
from tests.support.processes import Service, free_ports, wait_port, write_config


def test_the_histogram_tree_agrees_with_the_bounds() -> None:
    assert check_bounds() == []
    values = [10 ** random.uniform(-6, 2) for _ in range(5000)]
    for value in [*values, *DURATION_BUCKETS]:
        assert bucket_of(value) == bisect_left(DURATION_BUCKETS, value), value


def test_a_histogram_counts_and_sums_what_it_observed() -> None:
    hist = Histogram()
    for value in (0.0001, 0.0003, 0.0003, 4.0, 30.0, -1.0):
        hist.observe(value)
    values = hist.values()
    assert len(values) == HIST_LEN
    assert values[0] == 2  # 0.0001 (le inclusive) and the negative one
    assert values[2] == 2
    assert values[DURATION_BUCKETS.index(5.0)] == 1
    assert values[-2] == 1  # +Inf
    assert values[-1] == pytest.approx(33.0007)
    assert hist.count() == 6
    hist.observe(math.nan)  # not a duration the clock gives, but counted somewhere
    assert hist.values()[-2] == 2


def test_the_event_clock_reads_the_clock_outside_an_event() -> None:
    clock = EventClock()
    first = clock.now()
    assert clock.now() >= first > 0
    clock.stamp = 12.5  # a read event began then
    assert clock.now() == 12.5
    clock.stamp = 0.0
    assert clock.now() >= first


@pytest.fixture
def counted() -> Iterator[tuple[ClientConnection, UpstreamConnection, WorkerCounters]]:
    """One client connection to an AP counting metrics, and one pooled backend connection,
    with fake sockets."""
    counters = WorkerCounters()
    counters.on = True
    with wired_access_point(BACKEND, counters) as wired:
        yield wired.conn, wired.upstream, counters


BACKEND = "http://127.0.0.1:9"
REQUEST = b"GET /x HTTP/1.1\r\nHost: app\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_one_clock_reading_per_read_event(
    counted: tuple[ClientConnection, UpstreamConnection, WorkerCounters],
) -> None:
    """A request sent on in the read that brought it, answered in one backend read: its
    backend's time and its own are the same two readings, and no reading outlives its read."""
    conn, upstream, counters = counted
    for _ in range(3):
        conn.data_received(REQUEST)
        assert counters.clock.stamp == 0.0
        upstream.data_received(RESPONSE)
        assert counters.clock.stamp == 0.0
    backend, requests = counters.upstream[BACKEND], counters.durations["app"]
    assert backend[:-1] == requests[:-1]
    assert backend[-1] == requests[-1] > 0  # the same sums: the same readings
    assert counters.requests == {("app", b"GET", 200): 3.0}


def test_a_read_that_fails_leaves_no_reading_behind(
    counted: tuple[ClientConnection, UpstreamConnection, WorkerCounters],
) -> None:
    conn, upstream, counters = counted
    conn.data_received(REQUEST)
    conn.transport = FakeTransport(fail=True)  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        upstream.data_received(RESPONSE)  # the response cannot be written to the client
    assert counters.clock.stamp == 0.0
    assert counters.clock.now() > 0


class SlowBackend:
    """A backend that answers ``/slow`` after ``delay`` seconds, and ``/trickle`` with its
    head at once and its body after ``delay``: the time to the response head and to the end
    of the response differ, and fall in different read events of the Access Point."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1]
                if path.endswith(b"/slow"):
                    time.sleep(self.delay)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
                    time.sleep(self.delay)
                    conn.sendall(b"ok")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def timed_access_point(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, int, dict[str, str]]]:
    """A one-worker Access Point with metrics, ``/slow`` and ``/trickle`` on their own
    backends; yields its port, its metrics port and each resource's backend URL."""
    tmp = tmp_path_factory.mktemp("ap-timing")
    port, metrics_port = free_ports(2)
    backends = {"slow": SlowBackend(DELAY), "trickle": SlowBackend(DELAY)}
    resources = [
        {"id": name, "hosts": ["*"], "path_prefix": f"/{name}", "backends": [b.url], "public": True}
        for name, b in backends.items()
    ]
    config = {
        "access_point": {
            "listen": f"127.0.0.1:{port}",
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        },
        "resources": resources,
    }
    path = write_config(tmp / "ap.yaml", config)
    service = Service(["access-point", "--config", str(path)], tmp / "ap.log", "127.0.0.1", port)
    try:
        service.wait_ready()
        wait_port("127.0.0.1", metrics_port, 10, service.proc)
        yield port, metrics_port, {name: b.url for name, b in backends.items()}
    finally:
        service.stop()
        for backend in backends.values():
            backend.close()


#: How long the backends wait (before the response, or between its head and body), seconds.
DELAY = 0.3


def test_durations_span_the_read_events_they_cross(
    timed_access_point: tuple[int, int, dict[str, str]],
) -> None:
    """Each read event is timed by one clock reading: a backend's time ends with the read
    that brought its response head, a request's with the read that completed its response."""
    port, metrics_port, urls = timed_access_point
    for _ in range(3):
        assert get(port, "/slow/slow") == 200
        assert get(port, "/trickle/trickle") == 200
    got = scrape(metrics_port)

    def below(family: str, label: tuple[str, str], le: str) -> float:
        name = f"gatehouse_access_point_{family}_duration_seconds_bucket"
        return got[(name, tuple(sorted((label, ("le", le)))))]

    def count(family: str, label: tuple[str, str]) -> float:
        return got[(f"gatehouse_access_point_{family}_duration_seconds_count", (label,))]

    # A slow backend: its time and the request's both hold the wait.
    slow = ("backend", urls["slow"])
    assert count("upstream", slow) == 3
    assert below("upstream", slow, "0.25") == 0
    assert below("upstream", slow, "10.0") == 3
    assert count("request", ("resource", "slow")) == 3
    assert below("request", ("resource", "slow"), "0.25") == 0
    # A backend that sends its head at once and its body later: its time ends at the head,
    # the request's when the body came, in a later read event.
    trickle = ("backend", urls["trickle"])
    assert count("upstream", trickle) == 3
    assert below("upstream", trickle, "0.25") == 3
    assert count("request", ("resource", "trickle")) == 3
    assert below("request", ("resource", "trickle"), "0.25") == 0
    assert below("request", ("resource", "trickle"), "10.0") == 3

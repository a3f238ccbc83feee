"""A real multi-worker Access Point: one metrics endpoint adds every worker's counts up, and
a worker killed and restarted does not take its counts with it."""

from __future__ import annotations

import http.client
import os
import signal
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.node import children
from tests.support.processes import Service, free_ports, wait_port, write_config
from tests.support.recording_backend import RecordingBackend


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


OK = (
    "gatehouse_access_point_requests_total",
    (("method", "GET"), ("resource", "app"), ("status", "200")),
)
MISSING = (
    "gatehouse_access_point_requests_total",
    (("method", "GET"), ("resource", "none"), ("status", "404")),
)


@pytest.fixture(scope="module")
def access_point(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, int]]:
    tmp = tmp_path_factory.mktemp("ap-metrics")
    port, metrics_port = free_ports(2)
    with RecordingBackend() as backend:
        config = {
            "access_point": {
                "listen": f"127.0.0.1:{port}",
                "workers": 2,
                "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            },
            "resources": [
                {
                    "id": "app",
                    "hosts": ["*"],
                    "path_prefix": "/app",
                    "backends": [backend.url],
                    "public": True,
                }
            ],
        }
        path = write_config(tmp / "ap.yaml", config)
        service = Service(
            ["access-point", "--config", str(path)], tmp / "ap.log", "127.0.0.1", port
        )
        try:
            service.wait_ready()
            wait_port("127.0.0.1", metrics_port, 10, service.proc)
            yield service, metrics_port
        finally:
            service.stop()


def test_one_endpoint_for_every_worker(access_point: tuple[Service, int]) -> None:
    service, metrics_port = access_point
    start = scrape(metrics_port)
    for _ in range(30):  # one connection each: the kernel spreads them over the workers
        assert get(service.port, "/app/x") == 200
    assert get(service.port, "/elsewhere") == 404
    got = scrape(metrics_port)
    assert got[("gatehouse_access_point_workers", ())] == 2
    assert got[OK] - start.get(OK, 0) == 30
    assert got[MISSING] - start.get(MISSING, 0) == 1
    backend = [k for k in got if k[0] == "gatehouse_access_point_upstream_duration_seconds_count"]
    assert len(backend) == 1
    assert got[backend[0]] - start.get(backend[0], 0) == 30
    count = ("gatehouse_access_point_request_duration_seconds_count", (("resource", "app"),))
    assert got[count] - start.get(count, 0) == 30
    # The public port never answers metrics.
    assert get(service.port, "/metrics") == 404


def test_a_restarted_worker_keeps_what_it_counted(access_point: tuple[Service, int]) -> None:
    service, metrics_port = access_point
    assert get(service.port, "/app/z") == 200
    before = scrape(metrics_port)[OK]
    workers = children(service.pid)
    assert len(workers) == 2
    os.kill(next(iter(workers)), signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        now = children(service.pid)
        if len(now) == 2 and now.keys() != workers.keys():
            got = scrape(metrics_port)
            if got[("gatehouse_access_point_workers", ())] == 2:
                break
        assert time.monotonic() < deadline, "the worker was not restarted"
        time.sleep(0.1)
    assert got[OK] == before
    assert get(service.port, "/app/y") == 200
    assert scrape(metrics_port)[OK] == before + 1

"""The real Prometheus (Debian's /usr/bin/prometheus) scrapes a running single node through
the HOME/prometheus.yml that ``gatehouse up`` wrote, as it is, and finds every target up."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.compiled import is_compiled
from tests.support.node import Node
from tests.support.processes import free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ROLES = {"administration", "access_point", "policy", "authentication", "distribution"}
#: The first scrape of a target comes within one scrape interval (15 s) of Prometheus's start.
TARGETS_UP_WITHIN = 40.0


def missing(what: str) -> None:
    reason = f"{what} is not installed (apt-get install prometheus)"
    if os.environ.get("GATEHOUSE_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (GATEHOUSE_REQUIRE_ALL=1)", pytrace=False)
    pytest.skip(reason)


def free_port_run(count: int) -> int:
    """A port such that it and the ``count - 1`` after it are free now, below the kernel's
    ephemeral range (``ip_local_port_range``, 32768 and up by default): the node binds them
    only later, and a port in that range may meanwhile become the local end of any outgoing
    connection or of another test's ``bind(0)`` (seen with three xdist workers)."""
    low = ephemeral_low()
    for _ in range(200):
        base = random.randrange(10000, max(low - count, 10001))
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports")


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        document = json.loads(response.read())
    assert document["status"] == "success", document
    return document["data"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, int]]:
    if not Path(PROMETHEUS).exists():
        missing(PROMETHEUS)
    base = free_port_run(5)
    started = Node(tmp_path_factory.mktemp("prom-node"), ["--metrics-listen", f"127.0.0.1:{base}"])
    try:
        started.wait_for("Gatehouse is up")
        yield started, base
    finally:
        started.close()


def test_scrape_config_is_valid_for_promtool(node: tuple[Node, int]) -> None:
    started, base = node
    path = started.home / "prometheus.yml"
    said = [line for line in started.output().splitlines() if "Prometheus scrape" in line]
    assert said
    assert said[0].endswith("prometheus.yml")
    if not Path(PROMTOOL).exists():
        missing("promtool")
    check = subprocess.run(
        [PROMTOOL, "check", "config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    text = path.read_text()
    for offset in range(5):
        assert f"127.0.0.1:{base + offset}" in text


def test_prometheus_finds_every_target_up(node: tuple[Node, int], tmp_path: Path) -> None:
    started, base = node
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    prometheus = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={started.home / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + TARGETS_UP_WITHIN
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                targets = api(port, "/api/v1/targets")["activeTargets"]
            except OSError:
                targets = []
            if len(targets) == 5 and all(t["health"] == "up" for t in targets):
                break
            time.sleep(0.5)
        health = {t["labels"]["service_id"]: (t["health"], t["lastError"]) for t in targets}
        assert len(targets) == 5, health
        assert all(t["health"] == "up" for t in targets), health
        assert {t["labels"]["role"] for t in targets} == ROLES
        assert {t["scrapeUrl"] for t in targets} == {
            f"http://127.0.0.1:{base + i}/metrics" for i in range(5)
        }
        info = api(port, "/api/v1/query?query=gatehouse_build_info")["result"]
        assert {series["metric"]["role"] for series in info} == ROLES
        # The services run from this venv: the request path as compiled as it is here.
        assert {series["metric"]["compiled"] for series in info} == {str(is_compiled()).lower()}
        using = api(port, "/api/v1/query?query=gatehouse_internal_endpoint_in_use")["result"]
        links = {(s["metric"]["service_id"], s["metric"]["service"]) for s in using}
        assert ("ap1", "policy") in links
        assert ("ps1", "authentication") in links
    finally:
        prometheus.terminate()
        prometheus.wait(10)
        log.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def value(text: str, line_start: str) -> float:
    lines = [line for line in text.splitlines() if line.startswith(line_start)]
    assert len(lines) == 1, (line_start, text)
    return float(lines[0].rsplit(" ", 1)[1])


def test_a_decision_is_counted_by_the_access_point_and_the_policy_service(
    node: tuple[Node, int],
) -> None:
    started, base = node
    ap_metrics, policy_metrics = base + 1, base + 2
    ap_line = 'gatehouse_access_point_decisions_total{outcome="authenticate"}'
    ps_line = 'gatehouse_policy_decisions_total{outcome="authenticate"}'
    before_ap = scrape(ap_metrics)
    before_ps = scrape(policy_metrics)
    ap0 = value(before_ap, ap_line) if ap_line in before_ap else 0.0
    ps0 = value(before_ps, ps_line) if ps_line in before_ps else 0.0
    request = urllib.request.Request(f"http://127.0.0.1:{started.port}/secure/")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(request, timeout=5)
    answer.value.close()
    assert answer.value.code == 303
    assert value(scrape(ap_metrics), ap_line) == ap0 + 1
    assert value(scrape(policy_metrics), ps_line) == ps0 + 1
    routes = scrape(policy_metrics)
    assert 'gatehouse_http_requests_total{method="POST",route="/internal/v1/decide"' in routes


def test_each_service_shows_its_own_state(node: tuple[Node, int]) -> None:
    _, base = node
    admin, access_point, policy, authentication, distribution = (
        scrape(base + offset) for offset in range(5)
    )
    assert value(admin, "gatehouse_admin_published_version") >= 1
    running = 'gatehouse_admin_service_config_version{role="access_point",service_id="ap1"}'
    assert value(admin, running) >= 1
    assert 'gatehouse_certificate_expiry_timestamp_seconds{certificate="ca"}' in admin
    for text in (access_point, policy, authentication, distribution):
        assert value(text, "gatehouse_config_version") >= 1  # published by Admin
        assert value(text, "gatehouse_config_acknowledged_timestamp_seconds") > 0
        assert 'gatehouse_certificate_expiry_timestamp_seconds{certificate="internal"}' in text
    assert 'service="authentication"' in policy
    assert 'service="distribution"' in authentication
    assert 'gatehouse_distribution_outbox_messages{status="pending"}' in distribution
    assert 'gatehouse_database_pool_size{database="outbox"}' in distribution

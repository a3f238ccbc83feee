"""The generated configuration in front of two real Access Points (``gatehouse access-point``)
and the demo backend: the health check passes, forwarding fields arrive as the load balancer
set them, and an AP that is stopped drains out of the rotation without a failed request."""

from __future__ import annotations

import http.client
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.cluster.haproxy import access_point_states, haproxy_config
from gatehouse.cluster.topology import Topology
from gatehouse.config.loader import validate
from tests.cluster.support import HAProxy, topology_data, wait_checked
from tests.conftest import StartAP
from tests.support.processes import Service, free_port


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if response.status == 200 else body
    except (OSError, http.client.HTTPException) as exc:
        return 0, str(exc)
    finally:
        conn.close()


@pytest.fixture
def haproxy() -> Iterator[list[HAProxy]]:
    """The HAProxy processes a test started, stopped after it."""
    started: list[HAProxy] = []
    yield started
    for item in started:
        item.stop()


def test_real_access_points_behind_haproxy(
    haproxy_bin: str,
    haproxy: list[HAProxy],
    short_dir: Path,
    tmp_path: Path,
    demo_backend: Service,
    start_ap: StartAP,
) -> None:
    resources = [{"id": "demo", "backends": [demo_backend.url], "public": True}]
    settings = {"trusted_proxies": ["127.0.0.1/32"], "drain_timeout": "2s"}
    aps = [start_ap(resources, {**settings, "id": name}, name=name) for name in ("ap1", "ap2")]
    lb_port = free_port()
    topology = validate(
        Topology,
        topology_data(
            (aps[0].port, aps[1].port),
            f"127.0.0.1:{lb_port}",
            health_check={"interval": "200ms", "timeout": "200ms", "fall": 2, "rise": 2},
        ),
    )
    socket_path = short_dir / "lb.sock"
    config = haproxy_config(topology, stats_socket=socket_path)
    haproxy.append(HAProxy(haproxy_bin, config, tmp_path, lb_port, socket_path))
    wait_checked(socket_path, {"ap1": "L7OK", "ap2": "L7OK"})

    status, echo = get(lb_port, "/whoami", {"X-Forwarded-For": "203.0.113.9"})
    assert status == 200
    headers = {name.lower(): value for name, value in echo["headers"]}
    # HAProxy replaced the client's claim; the AP trusted HAProxy and added its own peer.
    assert headers["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"

    aps[0].signal(signal.SIGTERM)  # drains: health 503, then stops accepting
    replies = []
    while access_point_states(socket_path)["ap1"] != "DOWN":
        replies.append(get(lb_port, f"/drain/{len(replies)}"))
        assert len(replies) < 5000, "ap1 was never marked down"
    replies += [get(lb_port, f"/after/{i}") for i in range(10)]
    failed = [reply for reply in replies if reply[0] != 200]
    assert failed == [], f"{len(failed)} of {len(replies)} requests failed"
    assert aps[0].proc.wait(10) == 0

"""A real HAProxy, configured by ``haproxy_config``, in front of two stand-in Access Points.

The stand-ins are separate processes (tests/cluster/standin.py) killed with SIGKILL, as a
crash would. Health checks run every 200 ms so that an AP is marked down within a second.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatehouse.cluster.haproxy import access_point_states, haproxy_config
from gatehouse.cluster.topology import Topology
from gatehouse.config.loader import validate
from tests.cluster.standin import StandIn
from tests.cluster.support import (
    HAProxy,
    backend_counter,
    topology_data,
    wait_checked,
    wait_states,
)
from tests.support.processes import free_port

FAST_CHECKS = {"interval": "200ms", "timeout": "200ms", "fall": 2, "rise": 2}


@dataclass
class Reply:
    status: int  # 0: the request failed (connection error, timeout)
    served_by: str
    body: str


def send(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> Reply:
    """One request on a new connection to the load balancer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        body = b"payload" if method in ("POST", "PUT") else None
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
        return Reply(response.status, response.getheader("X-Served-By") or "", text)
    except (OSError, http.client.HTTPException):
        return Reply(0, "", "")
    finally:
        conn.close()


@dataclass
class Cluster:
    lb_port: int
    stats_socket: Path
    haproxy: HAProxy
    aps: dict[str, StandIn]

    def states(self) -> dict[str, str]:
        return access_point_states(self.stats_socket)


StartCluster = Callable[..., Cluster]


@pytest.fixture
def start_cluster(haproxy_bin: str, short_dir: Path, tmp_path: Path) -> Iterator[StartCluster]:
    """Factory: two stand-in APs (those in ``drop`` drop every request) and HAProxy with the
    configuration generated for them."""
    standins: list[StandIn] = []
    balancers: list[HAProxy] = []

    def start(
        drop: tuple[str, ...] = (),
        health_check: dict[str, Any] | None = None,
    ) -> Cluster:
        ports = (free_port(), free_port())
        lb_port = free_port()
        aps = {
            name: StandIn(name, port, tmp_path / f"{name}.log", drop=name in drop)
            for name, port in zip(("ap1", "ap2"), ports, strict=True)
        }
        standins.extend(standin.start() for standin in aps.values())
        topology = validate(
            Topology,
            topology_data(
                ports,
                f"127.0.0.1:{lb_port}",
                health_check=health_check or FAST_CHECKS,
                timeouts={"connect": "500ms", "server": "3s"},
            ),
        )
        socket_path = short_dir / "lb.sock"
        config = haproxy_config(topology, stats_socket=socket_path)
        haproxy = HAProxy(haproxy_bin, config, tmp_path, lb_port, socket_path)
        balancers.append(haproxy)
        return Cluster(lb_port, socket_path, haproxy, aps)

    yield start
    for haproxy in balancers:
        haproxy.stop()
    for standin in standins:
        standin.kill()


def test_gets_survive_a_killed_access_point_which_comes_back(start_cluster: StartCluster) -> None:
    cluster = start_cluster()
    wait_checked(cluster.stats_socket, {"ap1": "L7OK", "ap2": "L7OK"})
    before = [send(cluster.lb_port, "GET", f"/before/{i}") for i in range(20)]
    assert {r.status for r in before} == {200}
    assert {r.served_by for r in before} == {"ap1", "ap2"}  # round robin, no stickiness

    cluster.aps["ap1"].kill()
    during: list[Reply] = []
    while cluster.states()["ap1"] != "DOWN":
        during.append(send(cluster.lb_port, "GET", f"/during/{len(during)}"))
        assert len(during) < 5000, "ap1 was never marked down"
    after = [send(cluster.lb_port, "GET", f"/after/{i}") for i in range(20)]

    failed = [r for r in during + after if r.status != 200]
    assert failed == [], f"{len(failed)} of {len(during) + len(after)} GETs failed"
    assert len(during) >= 10, "the kill window was too short to test anything"
    assert {r.served_by for r in during + after} == {"ap2"}
    # Requests were sent to the dead AP while it still counted as up, and went elsewhere.
    assert backend_counter(cluster.stats_socket, "wredis") > 0
    assert "ap1 is DOWN" in cluster.haproxy.log()

    cluster.aps["ap1"].start()
    wait_states(cluster.stats_socket, {"ap1": "UP", "ap2": "UP"})
    back = [send(cluster.lb_port, "GET", f"/back/{i}") for i in range(20)]
    assert {r.status for r in back} == {200}
    assert {r.served_by for r in back} == {"ap1", "ap2"}


def test_only_idempotent_requests_are_sent_twice(start_cluster: StartCluster) -> None:
    """ap1 passes its health checks but drops every request once it has read it."""
    cluster = start_cluster(drop=("ap1",))
    wait_checked(cluster.stats_socket, {"ap1": "L7OK", "ap2": "L7OK"})
    ap1, ap2 = cluster.aps["ap1"], cluster.aps["ap2"]

    for method in ("GET", "PUT", "DELETE"):
        replies = [send(cluster.lb_port, method, f"/{method}/{i}") for i in range(10)]
        assert {r.status for r in replies} == {200}, method
        assert {r.served_by for r in replies} == {"ap2"}
        assert sorted(ap2.received()) == sorted(f"{method} /{method}/{i}" for i in range(10))
        ap2.log.write_text("")
    # Those GETs, PUTs and DELETEs reached ap1 first: they were retried after being sent.
    assert {line.split()[0] for line in ap1.received()} == {"GET", "PUT", "DELETE"}
    ap1.log.write_text("")

    posts = {i: send(cluster.lb_port, "POST", f"/post/{i}") for i in range(10)}
    failed = {i for i, r in posts.items() if r.status != 200}
    assert {posts[i].status for i in failed} == {502}
    assert 0 < len(failed) < 10
    # Every POST reached exactly one AP, once: a failed one is not replayed on ap2.
    assert sorted(ap1.received()) == sorted(f"POST /post/{i}" for i in failed)
    assert sorted(ap2.received()) == sorted(f"POST /post/{i}" for i in posts if i not in failed)


def test_a_post_is_retried_when_the_connection_is_refused(start_cluster: StartCluster) -> None:
    """A refused connection sent nothing, so any request may be retried on another AP — until
    the health checks (three failed checks a second apart) mark the dead AP down."""
    cluster = start_cluster(health_check={"interval": "1s", "timeout": "200ms", "fall": 3})
    wait_checked(cluster.stats_socket, {"ap1": "L7OK", "ap2": "L7OK"})
    # No request went through yet, so HAProxy holds no idle connection to ap1 that a POST
    # could be sent on: after the kill, each attempt on ap1 is a refused connection.
    cluster.aps["ap1"].kill()
    posts = [send(cluster.lb_port, "POST", f"/post/{i}") for i in range(20)]
    still_counted_up = cluster.states()["ap1"].startswith("UP")
    assert {r.status for r in posts} == {200}
    assert sorted(cluster.aps["ap2"].received()) == sorted(f"POST /post/{i}" for i in range(20))
    assert still_counted_up, "ap1 was marked down before the requests: nothing was retried"
    assert backend_counter(cluster.stats_socket, "wredis") > 0


def test_the_load_balancer_replaces_forwarding_fields(start_cluster: StartCluster) -> None:
    cluster = start_cluster()
    wait_checked(cluster.stats_socket, {"ap1": "L7OK", "ap2": "L7OK"})
    forged = {
        "Host": "gate.example",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "Forwarded": "for=203.0.113.9",
        "X-Real-IP": "203.0.113.9",
    }
    reply = send(cluster.lb_port, "GET", "/headers", forged)
    assert reply.status == 200
    lines = reply.body.lower().splitlines()
    assert "x-forwarded-for: 127.0.0.1" in lines
    assert "x-forwarded-proto: http" in lines
    assert "x-forwarded-host: gate.example" in lines
    assert not [line for line in lines if "203.0.113.9" in line or "evil" in line]

"""The topology model: default orders, and every problem reported with its field path."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse.cluster.topology import Topology, load_topology, rotated
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError
from tests.cluster.support import PG_URL as PG
from tests.cluster.support import topology_data, with_distribution

Data = dict[str, Any]


def problems(data: Data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(Topology, data)
    return [f"{path}: {message}" for path, message in info.value.problems]


def test_without_orders_aps_and_policy_services_cross() -> None:
    topology = validate(Topology, topology_data())
    assert [topology.policy_order(ap) for ap in topology.access_points] == [
        ["ps1", "ps2"],
        ["ps2", "ps1"],
    ]
    assert [topology.authentication_order(ps) for ps in topology.policy_services] == [
        ["auth1", "auth2"],
        ["auth2", "auth1"],
    ]


def test_given_orders_are_kept() -> None:
    data = topology_data()
    data["access_points"][0]["policy_services"] = ["ps2"]
    data["policy_services"][0]["authentication"] = ["auth2", "auth1"]
    topology = validate(Topology, data)
    assert topology.policy_order(topology.access_points[0]) == ["ps2"]
    assert topology.policy_order(topology.access_points[1]) == ["ps2", "ps1"]
    assert topology.authentication_order(topology.policy_services[0]) == ["auth2", "auth1"]


def test_default_orders_rotate_with_more_services() -> None:
    data = topology_data()
    data["nodes"] += [{"name": "dmz3", "zone": "dmz"}, {"name": "int3", "zone": "internal"}]
    data["access_points"].append({"id": "ap3", "node": "dmz3", "listen": "127.0.0.1:8083"})
    data["policy_services"].append({"id": "ps3", "node": "int3", "listen": "127.0.0.1:8103"})
    topology = validate(Topology, data)
    assert [topology.policy_order(ap) for ap in topology.access_points] == [
        ["ps1", "ps2", "ps3"],
        ["ps2", "ps3", "ps1"],
        ["ps3", "ps1", "ps2"],
    ]
    # ps3's node runs no Authentication service: it takes them rotated by its position.
    assert topology.authentication_order(topology.policy_services[2]) == ["auth1", "auth2"]


def test_authentication_services_prefer_the_distribution_service_on_their_node() -> None:
    data = with_distribution(topology_data())
    topology = validate(Topology, data)
    orders = [topology.distribution_order(a) for a in topology.authentication_services]
    assert orders == [["dist1", "dist2"], ["dist2", "dist1"]]
    data["authentication_services"][1]["distribution"] = ["dist1"]
    topology = validate(Topology, data)
    assert topology.distribution_order(topology.authentication_services[1]) == ["dist1"]
    roles = [(p.role, p.service.id) for p in topology.placements()][-2:]
    assert roles == [("distribution", "dist1"), ("distribution", "dist2")]


@pytest.mark.parametrize(
    ("items", "by", "expected"),
    [
        ([], 3, []),
        (["a"], 5, ["a"]),
        (["a", "b", "c"], 1, ["b", "c", "a"]),
        (["a", "b"], 2, ["a", "b"]),
    ],
)
def test_rotated(items: list[str], by: int, expected: list[str]) -> None:
    assert rotated(items, by) == expected


def _set(path: str, value: Any) -> Callable[[Data], None]:
    """A change to the valid topology: set the value at a dotted path (``-`` deletes)."""

    def change(data: Data) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        key: Any = int(last) if last.isdigit() else last
        if value == "-":
            del target[key]
        else:
            target[key] = value

    return change


def _dist(change: Callable[[Data], None]) -> Callable[[Data], None]:
    """``change`` on the topology with two Distribution services."""

    def changed(data: Data) -> None:
        with_distribution(data)
        change(data)

    return changed


SQLITE = "sqlite+aiosqlite:////var/lib/gatehouse/gatehouse.db"
INVALID = {
    "one distribution service": (
        _dist(_set("distribution_services.1", "-")),
        "distribution_services: an HA topology needs at least two Distribution services on "
        "two internal nodes (or none)",
    ),
    "distribution services on one node": (
        _dist(_set("distribution_services.1.node", "int1")),
        "distribution_services: an HA topology needs at least two Distribution services on "
        "two internal nodes (or none)",
    ),
    "distribution in the DMZ": (
        _dist(_set("distribution_services.0.node", "dmz1")),
        "distribution_services[0].node: 'dmz1' is a DMZ node; Distribution services run on "
        "internal nodes",
    ),
    "a policy service as distribution": (
        _dist(_set("authentication_services.0.distribution", ["dist2", "ps1"])),
        "authentication_services[0].distribution[1]: 'ps1' is a Policy service, "
        "not a Distribution service",
    ),
    "distribution services without an outbox": (
        _dist(_set("databases.outbox_db", "-")),
        "databases.outbox_db: the Distribution services share one outbox: set outbox_db (a "
        "PostgreSQL URL)",
    ),
    "sqlite outbox": (
        _dist(_set("databases.outbox_db", SQLITE)),
        "databases.outbox_db: an HA topology needs PostgreSQL: SQLite lives on one node",
    ),
    "local and an outbox URL": (
        _dist(
            _set(
                "databases",
                {"local": {"primary_port": 55432, "standby_port": 55433}, "outbox_db": PG},
            )
        ),
        "databases.outbox_db: either local or PostgreSQL URLs, not both: the local databases "
        "hold users and sessions",
    ),
    "mail server on the backend's address": (
        _dist(_set("demo_backend.smtp", "127.0.0.1:9000")),
        "demo_backend.smtp: same address as the demo backend (127.0.0.1:9000)",
    ),
    "distribution on a policy service's address": (
        _dist(_set("distribution_services.1.listen", "127.0.0.1:8102")),
        "distribution_services[1].listen: port 8102 is taken on node int2 by ps2",
    ),
    "unknown policy service": (
        _set("access_points.1.policy_services", ["ps9"]),
        "access_points[1].policy_services[0]: no policy service 'ps9'",
    ),
    "wrong role in order": (
        _set("access_points.0.policy_services", ["ps1", "auth1"]),
        "access_points[0].policy_services[1]: 'auth1' is an Authentication service, "
        "not a Policy service",
    ),
    "listed twice": (
        _set("policy_services.1.authentication", ["auth2", "auth2"]),
        "policy_services[1].authentication[1]: 'auth2' is listed twice",
    ),
    "unknown authentication service": (
        _set("policy_services.0.authentication", ["auth7"]),
        "policy_services[0].authentication[0]: no authentication service 'auth7'",
    ),
    "empty order": (
        _set("access_points.0.policy_services", []),
        "access_points[0].policy_services: empty: list Policy services, preferred first, or "
        "leave it out for the default order",
    ),
    "sqlite user db": (
        _set("databases.user_db", SQLITE),
        "databases.user_db: an HA topology needs PostgreSQL: SQLite lives on one node",
    ),
    "sqlite session db": (
        _set("databases.session_db", "sqlite+aiosqlite:///sessions.db"),
        "databases.session_db: an HA topology needs PostgreSQL: SQLite lives on one node",
    ),
    "other database": (
        _set("databases.user_db", "mysql://db1/gatehouse"),
        "databases.user_db: unsupported database URL scheme 'mysql' "
        "(use sqlite+aiosqlite:// or postgresql+asyncpg://)",
    ),
    "no database": (
        _set("databases", {}),
        "databases: set user_db (PostgreSQL URL) or local (PostgreSQL created by the cluster "
        "command)",
    ),
    "local and URL": (
        _set("databases.local", {"primary_port": 55432, "standby_port": 55433}),
        "databases.user_db: either local or PostgreSQL URLs, not both: the local databases "
        "hold users and sessions",
    ),
    "local port out of range": (
        _set("databases", {"local": {"primary_port": 0, "standby_port": 55433}}),
        "databases.local.primary_port: must be at least 1, got 0",
    ),
    "admin in the DMZ": (
        _set("administration.node", "dmz1"),
        "administration.node: 'dmz1' is a DMZ node; Administration services run on internal nodes",
    ),
    "no admin": (_set("administration", "-"), "administration: required field missing"),
    "AP on an internal node": (
        _set("access_points.0.node", "int1"),
        "access_points[0].node: 'int1' is an internal node; Access Points run on DMZ nodes",
    ),
    "PS in the DMZ": (
        _set("policy_services.1.node", "dmz2"),
        "policy_services[1].node: 'dmz2' is a DMZ node; Policy services run on internal nodes",
    ),
    "unknown node": (
        _set("authentication_services.1.node", "int9"),
        "authentication_services[1].node: no node 'int9'",
    ),
    "auth2 beside auth1": (
        _set("authentication_services.1.node", "int1"),
        "nodes: an HA topology needs at least two internal nodes each running a Policy and an "
        "Authentication service (found: int1)",
    ),
    "one AP": (
        _set("access_points", [{"id": "ap1", "node": "dmz1", "listen": "127.0.0.1:8081"}]),
        "access_points: an HA topology needs at least two Access Points on two DMZ nodes "
        "(the load balancer fails over between them)",
    ),
    "two APs on one node": (
        _set("access_points.1.node", "dmz1"),
        "access_points: an HA topology needs at least two Access Points on two DMZ nodes "
        "(the load balancer fails over between them)",
    ),
    "no PS at all": (
        _set("policy_services", []),
        "policy_services: must have at least 1 item, got 0",
    ),
    "duplicate service id": (
        _set("authentication_services.1.id", "ps2"),
        "authentication_services[1].id: duplicate service id 'ps2' (a Policy service)",
    ),
    "duplicate node": (_set("nodes.1.name", "dmz1"), "nodes[1].name: duplicate node 'dmz1'"),
    "same address": (
        _set("policy_services.1.listen", "127.0.0.1:8101"),
        "policy_services[1].listen: same address as ps1 (127.0.0.1:8101)",
    ),
    "load balancer on an AP's address": (
        _set("load_balancer.listen", "127.0.0.1:8081"),
        "load_balancer.listen: same address as ap1 (127.0.0.1:8081)",
    ),
    "stats on the load balancer's address": (
        _set("load_balancer.stats", "127.0.0.1:8080"),
        "load_balancer.stats: same address as the load balancer (127.0.0.1:8080)",
    ),
    "status listener on its AP's port": (
        _set("access_points.0.status_listen", "127.0.0.1:8081"),
        "access_points[0].status_listen: port 8081 is taken on node dmz1 by ap1",
    ),
    "status listener on another service's address": (
        _set("access_points.1.status_listen", "127.0.0.1:8101"),
        "access_points[1].status_listen: same address as ps1 (127.0.0.1:8101)",
    ),
    "wildcard without node address": (
        _set("access_points.0.listen", "0.0.0.0:8081"),
        "access_points[0].listen: listens on every address: set nodes[0].address so the other "
        "services can reach it",
    ),
    "loopback on a node with an address": (
        _set("nodes.2.address", "10.0.1.11"),
        "administration.listen: listens on loopback only: unreachable at int1's 10.0.1.11",
    ),
    "bad listen": (
        _set("access_points.0.listen", "8081"),
        "access_points[0].listen: not HOST:PORT: '8081'",
    ),
    "bad zone": (
        _set("nodes.0.zone", "edge"),
        "nodes[0].zone: must be one of: dmz, internal; got 'edge'",
    ),
    "bad node address": (
        _set("nodes.0.address", "not a host"),
        "nodes[0].address: not a host name or IP address: 'not a host'",
    ),
    "unknown field": (_set("load_balancer.colour", "blue"), "load_balancer.colour: unknown field"),
    "unknown retry event": (
        _set("load_balancer.retry_on", ["empty-response", 418]),
        "load_balancer.retry_on[1]: must be one of: empty-response, junk-response, "
        "response-timeout, 0rtt-rejected, 401, 403, 404, 408, 425, 500, 501, 502, 503, 504; "
        "got '418'",
    ),
    "zero health check interval": (
        _set("load_balancer.health_check", {"interval": "0s"}),
        "load_balancer.health_check.interval: must be greater than 0, got 0",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_problems_name_the_field_path(case: str) -> None:
    change, expected = INVALID[case]
    data = copy.deepcopy(topology_data())
    change(data)
    assert expected in problems(data)


def test_every_problem_is_reported_at_once() -> None:
    data = topology_data()
    data["access_points"][1]["policy_services"] = ["ps9"]
    data["databases"]["session_db"] = SQLITE
    data["administration"]["node"] = "dmz2"
    assert problems(data) == [
        "databases.session_db: an HA topology needs PostgreSQL: SQLite lives on one node"
    ]  # field errors first: cross-field checks need valid fields
    del data["databases"]["session_db"]
    assert problems(data) == [
        "administration.node: 'dmz2' is a DMZ node; Administration services run on internal nodes",
        "access_points[1].policy_services[0]: no policy service 'ps9'",
    ]


def test_nodes_with_addresses_give_endpoints_and_share_ports() -> None:
    data = topology_data()
    addresses = ["10.0.0.11", "10.0.0.12", "10.0.1.11", "10.0.1.12"]
    for node, address in zip(data["nodes"], addresses, strict=True):
        node["address"] = address
    for section in ("access_points", "policy_services", "authentication_services"):
        for entry in data[section]:
            entry["listen"] = "0.0.0.0:" + entry["listen"].rsplit(":", 1)[1][:-1] + "0"
    data["administration"]["listen"] = "0.0.0.0:8001"
    data["load_balancer"]["listen"] = "0.0.0.0:443"
    topology = validate(Topology, data)
    assert [topology.endpoint(ap) for ap in topology.access_points] == [
        "http://10.0.0.11:8080",
        "http://10.0.0.12:8080",
    ]
    assert topology.endpoint(topology.policy_services[1]) == "http://10.0.1.12:8100"
    # The same port twice on one node is refused, whatever the listen hosts.
    data["authentication_services"][0]["listen"] = "10.0.1.11:8100"
    assert problems(data) == [
        "authentication_services[0].listen: port 8100 is taken on node int1 by ps1"
    ]


def test_the_status_listener_is_read_at_the_node_address() -> None:
    data = topology_data()
    data["nodes"][0]["address"] = "10.0.0.11"
    data["access_points"][0]["listen"] = "0.0.0.0:8081"
    data["access_points"][0]["status_listen"] = "0.0.0.0:8091"
    data["access_points"][1]["status_listen"] = "127.0.0.1:8092"
    topology = validate(Topology, data)
    ap1, ap2 = topology.access_points
    assert topology.status_address(ap1) == ("10.0.0.11", 8091)
    assert topology.status_address(ap2) == ("127.0.0.1", 8092)
    plain = validate(Topology, topology_data())
    assert plain.status_address(plain.access_points[0]) is None


def test_local_databases_are_one_multi_host_url() -> None:
    data = topology_data()
    data["databases"] = {"local": {"primary_port": 55432, "standby_port": 55433}}
    topology = validate(Topology, data)
    assert topology.databases.urls() == (
        "postgresql+asyncpg://gatehouse@/gatehouse?host=127.0.0.1,127.0.0.1&port=55432,55433"
        "&target_session_attrs=read-write",
        None,
    )
    data["databases"]["local"]["standby_port"] = 8101
    assert problems(data) == ["databases.local.standby_port: same address as ps1 (127.0.0.1:8101)"]


def test_load_topology_names_the_file(tmp_path: Path) -> None:
    data = topology_data()
    data["databases"]["user_db"] = SQLITE
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_topology(path)
    assert str(info.value) == (
        f"{path}: databases.user_db: an HA topology needs PostgreSQL: SQLite lives on one node"
    )
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_topology(tmp_path / "missing.yaml")


def test_load_balancer_trust_defaults_to_its_listen_address() -> None:
    topology = validate(Topology, topology_data())
    assert [str(n) for n in topology.load_balancer.trusted_by_access_points()] == ["127.0.0.1/32"]
    data = topology_data(lb_listen="0.0.0.0:443")
    assert validate(Topology, data).load_balancer.trusted_by_access_points() == []
    data["load_balancer"]["source_addresses"] = ["10.0.0.5", "10.0.9.0/24"]
    trusted = validate(Topology, data).load_balancer.trusted_by_access_points()
    assert [str(n) for n in trusted] == ["10.0.0.5/32", "10.0.9.0/24"]

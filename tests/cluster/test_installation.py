"""The topology as the installation configuration Admin accepts, and each service's view."""

from __future__ import annotations

from typing import Any

from gatehouse.administration.document import parse_config, render_yaml
from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.views import view_for
from gatehouse.cluster.installation import installation_config, installation_document
from gatehouse.cluster.topology import Topology
from gatehouse.config.loader import validate
from tests.cluster.support import PG_URL, topology_data, with_distribution


def config_of(data: dict[str, Any]) -> InstallationConfig:
    """Through YAML text, as ``gatehouse config apply`` hands it to Admin."""
    return parse_config(render_yaml(installation_document(validate(Topology, data))))


def test_admin_accepts_it_and_views_follow_the_topology_order() -> None:
    data = topology_data()
    data["access_points"][1]["policy_services"] = ["ps1"]
    config = config_of(data)
    assert [(s.id, s.role, s.endpoint, s.node) for s in config.services] == [
        ("ap1", "access_point", "http://127.0.0.1:8081", "dmz1"),
        ("ap2", "access_point", "http://127.0.0.1:8082", "dmz2"),
        ("ps1", "policy", "http://127.0.0.1:8101", "int1"),
        ("ps2", "policy", "http://127.0.0.1:8102", "int2"),
        ("auth1", "authentication", "http://127.0.0.1:8201", "int1"),
        ("auth2", "authentication", "http://127.0.0.1:8202", "int2"),
    ]
    ap1, ap2 = view_for(config, "ap1"), view_for(config, "ap2")
    assert ap1["access_point"]["policy_services"] == [
        "http://127.0.0.1:8101",
        "http://127.0.0.1:8102",
    ]
    assert ap2["access_point"]["policy_services"] == ["http://127.0.0.1:8101"]
    assert ap1["access_point"]["listen"] == "127.0.0.1:8081"
    ps2 = view_for(config, "ps2")["policy"]
    assert ps2["authentication"] == ["http://127.0.0.1:8202", "http://127.0.0.1:8201"]
    assert ps2["listen"] == "127.0.0.1:8102"


def test_a_status_listener_reaches_the_access_point_view() -> None:
    data = topology_data()
    data["access_points"][0]["status_listen"] = "127.0.0.1:8091"
    config = config_of(data)
    assert view_for(config, "ap1")["access_point"]["status_listen"] == "127.0.0.1:8091"
    assert view_for(config, "ap2")["access_point"]["status_listen"] is None


def test_the_crossing_is_the_default() -> None:
    config = installation_config(validate(Topology, topology_data()))
    orders = [view_for(config, ap)["access_point"]["policy_services"] for ap in ("ap1", "ap2")]
    assert orders == [
        ["http://127.0.0.1:8101", "http://127.0.0.1:8102"],
        ["http://127.0.0.1:8102", "http://127.0.0.1:8101"],
    ]


def test_demo_resources_and_rules() -> None:
    config = config_of(topology_data())
    assert [(r.id, r.path_prefix, r.backends) for r in config.resources] == [
        ("demo", "/", ["http://127.0.0.1:9000"]),
        ("demo-public", "/public", ["http://127.0.0.1:9000"]),
    ]
    assert config.public_resources() == frozenset({"demo-public"})
    resources = view_for(config, "ap1")["resources"]
    assert [(r["id"], r["public"]) for r in resources] == [
        ("demo", False),
        ("demo-public", True),
    ]
    policy = view_for(config, "ps1")
    assert policy["resources"] == {"demo": "authenticated", "demo-public": "public"}


def test_without_demo_backend_there_are_no_resources() -> None:
    data = topology_data()
    del data["demo_backend"]
    config = config_of(data)
    assert config.resources == []
    assert config.resource_rules == {}


def test_databases_reach_policy_and_authentication_but_not_access_points() -> None:
    data = topology_data()
    data["databases"]["session_db"] = PG_URL + "&application_name=sessions"
    config = config_of(data)
    for ps in ("ps1", "ps2"):
        assert view_for(config, ps)["policy"]["session_db"] == PG_URL + "&application_name=sessions"
    for auth in ("auth1", "auth2"):
        assert view_for(config, auth)["authentication"]["user_db"] == PG_URL
    assert "postgresql" not in str(view_for(config, "ap1"))

    data["databases"] = {"local": {"primary_port": 55432, "standby_port": 55433}}
    local = (
        "postgresql+asyncpg://gatehouse@/gatehouse?host=127.0.0.1,127.0.0.1&port=55432,55433"
        "&target_session_attrs=read-write"
    )
    config = config_of(data)
    assert view_for(config, "ps1")["policy"]["session_db"] == local
    assert view_for(config, "auth2")["authentication"]["user_db"] == local


def test_trust_between_load_balancer_access_points_and_policy_services() -> None:
    config = config_of(topology_data())
    # The APs keep the client address the load balancer forwards...
    assert view_for(config, "ap1")["access_point"]["trusted_proxies"] == ["127.0.0.1/32"]
    # ...and the Policy services the one the APs forward when they relay the login portal.
    assert view_for(config, "ps1")["policy"]["trusted_proxies"] == ["127.0.0.1/32"]

    data = topology_data(lb_listen="0.0.0.0:443")
    names = ["gw1.dmz.example", "10.0.0.12", "10.0.1.11", "10.0.1.12"]
    for node, address in zip(data["nodes"], names, strict=True):
        node["address"] = address
    for section in ("access_points", "policy_services", "authentication_services"):
        for entry in data[section]:
            entry["listen"] = entry["listen"].replace("127.0.0.1", "0.0.0.0")
    data["administration"]["listen"] = "0.0.0.0:8001"
    config = config_of(data)
    assert config.endpoint("ap1") == "http://gw1.dmz.example:8081"
    # A wildcard load balancer address says nothing about where it connects from.
    assert view_for(config, "ap1")["access_point"]["trusted_proxies"] == []
    # An AP known by name only: the Policy services keep their default (none: over mutual
    # TLS an AP's forwarded fields are believed because of its certificate).
    assert view_for(config, "ps1")["policy"]["trusted_proxies"] == []


def test_distribution_services_their_views_and_the_authentication_services_order() -> None:
    data = with_distribution(topology_data())
    data["databases"]["outbox_db"] = PG_URL + "&application_name=outbox"
    config = config_of(data)
    assert [(s.id, s.role, s.endpoint) for s in config.services][-2:] == [
        ("dist1", "distribution", "http://127.0.0.1:8301"),
        ("dist2", "distribution", "http://127.0.0.1:8302"),
    ]
    # Each Authentication service prefers the Distribution service on its own node.
    assert view_for(config, "auth1")["authentication"]["distribution"] == [
        "http://127.0.0.1:8301",
        "http://127.0.0.1:8302",
    ]
    assert view_for(config, "auth2")["authentication"]["distribution"] == [
        "http://127.0.0.1:8302",
        "http://127.0.0.1:8301",
    ]
    for dist, listen in (("dist1", "127.0.0.1:8301"), ("dist2", "127.0.0.1:8302")):
        view = view_for(config, dist)["distribution"]
        assert (view["id"], view["listen"]) == (dist, listen)
        assert view["outbox_db"] == PG_URL + "&application_name=outbox"
        # The demo backend's mail server is the channel.
        assert [(c["name"], c["host"], c["port"], c["security"]) for c in view["channels"]] == [
            ("demo-mail", "127.0.0.1", 8025, "none")
        ]
    for other in ("ap1", "ps1", "auth1"):
        assert "demo-mail" not in str(view_for(config, other))
        assert "outbox" not in str(view_for(config, other))


def test_without_distribution_services_nobody_sends_codes() -> None:
    config = config_of(topology_data())
    assert view_for(config, "auth1")["authentication"]["distribution"] == []
    assert config.distribution.channels == []

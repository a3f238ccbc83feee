"""examples/ha-cluster.yaml: the local HA topology that `gatehouse cluster up` starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gatehouse.administration.document import parse_config, render_yaml
from gatehouse.administration.views import view_for
from gatehouse.cluster.haproxy import haproxy_config
from gatehouse.cluster.installation import installation_document
from gatehouse.cluster.topology import load_topology

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ha-cluster.yaml"


def test_the_example_is_the_local_ha_topology() -> None:
    topology = load_topology(EXAMPLE)
    assert [(n.name, n.zone) for n in topology.nodes] == [
        ("dmz1", "dmz"),
        ("dmz2", "dmz"),
        ("int1", "internal"),
        ("int2", "internal"),
    ]
    assert (topology.administration.id, topology.administration.node) == ("admin", "int1")
    assert topology.load_balancer.listen == "127.0.0.1:8080"
    assert topology.databases.local is not None
    assert topology.databases.local.ports() == (55432, 55433)
    placed = [(p.service.id, p.service.node) for p in topology.placements()]
    assert placed == [
        ("admin", "int1"),
        ("ap1", "dmz1"),
        ("ap2", "dmz2"),
        ("ps1", "int1"),
        ("ps2", "int2"),
        ("auth1", "int1"),
        ("auth2", "int2"),
        ("dist1", "int1"),
        ("dist2", "int2"),
    ]
    assert topology.demo_backend is not None
    assert topology.demo_backend.smtp == "127.0.0.1:8025"


def test_its_installation_is_accepted_by_admin() -> None:
    config = parse_config(render_yaml(installation_document(load_topology(EXAMPLE))))
    assert view_for(config, "ap1")["access_point"]["policy_services"] == [
        "http://127.0.0.1:8101",
        "http://127.0.0.1:8102",
    ]
    assert view_for(config, "ap2")["access_point"]["policy_services"] == [
        "http://127.0.0.1:8102",
        "http://127.0.0.1:8101",
    ]
    assert view_for(config, "ps2")["policy"]["authentication"] == [
        "http://127.0.0.1:8202",
        "http://127.0.0.1:8201",
    ]
    assert [r.id for r in config.resources] == ["demo", "demo-public", "demo-secure-email"]
    assert config.resource_rules["demo-secure-email"] == {"auth_methods": ["password", "email_otp"]}
    assert view_for(config, "auth2")["authentication"]["distribution"] == [
        "http://127.0.0.1:8302",
        "http://127.0.0.1:8301",
    ]
    assert [c.name for c in config.distribution.channels] == ["demo-mail"]


def test_its_haproxy_config_is_valid(haproxy_bin: str, tmp_path: Path, short_dir: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(haproxy_config(load_topology(EXAMPLE), stats_socket=short_dir / "lb.sock"))
    result = subprocess.run(
        [haproxy_bin, "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "server ap1 127.0.0.1:8081\n    server ap2 127.0.0.1:8082\n" in path.read_text()

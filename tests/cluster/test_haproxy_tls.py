"""The generated HAProxy configuration in front of two real Access Points that terminate TLS:
pass-through (mode tcp, the client's handshake reaches the AP) and re-encryption (HAProxy
terminates, then opens TLS to each AP and verifies it against the APs' CA)."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatehouse.cluster.haproxy import haproxy_config
from gatehouse.cluster.topology import Topology
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError
from tests.cluster.support import HAProxy, topology_data, wait_checked
from tests.conftest import StartAP
from tests.support.certs import Pair, TestCA, serial_of, serial_of_file
from tests.support.processes import Service, free_port


@pytest.fixture
def haproxy() -> Iterator[list[HAProxy]]:
    started: list[HAProxy] = []
    yield started
    for item in started:
        item.stop()


def https_get(port: int, ca: Path, path: str) -> tuple[int, Any, int]:
    """Status, JSON body and the serial of the certificate the client was shown."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    try:
        conn.request("GET", path, headers={"Host": "gatehouse.test"})
        response = conn.getresponse()
        body = response.read()
        assert conn.sock is not None
        der = conn.sock.getpeercert(True)
        assert der is not None
        return response.status, json.loads(body) if response.status == 200 else body, serial_of(der)
    finally:
        conn.close()


def start_tls_aps(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> tuple[list[Service], list[Pair]]:
    resources = [{"id": "demo", "backends": [demo_backend.url], "public": True}]
    aps, pairs = [], []
    for name in ("ap1", "ap2"):
        pair = ca.issue(name, [name, "127.0.0.1"])
        tls = {"certificates": [{"cert_file": str(pair.cert), "key_file": str(pair.key)}]}
        settings = {"id": name, "trusted_proxies": ["127.0.0.1/32"], "tls": tls}
        aps.append(start_ap(resources, settings, name=name))
        pairs.append(pair)
    return aps, pairs


def tls_topology(aps: list[Service], pairs: list[Pair], lb_port: int, **lb: Any) -> Topology:
    data = topology_data(
        (aps[0].port, aps[1].port),
        f"127.0.0.1:{lb_port}",
        health_check={"interval": "200ms", "timeout": "500ms", "fall": 2, "rise": 2},
        **lb,
    )
    for entry, pair in zip(data["access_points"], pairs, strict=True):
        entry["tls"] = {"certificates": [{"cert_file": str(pair.cert), "key_file": str(pair.key)}]}
    return validate(Topology, data)


def test_passthrough_in_front_of_two_tls_access_points(
    haproxy_bin: str,
    haproxy: list[HAProxy],
    short_dir: Path,
    tmp_path: Path,
    demo_backend: Service,
    start_ap: StartAP,
) -> None:
    ca = TestCA(tmp_path / "pki")
    aps, pairs = start_tls_aps(start_ap, demo_backend, ca)
    lb_port = free_port()
    topology = tls_topology(aps, pairs, lb_port, access_point_tls="passthrough")
    socket_path = short_dir / "lb.sock"
    config = haproxy_config(topology, stats_socket=socket_path)
    assert "mode tcp" in config
    assert "check-ssl verify none" in config
    assert "ssl crt" not in config  # HAProxy holds no key
    haproxy.append(HAProxy(haproxy_bin, config, tmp_path, lb_port, socket_path))
    wait_checked(socket_path, {"ap1": "L7OK", "ap2": "L7OK"})
    served = set()
    for i in range(6):
        status, echo, serial = https_get(lb_port, ca.path, f"/whoami/{i}")
        assert status == 200
        headers = {name.lower(): value for name, value in echo["headers"]}
        assert headers["x-forwarded-proto"] == "https"  # set by the AP: it terminated TLS
        served.add(serial)
    # The clients saw the APs' own certificates, both of them (round robin).
    assert served == {serial_of_file(p.cert) for p in pairs}


def test_reencryption_in_front_of_two_tls_access_points(
    haproxy_bin: str,
    haproxy: list[HAProxy],
    short_dir: Path,
    tmp_path: Path,
    demo_backend: Service,
    start_ap: StartAP,
) -> None:
    ca = TestCA(tmp_path / "pki")
    aps, pairs = start_tls_aps(start_ap, demo_backend, ca)
    edge = ca.issue("edge", ["gatehouse.test"])
    bundle = tmp_path / "pki" / "edge.pem"
    bundle.write_bytes(edge.cert.read_bytes() + edge.key.read_bytes())
    lb_port = free_port()
    topology = tls_topology(
        aps,
        pairs,
        lb_port,
        access_point_tls="reencrypt",
        tls_certificate=str(bundle),
        access_point_ca_file=str(ca.path),
    )
    socket_path = short_dir / "lb.sock"
    config = haproxy_config(topology, stats_socket=socket_path)
    assert f"ssl verify required ca-file {ca.path} sni str(ap1) verifyhost ap1" in config
    haproxy.append(HAProxy(haproxy_bin, config, tmp_path, lb_port, socket_path))
    wait_checked(socket_path, {"ap1": "L7OK", "ap2": "L7OK"})
    for i in range(4):
        status, echo, serial = https_get(lb_port, ca.path, f"/whoami/{i}")
        assert status == 200
        assert serial == serial_of_file(edge.cert)  # HAProxy's certificate faces clients
        headers = {name.lower(): value for name, value in echo["headers"]}
        assert headers["x-forwarded-proto"] == "https"
        assert headers["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"
        # The AP's own hop was TLS too (HAProxy re-encrypted).
        assert headers["forwarded"].endswith("proto=https;host=gatehouse.test")


def test_reencryption_refuses_an_access_point_the_ca_did_not_sign(
    haproxy_bin: str,
    haproxy: list[HAProxy],
    short_dir: Path,
    tmp_path: Path,
    demo_backend: Service,
    start_ap: StartAP,
) -> None:
    ca = TestCA(tmp_path / "pki")
    other = TestCA(tmp_path / "other", "another CA")
    aps, pairs = start_tls_aps(start_ap, demo_backend, other)
    edge = ca.issue("edge", ["gatehouse.test"])
    bundle = tmp_path / "pki" / "edge.pem"
    bundle.write_bytes(edge.cert.read_bytes() + edge.key.read_bytes())
    lb_port = free_port()
    topology = tls_topology(
        aps,
        pairs,
        lb_port,
        access_point_tls="reencrypt",
        tls_certificate=str(bundle),
        access_point_ca_file=str(ca.path),
    )
    socket_path = short_dir / "lb.sock"
    haproxy.append(
        HAProxy(
            haproxy_bin,
            haproxy_config(topology, stats_socket=socket_path),
            tmp_path,
            lb_port,
            socket_path,
        )
    )
    status, _, _ = https_get(lb_port, ca.path, "/whoami")
    assert status == 503  # no AP passed the check: HAProxy would not talk to them


@pytest.mark.parametrize(
    ("lb", "where"),
    [
        (
            {"access_point_tls": "passthrough", "tls_certificate": "/x.pem"},
            "load_balancer.tls_certificate",
        ),
        (
            {"access_point_tls": "reencrypt", "tls_certificate": "/x.pem"},
            "load_balancer.access_point_ca_file",
        ),
        (
            {"access_point_tls": "reencrypt", "access_point_ca_file": "/ca.pem"},
            "load_balancer.tls_certificate",
        ),
    ],
)
def test_topology_tls_settings_are_checked(lb: dict[str, Any], where: str) -> None:
    data = topology_data(**lb)
    for entry in data["access_points"]:
        entry["tls"] = {"certificates": [{"cert_file": "/a.crt", "key_file": "/a.key"}]}
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        validate(Topology, data)


def test_every_access_point_needs_its_certificate_with_access_point_tls() -> None:
    data = topology_data(access_point_tls="passthrough")
    with pytest.raises(ConfigError, match=r"access_points\[0\]\.tls: .*every AP needs"):
        validate(Topology, data)
    data = topology_data()
    data["access_points"][0]["tls"] = {"certificates": [{"cert_file": "/a", "key_file": "/b"}]}
    with pytest.raises(ConfigError, match=r"access_points\[0\]\.tls: set load_balancer"):
        validate(Topology, data)


def test_haproxy_config_refuses_a_local_tls_topology(tmp_path: Path) -> None:
    import subprocess

    import yaml

    from tests.support.processes import GATEHOUSE

    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump({**topology_data(), "local_tls": "reencrypt"}))
    result = subprocess.run(
        [*GATEHOUSE, "haproxy-config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "local_tls: the certificates are made by 'gatehouse cluster up'" in result.stderr
    assert "Traceback" not in result.stderr

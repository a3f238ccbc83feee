"""``gatehouse cluster up`` with TLS end to end (``local_tls``): a local CA and certificates
made in the cluster's home, Access Points that terminate TLS, HAProxy in pass-through or
re-encryption mode in front, and a sign-in over HTTPS whose cookies are ``__Host-``."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.runner import Cluster
from tests.support.cluster import cluster_home, free_topology
from tests.support.gateway import Browser, add_user
from tests.support.postgres import missing, require_bindir
from tests.support.processes import GATEHOUSE

LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
PASSWORD = "correct horse battery"


@pytest.fixture
def home() -> Iterator[Path]:
    with cluster_home("gh-tls-") as path:
        yield path


def issuer_of(host: str, port: int, context: ssl.SSLContext) -> str | None:
    """The common name of the issuer of the certificate a server presents."""
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        issuer = tls.getpeercert()["issuer"]
    return dict(pair[0] for pair in issuer).get("commonName")  # type: ignore[arg-type,misc]


@LINUX_PROC
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["reencrypt", "passthrough"])
def test_cluster_up_with_tls_end_to_end(home: Path, mode: str) -> None:
    if find_haproxy() is None:
        missing("HAProxy is not installed (apt-get install haproxy)")
    require_bindir()
    path = free_topology(home.parent / "topology.yaml")
    data = yaml.safe_load(path.read_text())
    data["local_tls"] = mode
    path.write_text(yaml.safe_dump(data, sort_keys=False))

    up = subprocess.run(
        [
            *GATEHOUSE,
            "cluster",
            "up",
            str(path),
            "--no-fsync",
            "--no-demo-user",
            "--home",
            str(home),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    cluster = Cluster.open(home)
    assert cluster.url.startswith("https://")
    ca = home / "tls" / "ca.pem"
    assert (home / "tls").stat().st_mode & 0o777 == 0o700
    assert (home / "tls" / "ap1.key").stat().st_mode & 0o777 == 0o600
    config = (home / "haproxy.cfg").read_text()
    if mode == "reencrypt":
        assert "ssl verify required ca-file" in config
    else:
        assert "mode tcp" in config

    add_user(home, "alice", PASSWORD)
    parts = urllib.parse.urlsplit(cluster.url)
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context(cafile=str(ca))
    assert issuer_of(host, port, context) == "Gatehouse local cluster CA"
    alice = Browser(host, port, tls=context)
    first = alice.get("/private")
    assert first.status == 303
    assert first.location.startswith("/_gatehouse/login?rd=https")
    signed_in = alice.login("alice", PASSWORD, rd="/private")
    assert signed_in.status == 303, signed_in.body[:300]
    # Each AP terminated TLS itself: the portal made __Host- cookies, and the APs read them.
    assert "__Host-gatehouse_session" in alice.cookies
    assert "secure" in alice.cookie_attributes["__Host-gatehouse_session"].lower()
    for i in range(4):  # both APs (round robin)
        page = alice.get(f"/private/{i}")
        assert page.status == 200, page.body[:300]
        echoed = {k.lower(): v for k, v in page.json()["headers"]}
        assert echoed["x-forwarded-proto"] == "https"
        assert echoed["remote-user"] == "alice"

    shown = subprocess.run(
        [*GATEHOUSE, "cluster", "status", "--json", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    rows = {row["name"]: row for row in json.loads(shown.stdout)["services"]}
    assert [name for name, row in rows.items() if not row["healthy"]] == []
    # The AP view Admin published names the key file; it holds no key.
    view = json.loads((home / "state" / "ap1" / "access-point.json").read_text())
    certificates = view["view"]["access_point"]["tls"]["certificates"]
    assert certificates[0]["key_file"] == str(home / "tls" / "ap1.key")
    assert "PRIVATE KEY" not in json.dumps(view)

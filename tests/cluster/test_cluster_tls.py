"""``gatehouse cluster up`` with TLS end to end (``local_tls``): a local CA and certificates
made in the cluster's home, Access Points that terminate TLS, HAProxy in pass-through or
re-encryption mode in front, and a sign-in over HTTPS whose cookies are ``__Host-``."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.runner import Cluster
from tests.support.cluster import free_topology
from tests.support.gateway import add_user, csrf_token
from tests.support.postgres import missing, require_bindir
from tests.support.processes import GATEHOUSE

LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
PASSWORD = "correct horse battery"


@pytest.fixture
def home() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gh-tls-"))
    path.chmod(0o755)
    try:
        yield path / "home"
    finally:
        if (path / "home" / "topology.yaml").exists():
            Cluster.open(path / "home").down()
        shutil.rmtree(path, ignore_errors=True)


class HTTPSBrowser:
    def __init__(self, url: str, ca: Path) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port or 443
        self.ca = ca
        self.cookies: dict[str, str] = {}
        self.attributes: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes, str | None]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=10, context=ctx)
        try:
            sent = dict(headers or {})
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, body, sent)
            raw = conn.getresponse()
            data = raw.read()
            assert conn.sock is not None
            issuer = dict(x[0] for x in conn.sock.getpeercert()["issuer"]).get("commonName")  # type: ignore[index]
            for cookie in raw.headers.get_all("Set-Cookie") or []:
                pair, _, attributes = cookie.partition(";")
                name, _, value = pair.strip().partition("=")
                self.attributes[name] = attributes.lower()
                if value:
                    self.cookies[name] = value
            return raw.status, {k.lower(): v for k, v in raw.getheaders()}, data, issuer
        finally:
            conn.close()


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
    alice = HTTPSBrowser(cluster.url, ca)
    status, headers, _, issuer = alice.request("GET", "/private")
    assert headers["location"].startswith("/_gatehouse/login?rd=https")
    assert status == 303
    assert issuer == "Gatehouse local cluster CA"
    status, _, page, _ = alice.request("GET", "/_gatehouse/login?rd=%2Fprivate")
    assert status == 200
    form = urllib.parse.urlencode(
        {"username": "alice", "password": PASSWORD, "csrf": csrf_token(page), "rd": "/private"}
    ).encode()
    status, _, body, _ = alice.request(
        "POST", "/_gatehouse/login", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 303, body[:300]
    # Each AP terminated TLS itself: the portal made __Host- cookies, and the APs read them.
    assert "__Host-gatehouse_session" in alice.cookies
    assert "secure" in alice.attributes["__Host-gatehouse_session"]
    for i in range(4):  # both APs (round robin)
        status, _, body, _ = alice.request("GET", f"/private/{i}")
        assert status == 200, body[:300]
        echoed = {k.lower(): v for k, v in json.loads(body)["headers"]}
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

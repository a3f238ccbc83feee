"""Proof: an Access Point that was taken over exposes nothing.

The attacker holds everything ``ap1`` of a running HA cluster has: its state directory (its
certificate and key, the CA it pins, its registration, its signed view), its process's
environment and command line, and its place on the network. Each test is one thing such an
attacker tries; every attempt fails, in its own assertion:

- verify a password (the Authentication service answers the Policy role only), with a
  client address of its choosing;
- read a user record;
- list or revoke a user's sessions (operator and Administration only);
- ask a decision as another Access Point (the AP in a decision is the certificate's);
- fetch another service's view, register as another service, get a certificate for another
  identity, publish configuration (Administration);
- connect to PostgreSQL as any of the installation's roles;
- read a backend as another user where the backend checks identity assertions (a token
  signed with any key but a Policy service's is refused by the backend itself);
- and find secrets on its disk or in its environment: database URLs, private keys but its
  own, password hashes, service secrets, join tokens that still work, session ids at rest.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.runner import Cluster
from gatehouse.policy.assertions import SigningKey, sign
from gatehouse.trust.ca import make_csr, make_key
from gatehouse.trust.identity import ACCESS_POINT, Identity, identity_of
from tests.support.cluster import cluster_home, free_topology
from tests.support.gateway import Browser, add_user, start_gateway
from tests.support.postgres import missing, require_bindir
from tests.support.processes import GATEHOUSE, Service, free_port

PASSWORD = "correct horse battery staple"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]


# --- the attacker's tools --------------------------------------------------------------------


class Owned:
    """What an attacker on ap1's machine has: its files and its network position."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.state = cluster.home / "state" / "ap1"
        tls = self.state / "tls"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False  # the attacker does not care who answers
        context.load_verify_locations(tls / "ca.pem")
        context.load_cert_chain(tls / "cert.pem", tls / "key.pem")
        self.context = context
        document = cluster.installation_document()
        self.endpoints = {s["id"]: s["endpoint"] for s in document["services"]}

    def call(
        self,
        service: str,
        method: str,
        path: str,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """The status and JSON answer of a request with ap1's certificate; status 0 when the
        TLS handshake or the connection was refused."""
        url = self.cluster.admin_url if service == "admin" else self.endpoints[service]
        host, _, port = url.split("://", 1)[1].rstrip("/").rpartition(":")
        conn = http.client.HTTPSConnection(
            host.strip("[]"), int(port), context=self.context, timeout=10
        )
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        try:
            conn.request(method, path, data, sent)
            answer = conn.getresponse()
            raw = answer.read()
        except (ssl.SSLError, ConnectionError) as exc:
            return 0, str(exc)
        finally:
            conn.close()
        try:
            return answer.status, json.loads(raw)
        except ValueError:
            return answer.status, raw.decode(errors="replace")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if find_haproxy() is None:
        missing("HAProxy is not installed (apt-get install haproxy)")
    require_bindir()
    with cluster_home("gh-owned-") as home:
        topology = free_topology(home.parent / "topology.yaml")
        up = subprocess.run(
            [
                *GATEHOUSE,
                "cluster",
                "up",
                str(topology),
                "--no-fsync",
                "--no-demo-user",
                "--home",
                str(home),
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        running = Cluster.open(home)
        add_user(home, "alice", PASSWORD)
        _publish_ap2_only(running)
        yield running


def _publish_ap2_only(cluster: Cluster) -> None:
    """A resource only ap2 may serve (rule ``access_point: [ap2]``)."""
    admin = cluster.admin_client()
    document = yaml.safe_load(admin.call("GET", "/api/v1/draft")["text"])
    demo = next(r for r in document["resources"] if r["id"] == "demo")
    document["resources"].insert(0, {**demo, "id": "ap2-only", "path_prefix": "/ap2-only"})
    document.setdefault("resource_rules", {})["ap2-only"] = {"access_point": ["ap2"]}
    admin.call("PUT", "/api/v1/draft", {"text": yaml.safe_dump(document, sort_keys=False)})
    number = admin.call("POST", "/api/v1/publish", {"comment": "ap2-only"})["version"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = cluster.status()
        if all(status[name].config_version == number for name in ("ps1", "ps2", "ap1", "ap2")):
            return
        time.sleep(0.2)
    raise AssertionError(f"version {number} not running everywhere: {cluster.status()}")


@pytest.fixture(scope="module")
def owned(cluster: Cluster) -> Owned:
    return Owned(cluster)


@pytest.fixture(scope="module")
def alice(cluster: Cluster) -> Browser:
    """alice, signed in through ap1 (her session cookie is what an attacker would want)."""
    address = cluster.member("ap1").address
    assert address is not None
    browser = Browser(*address)
    assert browser.login("alice", PASSWORD, rd="/").status == 303
    assert browser.get("/").status == 200
    return browser


# --- the Authentication service --------------------------------------------------------------


def test_it_cannot_verify_a_password(owned: Owned) -> None:
    for service in ("auth1", "auth2"):
        status, answer = owned.call(
            service,
            "POST",
            "/internal/v1/password/verify",
            {"username": "alice", "password": PASSWORD, "client_ip": "203.0.113.7"},
        )
        assert status == 403, (service, status, answer)  # by role, not by a TLS failure
        assert "result" not in str(answer)


def test_it_cannot_read_a_user(owned: Owned) -> None:
    for service in ("auth1", "auth2"):
        status, answer = owned.call(service, "GET", "/internal/v1/users/alice")
        assert status in (403, 404), (service, status, answer)  # the route is gone
        assert "alice" not in str(answer)


# --- the Policy service ----------------------------------------------------------------------


def test_it_cannot_list_or_revoke_sessions(owned: Owned, alice: Browser, cluster: Cluster) -> None:
    token = (cluster.home / "policy-admin.token").read_text().strip()
    bearer = {"Authorization": f"Bearer {token}"}  # even with the operator's token
    for service in ("ps1", "ps2"):
        status, answer = owned.call(
            service, "GET", "/internal/v1/sessions?user=alice", None, bearer
        )
        assert status == 403, (service, status, answer)
        status, answer = owned.call(
            service, "DELETE", "/internal/v1/sessions?user=alice", None, bearer
        )
        assert status == 403, (service, status, answer)
    assert alice.get("/still-signed-in").status == 200


def test_it_cannot_decide_as_another_access_point(
    owned: Owned, alice: Browser, cluster: Cluster
) -> None:
    session = alice.cookies["gatehouse_session"]
    # The rule would let ap2 serve alice there:
    address = cluster.member("ap2").address
    assert address is not None
    via_ap2 = Browser(*address)
    via_ap2.cookies["gatehouse_session"] = session
    assert via_ap2.get("/ap2-only/x").status == 200
    # ap1's certificate, saying it is ap2, gets no allow.
    status, answer = owned.call(
        "ps1",
        "POST",
        "/internal/v1/decide",
        {
            "session": session,
            "resource": "ap2-only",
            "method": "GET",
            "path": "/ap2-only/x",
            "url": "http://x/ap2-only/x",
            "client_ip": "127.0.0.1",
            "headers": {},
            "ap": "ap2",
        },
    )
    assert status == 200, answer
    assert answer["decision"] == "deny", answer
    assert "headers" not in answer


# --- the Administration service ----------------------------------------------------------------


def test_it_cannot_fetch_another_services_view(owned: Owned) -> None:
    for service in ("ps1", "auth1", "ap2"):
        status, answer = owned.call("admin", "GET", f"/api/v1/config/{service}?after=0&wait=0")
        assert status in (401, 403), (service, status, answer)
        assert "view" not in str(answer)


def test_it_cannot_register_or_get_a_certificate_as_another_service(owned: Owned) -> None:
    csr = make_csr(make_key()).decode()
    status, answer = owned.call(
        "admin",
        "POST",
        "/api/v1/register",
        {
            "token": "ghj1.AAAA.not-a-token",
            "service_id": "ps1",
            "role": "policy",
            "node": "evil",
            "endpoint": "https://127.0.0.1:1",
            "csr": csr,
        },
    )
    assert status in (400, 401, 403, 409), (status, answer)
    assert "certificate" not in str(answer)
    # Renewing with its own certificate yields its own identity, whatever the CSR says.
    status, answer = owned.call("admin", "POST", "/api/v1/certificates/renew", {"csr": csr})
    if status == 200:
        issued = x509.load_pem_x509_certificate(answer["certificate"].encode())
        assert identity_of(issued) == Identity(ACCESS_POINT, "ap1")


def test_it_cannot_publish_configuration(owned: Owned) -> None:
    status, answer = owned.call("admin", "PUT", "/api/v1/draft", {"text": "services: []\n"})
    assert status in (401, 403), (status, answer)
    status, answer = owned.call("admin", "POST", "/api/v1/publish", {"comment": "owned"})
    assert status in (401, 403), (status, answer)
    status, answer = owned.call("admin", "POST", "/api/v1/join-tokens", {"role": "policy"})
    assert status in (401, 403), (status, answer)


# --- PostgreSQL ------------------------------------------------------------------------------


def test_it_cannot_connect_to_postgresql(owned: Owned, cluster: Cluster) -> None:
    # psql, a process of its own, as the attacker would run it: an in-process driver left a
    # failed attempt's socket to the garbage collector, which pytest reports as an error.
    psql = require_bindir() / "psql"
    tls = owned.state / "tls"
    roles = ["postgres", "gatehouse", "gatehouse_admin", "gatehouse_auth", "gatehouse_policy"]
    connected: list[str] = []
    for name in ("pg1", "pg2"):
        port = cluster._pg_node(name).port
        for role in roles:
            dsn = (
                f"host=127.0.0.1 port={port} user={role} dbname=postgres connect_timeout=5 "
                f"sslmode=require sslcert={tls / 'cert.pem'} sslkey={tls / 'key.pem'} "
                f"sslrootcert={tls / 'ca.pem'}"
            )
            done = subprocess.run(
                [str(psql), "-w", dsn, "-Atc", "select 1"],  # -w: never ask for a password
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
            )
            if done.returncode == 0:
                connected.append(f"{name} as {role}")
            else:  # the server wants what ap1 does not have: a password, another certificate
                assert "psql: error: connection to server" in done.stderr, done.stderr
    assert connected == []


# --- backends that check identity assertions -----------------------------------------------------


def test_a_checking_backend_refuses_an_identity_it_forges(tmp_path: Path) -> None:
    """Outside the cluster (whose demo backend checks nothing): a gateway on mutual TLS whose
    backend checks assertions against the key set the Policy service publishes."""
    from gatehouse.trust.ca import CertificateAuthority

    backend_port = free_port()
    gateway = start_gateway(
        tmp_path,
        {"resources": {"signed": "authenticated"}, "identity_assertion": ["signed"]},
        [{"id": "signed", "path_prefix": "/", "backends": [f"http://127.0.0.1:{backend_port}"]}],
        internal_tls=CertificateAuthority.create(),
    )
    backend = Service(
        [
            "demo-backend",
            "--listen",
            f"127.0.0.1:{backend_port}",
            "--jwks-url",
            f"http://127.0.0.1:{gateway.ap.port}/_gatehouse/jwks.json",
            "--audience",
            "signed",
        ],
        tmp_path / "backend.log",
        "127.0.0.1",
        backend_port,
    )
    try:
        backend.wait_ready(30)
        # The AP's own key (what an attacker holds) signs an assertion for "root".
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        ap_key = load_pem_private_key((tmp_path / "tls" / "ap1" / "key.pem").read_bytes(), None)
        now = int(time.time())
        claims = {"iss": "gatehouse", "sub": "root", "aud": "signed", "iat": now, "exp": now + 60}
        jwk = {"kty": "EC", "crv": "P-256", "kid": "ap1", "alg": "ES256"}
        token = sign(claims, SigningKey(ap_key, jwk))  # type: ignore[arg-type]
        conn = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=10)
        conn.request("GET", "/", headers={"Gatehouse-Assertion": token, "Remote-User": "root"})
        answer = conn.getresponse()
        body = json.loads(answer.read())
        conn.close()
        assert answer.status == 401, body
        assert body["error"] == "assertion"
    finally:
        backend.stop()
        gateway.stop()


# --- what is on its disk and in its environment --------------------------------------------------

SECRETS = {
    "a database URL": re.compile(rb"postgres(?:ql)?(?:\+asyncpg)?://|sqlite(?:\+aiosqlite)?://"),
    "a password hash": re.compile(rb"\$argon2"),
    "a service secret": re.compile(rb"service_secret"),
    "a private key": re.compile(rb"-----BEGIN (?:EC |ENCRYPTED )?PRIVATE KEY-----"),
}


def test_its_disk_and_environment_hold_no_secrets(
    owned: Owned, alice: Browser, cluster: Cluster
) -> None:
    session = alice.cookies["gatehouse_session"].encode()
    found: list[str] = []
    files = [p for p in owned.state.rglob("*") if p.is_file()]
    assert files, owned.state
    for path in files:
        data = path.read_bytes()
        for what, pattern in SECRETS.items():
            if pattern.search(data) and not (
                what == "a private key" and path == owned.state / "tls" / "key.pem"
            ):
                found.append(f"{what} in {path}")
        if session in data:
            found.append(f"alice's session id in {path}")
        if path.name.endswith(".token"):
            # A join token is single use: the one that enrolled ap1 works no more.
            status, answer = owned.call(
                "admin",
                "POST",
                "/api/v1/register",
                {
                    "token": data.decode().strip(),
                    "service_id": "ap1",
                    "role": "access_point",
                    "node": "evil",
                    "endpoint": "https://127.0.0.1:1",
                    "csr": make_csr(make_key()).decode(),
                },
            )
            if status == 200 or "certificate" in str(answer):
                found.append(f"a join token that still works in {path}")
    pid = cluster.pid("ap1")
    assert pid is not None
    for part in ("environ", "cmdline"):
        data = Path(f"/proc/{pid}/{part}").read_bytes()
        for what, pattern in SECRETS.items():
            if pattern.search(data):
                found.append(f"{what} in the process's {part}")
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for entry in environ:
        name = entry.partition(b"=")[0].upper()
        if any(word in name for word in (b"PASSWORD", b"SECRET", b"TOKEN", b"PGPASS")):
            found.append(f"{name.decode()} in the process's environment")
    assert found == []
    assert os.stat(owned.state / "tls" / "key.pem").st_mode & 0o077 == 0


# --- revocation: what the operator does once an AP is known to be owned ---------------------
# These run last: they change the cluster the tests above share.


def _nodes_revoke(cluster: Cluster, service: str) -> None:
    done = subprocess.run(
        [*GATEHOUSE, "nodes", "revoke", service, "--reason", "owned", "--home", str(cluster.home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _revoke_and_wait(cluster: Cluster, revoked: str, client: str, then: str) -> None:
    """Revoke ``revoked``, which ``client`` uses now, and wait until ``client`` uses ``then``.

    Alone this holds at the first look; the bound is for a loaded CI machine, where one
    cluster.status() (it asks every service, database and etcd member) can take seconds
    (once 5 s were not enough). A revocation that never reached ``client`` still fails it."""
    assert cluster.status()[client].prefers == revoked
    _nodes_revoke(cluster, revoked)
    began = time.monotonic()
    while (status := cluster.status())[client].prefers != then:
        waited = time.monotonic() - began
        assert waited < 20, f"{client} still uses {revoked} after {waited:.1f} s: {status}"
        time.sleep(0.1)


def test_a_revoked_policy_service_is_dropped_by_the_access_points(
    cluster: Cluster, alice: Browser
) -> None:
    _revoke_and_wait(cluster, "ps1", "ap1", "ps2")
    # No request fails meanwhile or after: ap1's decisions and portal go to ps2.
    assert [alice.get(f"/after-revoke/{i}").status for i in range(10)] == [200] * 10


def test_a_revoked_authentication_service_is_dropped_by_the_policy_services(
    cluster: Cluster,
) -> None:
    # ps2 refuses auth2's certificate from the publish on: its calls (passwords!) go to auth1.
    _revoke_and_wait(cluster, "auth2", "ps2", "auth1")
    # A sign-in through ap2 (which uses ps2) works, through auth1.
    address = cluster.member("ap2").address
    assert address is not None
    browser = Browser(*address)
    assert browser.login("alice", PASSWORD, rd="/").status == 303
    assert browser.get("/").status == 200


def test_a_revoked_access_point_certificate_opens_nothing_within_a_second(
    owned: Owned, cluster: Cluster, alice: Browser
) -> None:
    session = alice.cookies["gatehouse_session"]
    body = {
        "session": session,
        "resource": "demo",
        "method": "GET",
        "path": "/",
        "url": "http://x/",
        "client_ip": "127.0.0.1",
        "headers": {},
        "ap": "ap1",
    }
    assert owned.call("ps2", "POST", "/internal/v1/decide", body)[0] == 200
    _nodes_revoke(cluster, "ap1")
    began = time.monotonic()
    while True:
        status, answer = owned.call("ps2", "POST", "/internal/v1/decide", body)
        if status != 200:
            break
        assert time.monotonic() - began < 1.0, "the revoked certificate still decides"
        time.sleep(0.05)
    assert status in (0, 403), answer
    assert owned.call("admin", "GET", "/api/v1/config/ap1?after=0&wait=0")[0] in (0, 403)

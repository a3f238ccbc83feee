"""The public health answer says only up or down; the details (id, configuration version,
Policy routing) are on the status listener: plaintext on loopback, or mutual TLS answering
only operator and administration certificates. Real processes on loopback."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import Identity
from gatehouse.trust.tls import Credentials, write_credentials
from tests.conftest import StartAP
from tests.support.ap_status import ap_status, status_port, status_request
from tests.support.http_wire import WireClient
from tests.support.processes import GATEHOUSE, Service, free_port, write_config

#: A Policy service nobody listens on: the AP has a decider, so its details name it.
POLICY = "http://127.0.0.1:9"
RESOURCES = [{"id": "app", "backends": ["http://127.0.0.1:9"], "public": True}]


def public_health(ap: Service, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(ap.host, ap.port, timeout=5)
    try:
        conn.request(method, "/_gatehouse/health")
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_the_public_health_answer_says_only_up(start_ap: StartAP) -> None:
    ap = start_ap(RESOURCES, {"id": "edge7", "policy_services": [POLICY]}, status=True)
    status, headers, body = public_health(ap)
    assert (status, body) == (200, b'{"status":"ok"}')
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert public_health(ap, "HEAD")[::2] == (200, b"")
    # The details are on the status listener.
    answer = ap_status(ap)
    assert answer["status"] == "ok"
    assert answer["id"] == "edge7"
    assert (answer["config_version"], answer["config_source"]) == (None, "file")
    assert answer["local_version"] == 1
    assert answer["policy"]["endpoints"][0]["url"] == POLICY
    assert ap_status(ap, path="/internal/v1/health")["id"] == "edge7"


def test_the_status_listener_answers_only_its_health(start_ap: StartAP) -> None:
    ap = start_ap(RESOURCES, status=True)
    port = status_port(ap)
    status, body = status_request(port, "HEAD")
    assert (status, body) == (200, b"")
    assert status_request(port, path="/_gatehouse/health?x=1")[0] == 200
    status, body = status_request(port, path="/")
    assert status == 404
    assert json.loads(body)["error"] == "Not Found"
    assert status_request(port, "POST")[0] == 405
    # A head too large is refused, then the connection closed.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /_gatehouse/health HTTP/1.1\r\nX: " + b"a" * 10_000)
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.1 431 ")
    # Not HTTP at all.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"hello\r\n\r\n")
        assert sock.recv(200).startswith(b"HTTP/1.1 400 ")
    # The public listener serves on, the reserved prefix too.
    with WireClient(ap.host, ap.port, timeout=5) as client:
        assert client.request("GET", "/_gatehouse/nothing").status == 404
    assert "Traceback" not in ap.output()


def test_every_worker_answers_on_the_status_port(start_ap: StartAP) -> None:
    ap = start_ap(RESOURCES, status=True, workers=2)
    # start_ap waits for the public port; the status listeners come up a moment later.
    deadline = time.monotonic() + 15
    while True:
        try:
            ap_status(ap)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "no status listener"
            time.sleep(0.1)
    for _ in range(10):
        assert ap_status(ap)["config_source"] == "file"


def test_draining_shows_on_both(start_ap: StartAP) -> None:
    ap = start_ap(RESOURCES, {"drain_timeout": "5s"}, status=True)
    port = status_port(ap)
    # A request head half sent keeps the worker draining until it is answered.
    with socket.create_connection((ap.host, ap.port), timeout=5) as sock:
        sock.sendall(b"GET /_gatehouse/health HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.2)
        ap.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while (answer := status_request(port))[0] != 503:
            assert time.monotonic() < deadline, answer
            time.sleep(0.02)
        details = json.loads(answer[1])
        assert (details["status"], details["config_source"]) == ("draining", "file")
        sock.sendall(b"\r\n")
        reply = sock.recv(1000)
    assert reply.startswith(b"HTTP/1.1 503 ")
    assert reply.endswith(b'\r\n\r\n{"status":"draining"}')


def test_a_plaintext_status_listener_off_loopback_is_refused(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "ap.yaml",
        {
            "access_point": {
                "listen": f"127.0.0.1:{free_port()}",
                "status_listen": f"0.0.0.0:{free_port()}",
            },
            "resources": RESOURCES,
        },
    )
    result = subprocess.run(
        [*GATEHOUSE, "access-point", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "access_point.status_listen" in result.stderr
    assert "0.0.0.0 is not a loopback address" in result.stderr
    assert "Traceback" not in result.stderr


# --- mutual TLS ----------------------------------------------------------------------------


def credentials(tmp_path: Path, ca: CertificateAuthority, role: str, service_id: str) -> Path:
    directory = tmp_path / "tls" / f"{role}-{service_id}"
    key, cert = ca.issue_key_pair(Identity(role, service_id))
    write_credentials(directory, ca.certificate_pem, cert, key)
    return directory


def client_context(tmp_path: Path, ca: CertificateAuthority, role: str) -> ssl.SSLContext:
    return Credentials(credentials(tmp_path, ca, role, "someone")).client


@pytest.fixture
def tls_ap(tmp_path: Path) -> Any:
    ca = CertificateAuthority.create()
    port, status = free_port(), free_port()
    config = write_config(
        tmp_path / "ap.yaml",
        {
            "access_point": {
                "id": "ap1",
                "listen": f"127.0.0.1:{port}",
                # Any address: with TLS the status listener need not be on loopback.
                "status_listen": f"0.0.0.0:{status}",
                "policy_services": [POLICY],
            },
            "resources": RESOURCES,
        },
    )
    tls = credentials(tmp_path, ca, "access_point", "ap1")
    ap = Service(
        ["access-point", "--config", str(config), "--tls", str(tls)],
        tmp_path / "ap.log",
        "127.0.0.1",
        port,
    )
    ap.status_port = status  # type: ignore[attr-defined]
    try:
        yield ap.wait_ready(), ca
    finally:
        ap.stop()


def test_with_credentials_the_status_listener_answers_operators_only(
    tls_ap: tuple[Service, CertificateAuthority], tmp_path: Path
) -> None:
    ap, ca = tls_ap
    port = status_port(ap)
    # No plaintext.
    with pytest.raises((OSError, http.client.HTTPException)):
        status_request(port)
    # No certificate: the handshake fails.
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.load_verify_locations(cadata=ca.certificate_pem.decode())
    with pytest.raises((OSError, http.client.HTTPException)):
        status_request(port, context=anonymous)
    # Certificates of the installation, but not an operator's.
    for role in ("access_point", "policy", "authentication"):
        status, body = status_request(port, context=client_context(tmp_path, ca, role))
        assert status == 403, (role, body)
        assert "config_version" not in body.decode()
        assert f"not {role}" in json.loads(body)["message"]
    # A certificate from another CA.
    stranger = client_context(tmp_path / "other", CertificateAuthority.create(), "operator")
    stranger.load_verify_locations(cadata=ca.certificate_pem.decode())
    with pytest.raises((OSError, http.client.HTTPException)):
        status_request(port, context=stranger)
    # The operator and the Administration service get the details.
    for role in ("operator", "administration"):
        answer = ap_status(ap, context=client_context(tmp_path, ca, role))
        assert answer["id"] == "ap1"
        assert answer["policy"]["endpoints"][0]["url"] == POLICY
    # The public answer stays bare.
    assert public_health(ap)[::2] == (200, b'{"status":"ok"}')
    assert "Traceback" not in ap.output()

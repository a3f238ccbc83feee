"""The generated haproxy.cfg: what it says, and that HAProxy accepts it without a warning."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gatehouse.cluster.haproxy import duration, haproxy_config, parse_show_stat
from gatehouse.cluster.topology import Topology
from gatehouse.config.loader import validate
from tests.cluster.support import topology_data


def topology(**load_balancer: Any) -> Topology:
    return validate(Topology, topology_data(**load_balancer))


def backend_lines(text: str) -> list[str]:
    section = text.split("backend gatehouse_access_points\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines()]


def test_every_access_point_is_a_health_checked_server() -> None:
    text = haproxy_config(
        topology(health_check={"interval": "200ms", "timeout": "150ms", "fall": 3, "rise": 4})
    )
    lines = backend_lines(text)
    assert lines[-3:] == [
        "default-server check inter 200ms fall 3 rise 4",
        "server ap1 127.0.0.1:8081",
        "server ap2 127.0.0.1:8082",
    ]
    assert "option httpchk" in lines
    assert (
        "http-check send meth GET uri /_gatehouse/health ver HTTP/1.1 hdr Host gatehouse-lb"
    ) in lines
    assert "http-check expect status 200" in lines
    assert "timeout check 150ms" in text
    assert "balance roundrobin" in lines
    assert "cookie" not in text  # no stickiness: any AP serves any session


def test_retries() -> None:
    lines = backend_lines(haproxy_config(topology()))
    assert "retries 2" in lines
    assert "option redispatch 1" in lines
    assert "retry-on conn-failure empty-response response-timeout 502 503" in lines
    assert "acl idempotent method GET HEAD OPTIONS TRACE PUT DELETE" in lines
    assert "http-request disable-l7-retry unless idempotent" in lines

    lines = backend_lines(
        haproxy_config(topology(retries=0, redispatch=False, retry_on=[], balance="leastconn"))
    )
    assert "retries 0" in lines
    assert "no option redispatch" in lines
    assert "retry-on conn-failure" in lines  # a request that was not sent is always safe
    assert "balance leastconn" in lines


def test_frontend_and_stats() -> None:
    text = haproxy_config(topology(stats="127.0.0.1:8404"), stats_socket="/run/gh lb.sock")
    assert "    bind 127.0.0.1:8080\n" in text
    assert "http-request set-header X-Forwarded-For %[src]" in text
    assert "http-request set-header X-Forwarded-Proto http\n" in text
    assert 'stats socket "/run/gh lb.sock" mode 600 level admin' in text
    assert "frontend stats\n    bind 127.0.0.1:8404\n    stats enable\n" in text
    text = haproxy_config(topology(tls_certificate="/etc/haproxy/gate.pem"))
    assert "bind 127.0.0.1:8080 ssl crt /etc/haproxy/gate.pem alpn http/1.1" in text
    assert "http-request set-header X-Forwarded-Proto https\n" in text
    assert "stats" not in text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1.0, "1s"), (0.2, "200ms"), (90.0, "90s"), (1.5, "1500ms"), (0.0001, "1ms")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_parse_show_stat() -> None:
    text = (
        "# pxname,svname,qcur,status,check_status,wredis\n"
        "gatehouse,FRONTEND,,OPEN,,\n"
        "gatehouse_access_points,ap1,0,DOWN,L4CON,\n"
        "gatehouse_access_points,ap2,0,UP 1/2,L7OK,\n"
        "gatehouse_access_points,BACKEND,0,UP,,7\n"
    )
    rows = parse_show_stat(text)
    assert rows["gatehouse_access_points", "ap1"]["status"] == "DOWN"
    assert rows["gatehouse_access_points", "ap2"]["check_status"] == "L7OK"
    assert rows["gatehouse_access_points", "BACKEND"]["wredis"] == "7"


def _certificate(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatehouse.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "stats": {"stats": "127.0.0.1:8404"},
    "tls": {"tls_certificate": "CERT"},
    "no retries": {"retries": 0, "redispatch": False, "retry_on": []},
    "everything retried": {
        "balance": "leastconn",
        "retry_on": ["empty-response", "junk-response", "response-timeout", 500, 502, 503, 504],
        "timeouts": {"connect": "250ms", "server": "2m", "tunnel": "1h"},
    },
    "ipv6": {"lb_listen": "[::1]:8080", "stats": "[::1]:8404"},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_haproxy_accepts_it(
    variant: str, haproxy_bin: str, tmp_path: Path, short_dir: Path
) -> None:
    options = dict(VARIANTS[variant])
    if options.get("tls_certificate") == "CERT":
        options["tls_certificate"] = str(_certificate(tmp_path / "gate.pem"))
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(topology(**options), stats_socket=short_dir / "lb.sock"))
    result = subprocess.run(
        [haproxy_bin, "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Configuration file is valid" in output
    assert "WARNING" not in output, output
    assert "ALERT" not in output, output

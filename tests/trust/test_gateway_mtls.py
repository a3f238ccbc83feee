"""A whole gateway with every internal link on mutual TLS (certificates from a CA made at
test time, given with ``--tls DIR``): sign-in and decisions work through the Access Point,
and the internal listeners speak nothing but TLS with a certificate from that CA."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest

from gatehouse.trust.ca import CertificateAuthority
from tests.support.gateway import Gateway, add_user, start_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("mtls")
    ca = CertificateAuthority.create()
    gw = start_gateway(
        tmp,
        {"resources": {"app": "authenticated"}},
        [{"id": "app", "hosts": ["*"], "path_prefix": "/"}],
        internal_tls=ca,
    )
    add_user(gw.home, "carol", "correct horse battery")
    try:
        yield gw
    finally:
        gw.stop()


def test_sign_in_and_decisions_work_over_mutual_tls(gateway: Gateway) -> None:
    browser = gateway.browser()
    first = browser.get("/hello")
    assert first.status == 303
    browser.login("carol", "correct horse battery", "/hello")
    answer = browser.get("/hello")
    assert answer.status == 200
    assert answer.json()["headers"]


@pytest.mark.parametrize("which", ["policy", "auth"])
def test_internal_listeners_refuse_plaintext(gateway: Gateway, which: str) -> None:
    service = getattr(gateway, which)
    with socket.create_connection((service.host, service.port), timeout=5) as sock:
        sock.sendall(b"GET /internal/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert not answer.startswith(b"HTTP/1.1 200")


def _ask_without_certificate(host: str, port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw) as sock,
    ):
        # TLS 1.3: the server's refusal of a missing certificate arrives with the first read.
        sock.sendall(b"GET /internal/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    if not answer:
        raise ConnectionError("closed without an answer")
    return answer


@pytest.mark.parametrize("which", ["policy", "auth"])
def test_internal_listeners_refuse_a_client_without_a_certificate(
    gateway: Gateway, which: str
) -> None:
    service = getattr(gateway, which)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _ask_without_certificate(service.host, service.port)

"""The demo backend as a real process, checked over real sockets."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from gatehouse.demo_backend.app import CHUNK_SIZE, download_chunks
from tests.support.processes import Service, free_port


def request(
    svc: Service,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Message, bytes]:
    conn = http.client.HTTPConnection(svc.host, svc.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def echo(svc: Service, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, headers, body = request(svc, method, path, **kwargs)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    document: dict[str, Any] = json.loads(body)
    return document


def test_echo_describes_the_request(demo_backend: Service) -> None:
    conn = http.client.HTTPConnection(demo_backend.host, demo_backend.port, timeout=10)
    try:
        conn.putrequest("PATCH", "/a%2Fb/c%20d?x=1&x=2&empty", skip_accept_encoding=True)
        # X-Forwarded-For must not replace the peer address in "client".
        sent = [("X-Second", "2"), ("X-Forwarded-For", "10.1.2.3"), ("X-Second", "again")]
        for name, value in sent:
            conn.putheader(name, value)
        conn.putheader("Content-Length", "5")
        conn.endheaders(b"hello")
        client_port = conn.sock.getsockname()[1]
        resp = conn.getresponse()
        document = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert document == {
        "method": "PATCH",
        "path": "/a%2Fb/c%20d",
        "query": "x=1&x=2&empty",
        "http_version": "1.1",
        "headers": [
            ["host", f"127.0.0.1:{demo_backend.port}"],
            ["x-second", "2"],
            ["x-forwarded-for", "10.1.2.3"],
            ["x-second", "again"],
            ["content-length", "5"],
        ],
        "body_size": 5,
        "body_sha256": hashlib.sha256(b"hello").hexdigest(),
        "client": f"127.0.0.1:{client_port}",
    }


def test_echo_http_1_0(demo_backend: Service) -> None:
    with socket.create_connection((demo_backend.host, demo_backend.port), timeout=10) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    document = json.loads(body)
    assert (document["http_version"], document["path"], document["headers"]) == ("1.0", "/old", [])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_10_mib_is_counted_and_hashed(demo_backend: Service, chunked: bool) -> None:
    pieces = [os.urandom(1 << 20) for _ in range(10)]
    digest = hashlib.sha256(b"".join(pieces)).hexdigest()
    body = iter(pieces) if chunked else b"".join(pieces)
    document = echo(demo_backend, "PUT", "/upload", body=body)
    framing = "transfer-encoding" if chunked else "content-length"
    assert framing in dict(document["headers"])
    assert document["body_size"] == 10 << 20
    assert document["body_sha256"] == digest


@pytest.mark.parametrize("prefix", ["", "/some/prefix"])
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 10 * CHUNK_SIZE + 123])
def test_download_has_the_size_and_pattern(demo_backend: Service, prefix: str, size: int) -> None:
    status, headers, body = request(demo_backend, "GET", f"{prefix}/download?size={size}")
    assert status == 200
    assert headers["Content-Length"] == str(size)
    assert headers["Transfer-Encoding"] is None
    assert body == b"".join(download_chunks(size))
    assert len(body) == size
    # The pattern itself: each chunk starts with its index.
    for index in range(size // CHUNK_SIZE):
        offset = index * CHUNK_SIZE
        assert body[offset : offset + 9] == index.to_bytes(8, "big") + b"\x08"


def test_chunked_download(demo_backend: Service) -> None:
    size = 3 * CHUNK_SIZE + 7
    status, headers, body = request(demo_backend, "GET", f"/x/download?chunked=1&size={size}")
    assert status == 200
    assert headers["Content-Length"] is None
    assert headers["Transfer-Encoding"] == "chunked"
    assert body == b"".join(download_chunks(size))


def test_download_of_4_gib_can_be_abandoned(demo_backend: Service) -> None:
    conn = http.client.HTTPConnection(demo_backend.host, demo_backend.port, timeout=10)
    try:
        conn.request("GET", f"/download?size={4 << 30}")
        resp = conn.getresponse()
        assert resp.headers["Content-Length"] == str(4 << 30)
        assert resp.read(1 << 20) == b"".join(download_chunks(1 << 20))
    finally:
        conn.close()
    assert echo(demo_backend, "GET", "/after")["path"] == "/after"


@pytest.mark.parametrize("query", ["", "size=-1", "size=abc", f"size={(4 << 30) + 1}"])
def test_download_rejects_a_bad_size(demo_backend: Service, query: str) -> None:
    status, _, body = request(demo_backend, "GET", f"/download?{query}")
    assert status == 400
    assert "size" in json.loads(body)["error"]


def test_download_is_only_for_get(demo_backend: Service) -> None:
    assert echo(demo_backend, "POST", "/download?size=10", body=b"x")["body_size"] == 1


@pytest.mark.parametrize("status", [200, 201, 302, 404, 418, 500, 503, 599])
def test_status_endpoint(demo_backend: Service, status: int) -> None:
    got, headers, body = request(demo_backend, "GET", f"/api/status/{status}")
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": status}


@pytest.mark.parametrize("status", [204, 304])
def test_status_endpoint_without_body(demo_backend: Service, status: int) -> None:
    got, headers, body = request(demo_backend, "DELETE", f"/status/{status}")
    assert (got, body) == (status, b"")
    assert headers["Content-Length"] is None
    assert headers["Transfer-Encoding"] is None


def test_status_endpoint_rejects_informational(demo_backend: Service) -> None:
    assert request(demo_backend, "GET", "/status/101")[0] == 400


def test_slow_waits_then_echoes(demo_backend: Service) -> None:
    started = time.monotonic()
    document = echo(demo_backend, "POST", "/x/slow?delay=0.4", body=b"abc")
    assert time.monotonic() - started >= 0.4
    assert (document["path"], document["body_size"]) == ("/x/slow", 3)


@pytest.mark.parametrize("delay", ["soon", "-1", "nan", "inf"])
def test_slow_rejects_a_bad_delay(demo_backend: Service, delay: str) -> None:
    assert request(demo_backend, "GET", f"/slow?delay={delay}")[0] == 400


def test_websocket_echo(demo_backend: Service) -> None:
    url = f"ws://{demo_backend.host}:{demo_backend.port}/any/path"
    with connect(url, subprotocols=["chat", "other"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
        messages: list[str | bytes] = ["hello", "", b"\x00\xff", os.urandom(512 << 10), "é" * 1000]
        for message in messages:
            ws.send(message)
            assert ws.recv(timeout=10) == message


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    svc = Service(
        ["demo-backend", "--listen", f"127.0.0.1:{port}"], tmp_path / "b.log", "127.0.0.1", port
    )
    try:
        svc.wait_ready()
        svc.signal(sig)
        assert svc.proc.wait(10) == 0
    finally:
        svc.stop()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        if os.environ.get("GATEHOUSE_REQUIRE_ALL") == "1":
            pytest.fail("openssl is needed to make a test certificate")
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    args = [
        "demo-backend",
        "--listen",
        f"127.0.0.1:{port}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ]
    svc = Service(args, tmp_path / "b.log", "127.0.0.1", port)
    try:
        svc.wait_ready()
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
        try:
            conn.request("POST", "/secure?q=1", body=b"secret")
            resp = conn.getresponse()
            document = json.loads(resp.read())
        finally:
            conn.close()
        assert resp.status == 200
        assert (document["path"], document["query"], document["body_size"]) == ("/secure", "q=1", 6)
        with connect(f"wss://127.0.0.1:{port}/ws", ssl=context, open_timeout=10) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=10) == "over tls"
        # Plain HTTP to the TLS port gets no answer from the app.
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            request(svc, "GET", "/")
    finally:
        assert svc.stop() == 0

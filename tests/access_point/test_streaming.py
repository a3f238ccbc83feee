"""Bodies, framing and connection reuse through a real Access Point in front of the demo backend."""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from gatehouse.demo_backend.app import download_chunks
from tests.support.http_wire import WireClient, request_bytes
from tests.support.processes import Service

StartAP = Callable[..., Service]

GIB = 1 << 30
MIB = 1 << 20
READ_SIZE = 256 << 10
RSS_GROWTH_LIMIT = 64 * MIB


def public(backend: Service, **extra: Any) -> dict[str, Any]:
    return {"id": "demo", "backends": [backend.url], "public": True, **extra}


@pytest.fixture
def ap(start_ap: StartAP, demo_backend: Service) -> Service:
    return start_ap([public(demo_backend)])


# memory -------------------------------------------------------------------------------------


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's resident memory every 50 ms in a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss(pid)
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            self.samples += 1
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def warm_up(ap: Service) -> None:
    """A few requests first, so lazily built state is in the baseline, not the growth."""
    with WireClient(ap.host, ap.port) as client:
        for _ in range(3):
            assert client.request("POST", "/warm", body=b"x" * 100_000).status == 200
            assert client.request("GET", "/download?size=300000&chunked=1").status == 200


class HashedSource:
    """A 1 GiB request body produced on the fly, hashed as it is generated."""

    def __init__(self, size: int, chunk: int = READ_SIZE) -> None:
        self.size = size
        self.chunk = chunk
        self.block = os.urandom(chunk)
        self.digest = hashlib.sha256()
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        index = 0
        while self.sent < self.size:
            n = min(self.chunk, self.size - self.sent)
            # A counter in every chunk, so a lost or repeated chunk changes the digest.
            data = (index.to_bytes(8, "big") + self.block[8:])[:n]
            self.digest.update(data)
            self.sent += n
            index += 1
            yield data


@functools.cache
def download_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in download_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def big_ap(start_ap: StartAP, demo_backend: Service) -> Service:
    ap = start_ap([public(demo_backend, max_body_size="2GiB", read_timeout=120)])
    warm_up(ap)
    return ap


@pytest.mark.slow
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_1gib_upload_streams_with_bounded_memory(big_ap: Service, framing: str) -> None:
    source = HashedSource(GIB)
    headers = {"Content-Type": "application/octet-stream"}
    if framing == "content-length":
        headers["Content-Length"] = str(GIB)
    conn = http.client.HTTPConnection(big_ap.host, big_ap.port, timeout=60)
    try:
        with RssSampler(big_ap.pid) as memory:
            # An iterable body without Content-Length goes out chunked.
            conn.request(
                "PUT",
                "/upload",
                body=iter(source),
                headers=headers,
                encode_chunked=framing == "chunked",
            )
            resp = conn.getresponse()
            document = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200
    assert source.sent == GIB
    assert document["method"] == "PUT"
    assert document["body_size"] == GIB
    assert document["body_sha256"] == source.digest.hexdigest()
    sent_framing = {name.lower(): value for name, value in document["headers"]}
    if framing == "chunked":
        assert sent_framing.get("transfer-encoding") == "chunked"
    else:
        assert sent_framing.get("content-length") == str(GIB)
    assert memory.samples > 10
    assert memory.growth < RSS_GROWTH_LIMIT, f"AP RSS grew by {memory.growth / MIB:.1f} MiB"


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True])
def test_1gib_download_streams_with_bounded_memory(big_ap: Service, chunked: bool) -> None:
    target = f"/download?size={GIB}" + ("&chunked=1" if chunked else "")
    digest = hashlib.sha256()
    received = 0
    conn = http.client.HTTPConnection(big_ap.host, big_ap.port, timeout=60)
    try:
        with RssSampler(big_ap.pid) as memory:
            conn.request("GET", target)
            resp = conn.getresponse()
            assert resp.status == 200
            while data := resp.read(READ_SIZE):
                received += len(data)
                digest.update(data)
    finally:
        conn.close()
    if chunked:
        assert resp.getheader("Transfer-Encoding") == "chunked"
        assert resp.getheader("Content-Length") is None
    else:
        assert resp.getheader("Content-Length") == str(GIB)
    assert received == GIB
    assert digest.hexdigest() == download_sha256(GIB)
    assert memory.samples > 10
    assert memory.growth < RSS_GROWTH_LIMIT, f"AP RSS grew by {memory.growth / MIB:.1f} MiB"


# framing ------------------------------------------------------------------------------------


def chunked_body(parts: list[bytes], trailers: list[tuple[str, str]] | None = None) -> bytes:
    out = b"".join(b"%x\r\n" % len(part) + part + b"\r\n" for part in parts)
    out += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers or ()) + b"\r\n"
    return out


def test_chunked_request_body_is_forwarded_intact(ap: Service) -> None:
    parts = [os.urandom(n) for n in (1, 15, 4096, 70_000, 3, 300_000)]
    with WireClient(ap.host, ap.port) as client:
        resp = client.request(
            "POST",
            "/chunks",
            [("Transfer-Encoding", "chunked")],
            chunked_body(parts),
        )
        assert resp.status == 200
        document = resp.json()
        assert document["body_size"] == sum(map(len, parts))
        assert document["body_sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
        # Chunk extensions are framing, not content.
        resp = client.request(
            "POST",
            "/chunks",
            [("Transfer-Encoding", "chunked")],
            b"5;name=value\r\nhello\r\n0\r\n\r\n",
        )
        assert resp.status == 200
        assert resp.json()["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_request_trailers_are_not_forwarded(ap: Service) -> None:
    with WireClient(ap.host, ap.port) as client:
        resp = client.request(
            "POST",
            "/trailers",
            [("Transfer-Encoding", "chunked"), ("Trailer", "X-Checksum")],
            chunked_body([b"hello ", b"world"], [("X-Checksum", "sneaky"), ("X-Other", "t")]),
        )
        assert resp.status == 200
        document = resp.json()
        # The connection is still in step after the trailer section.
        assert client.request("GET", "/after").json()["path"] == "/after"
    names = {name.lower() for name, _ in document["headers"]}
    assert document["body_sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert "x-checksum" not in names
    assert "x-other" not in names
    assert not any("sneaky" in value for _, value in document["headers"])


def test_head_has_no_body_and_connection_stays_usable(ap: Service) -> None:
    with WireClient(ap.host, ap.port) as client:
        # The demo backend answers HEAD with the echo's headers: a JSON length, no body.
        head = client.request("HEAD", "/head")
        assert head.status == 200
        assert head.header("Content-Type") == "application/json"
        assert int(head.header("Content-Length") or 0) > 0
        assert head.body == b""
        head = client.request("HEAD", "/head-again")
        assert head.status == 200
        get = client.request("GET", "/download?size=5000")
        assert get.status == 200
        assert get.body == b"".join(download_chunks(5000))
        echo = client.request("GET", "/next")
        assert echo.json()["path"] == "/next"
        # Nothing extra arrived (a body after HEAD would be here).
        assert client.idle(0.3)


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses_keep_the_connection(ap: Service, status: int) -> None:
    with WireClient(ap.host, ap.port) as client:
        for _ in range(3):
            resp = client.request("GET", f"/status/{status}")
            assert resp.status == status
            assert resp.header("Transfer-Encoding") is None
            assert resp.header("Connection") != "close"
            assert client.buf == b"" or client.buf.startswith(b"HTTP/")
        echo = client.request("GET", "/after")
        assert echo.status == 200
        assert echo.json()["path"] == "/after"
        assert client.idle(0.3)


# Expect: 100-continue -------------------------------------------------------------------------


def test_expect_100_continue(ap: Service) -> None:
    body = os.urandom(200_000)
    with WireClient(ap.host, ap.port) as client:
        client.send(
            request_bytes(
                "POST",
                "/expect",
                [("Content-Length", str(len(body))), ("Expect", "100-continue")],
            )
        )
        interim = client.read_response("POST")
        assert (interim.version, interim.status) == ("HTTP/1.1", 100)
        assert interim.reason == "Continue"
        client.send(body)
        resp = client.read_response("POST")
        assert resp.status == 200
        document = resp.json()
        assert document["body_size"] == len(body)
        assert document["body_sha256"] == hashlib.sha256(body).hexdigest()
        # No second interim response (the backend's own 100) leaks after the final one.
        assert client.request("GET", "/again").json()["path"] == "/again"
        assert client.idle(0.3)


def test_expect_with_too_large_body_gets_413_without_continue(
    start_ap: StartAP, demo_backend: Service
) -> None:
    ap = start_ap([public(demo_backend, max_body_size=1000)])
    with WireClient(ap.host, ap.port) as client:
        client.send(
            request_bytes(
                "POST", "/expect", [("Content-Length", "1001"), ("Expect", "100-continue")]
            )
        )
        resp = client.read_response("POST")
        assert resp.status == 413
        assert resp.header("Connection") == "close"
        rest = client.read_to_close()
    assert b"100 Continue" not in rest
    assert b"100 Continue" not in resp.body


# keep-alive and pipelining --------------------------------------------------------------------


def test_many_requests_on_one_keepalive_connection(ap: Service) -> None:
    with WireClient(ap.host, ap.port) as client:
        local = client.sock.getsockname()
        for i in range(200):
            if i % 3 == 0:
                body = os.urandom(i * 10)
                resp = client.request("POST", f"/ka/{i}", body=body)
                assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
            else:
                resp = client.request("GET", f"/ka/{i}?n={i}")
                assert resp.json()["query"] == f"n={i}"
            assert resp.status == 200
            assert resp.json()["path"] == f"/ka/{i}"
            assert resp.header("Connection") != "close"
        assert client.sock.getsockname() == local
        assert not client.eof


def test_pipelined_requests_are_answered_in_order(ap: Service) -> None:
    body = b"pipelined body " * 1000
    batch = []
    expected = []
    for i in range(10):
        if i == 4:
            batch.append(
                request_bytes("POST", f"/pipe/{i}", [("Content-Length", str(len(body)))], body)
            )
            expected.append(("POST", f"/pipe/{i}", len(body)))
        elif i == 7:
            batch.append(request_bytes("GET", f"/pipe/{i}/download?size=100000&chunked=1"))
            expected.append(("GET", f"/pipe/{i}/download", 100_000))
        else:
            batch.append(request_bytes("GET", f"/pipe/{i}?q={i}"))
            expected.append(("GET", f"/pipe/{i}", 0))
    with WireClient(ap.host, ap.port) as client:
        client.send(b"".join(batch))
        for method, path, size in expected:
            resp = client.read_response(method)
            assert resp.status == 200
            if path.endswith("/download"):
                assert resp.body == b"".join(download_chunks(size))
                continue
            document = resp.json()
            assert (document["method"], document["path"], document["body_size"]) == (
                method,
                path,
                size,
            )
        assert client.idle(0.3)


# WebSocket ------------------------------------------------------------------------------------


def test_websocket_through_the_access_point(ap: Service) -> None:
    big = os.urandom(MIB)
    with connect(f"ws://{ap.host}:{ap.port}/ws", max_size=2 * MIB, open_timeout=10) as ws:
        ws.send("hello through the gate")
        assert ws.recv(timeout=10) == "hello through the gate"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=10) == b"\x00\x01binary\xff"
        ws.send(big)
        assert ws.recv(timeout=20) == big
        ws.send("é" * 1000)
        assert ws.recv(timeout=10) == "é" * 1000
        ws.close()
        assert ws.close_code == 1000
    # The AP still serves plain HTTP afterwards.
    with WireClient(ap.host, ap.port) as client:
        assert client.request("GET", "/after-ws").status == 200


# HTTP/1.0 -------------------------------------------------------------------------------------


def test_http10_response_closes_without_keepalive(ap: Service) -> None:
    with WireClient(ap.host, ap.port) as client:
        resp = client.request("GET", "/old", [("Host", "127.0.0.1")], version="1.0")
        assert resp.status == 200
        assert resp.json()["path"] == "/old"
        assert (resp.header("Connection") or "close").lower() == "close"
        assert client.closed_by_peer(5)


def test_http10_gets_chunked_backend_response_close_delimited(ap: Service) -> None:
    size = 300_000
    with WireClient(ap.host, ap.port) as client:
        client.send(request_bytes("GET", f"/download?size={size}&chunked=1", version="1.0"))
        resp = client.read_response()
        assert client.eof
    assert resp.status == 200
    assert resp.header("Transfer-Encoding") is None
    assert resp.header("Content-Length") is None
    assert resp.body == b"".join(download_chunks(size))
    assert re.fullmatch(r"HTTP/1\.[01]", resp.version)

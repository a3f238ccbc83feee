"""How the Access Point fails: dead, silent, slow and TLS backends; slow and surplus clients."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.http_wire import Response, WireClient, request_bytes
from tests.support.processes import Service, free_port

StartAP = Callable[..., Service]


def resource(backends: list[str], **extra: Any) -> dict[str, Any]:
    return {"id": "app", "backends": backends, "public": True, **extra}


def get(ap: Service, target: str, method: str = "GET", body: bytes = b"") -> Response:
    with WireClient(ap.host, ap.port, timeout=15) as client:
        return client.request(method, target, body=body)


def assert_error_page(resp: Response, status: int) -> None:
    assert resp.status == status
    assert (resp.header("Content-Type") or "").startswith("text/html")
    text = resp.body.decode("utf-8")
    assert str(status) in text
    assert "<html" in text.lower()
    for leak in ("Traceback", 'File "', "Errno", "Exception"):
        assert leak not in text


class SilentBackend:
    """A TCP server that accepts connections and reads requests but never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def __enter__(self) -> SilentBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        for conn in self.accepted:
            conn.close()


# backends that fail -------------------------------------------------------------------------


def test_backend_port_closed_gives_502_page(start_ap: StartAP) -> None:
    ap = start_ap([resource([f"http://127.0.0.1:{free_port()}"], connect_timeout=2)])
    resp = get(ap, "/anything")
    assert_error_page(resp, 502)
    # HEAD gets the same status without a body.
    with WireClient(ap.host, ap.port) as client:
        head = client.request("HEAD", "/anything")
        assert head.status == 502
        assert head.body == b""


def test_backend_that_never_answers_gives_504(start_ap: StartAP) -> None:
    with SilentBackend() as silent:
        ap = start_ap([resource([silent.url], read_timeout=1)])
        started = time.monotonic()
        resp = get(ap, "/silence")
        elapsed = time.monotonic() - started
        assert silent.accepted, "the AP never connected to the backend"
    assert_error_page(resp, 504)
    assert 0.9 <= elapsed < 4, f"answered after {elapsed:.2f}s with read_timeout 1s"


def test_slow_backend_gives_504_and_connection_stays_usable(
    start_ap: StartAP, demo_backend: Service
) -> None:
    ap = start_ap([resource([demo_backend.url], read_timeout=1)])
    with WireClient(ap.host, ap.port, timeout=15) as client:
        started = time.monotonic()
        resp = client.request("GET", "/slow?delay=3")
        elapsed = time.monotonic() - started
        assert_error_page(resp, 504)
        assert 0.9 <= elapsed < 2.9, f"answered after {elapsed:.2f}s with read_timeout 1s"
        if resp.header("Connection") != "close":
            follow = client.request("GET", "/slow?delay=0")
            assert follow.status == 200
            assert follow.json()["path"] == "/slow"
    # A delay under the read timeout is fine.
    assert get(ap, "/slow?delay=0.3").status == 200


@pytest.mark.parametrize("fail_timeout", [0, 10])
def test_dead_backend_in_group_is_skipped(
    start_ap: StartAP, demo_backend: Service, fail_timeout: int
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    ap = start_ap(
        [resource([dead, demo_backend.url])],
        settings={"backend_fail_timeout": fail_timeout},
    )
    body = os.urandom(50_000)
    statuses = []
    for i in range(12):  # one connection per request
        statuses.append(get(ap, f"/fresh/{i}").status)
    with WireClient(ap.host, ap.port) as client:
        for i in range(12):
            if i % 2:
                resp = client.request("POST", f"/kept/{i}", body=body)
                if resp.status == 200:
                    assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
            else:
                resp = client.request("GET", f"/kept/{i}")
            statuses.append(resp.status)
    assert statuses == [200] * 24
    if fail_timeout:
        # Passive failure detection: a failed backend is left alone for a while.
        attempts = ap.output().count(f"127.0.0.1:{dead.rsplit(':', 1)[1]}")
        assert attempts <= 2, f"dead backend tried {attempts} times within its fail timeout"


# slow and surplus clients ---------------------------------------------------------------------


def wait_closed(client: WireClient, within: float) -> tuple[float, bytes]:
    """Seconds until the AP closed the connection, and what it sent before."""
    started = time.monotonic()
    assert client.closed_by_peer(within), f"still open after {within}s"
    return time.monotonic() - started, bytes(client.buf)


def assert_408_or_nothing(data: bytes) -> None:
    assert data == b"" or data.startswith(b"HTTP/1.1 408 "), data[:200]


def test_stalled_request_head_is_dropped(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([resource([demo_backend.url])], settings={"header_timeout": 1})
    with WireClient(ap.host, ap.port) as client:
        client.send(b"GET /half HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Part")
        elapsed, data = wait_closed(client, 5)
    assert 0.8 <= elapsed < 3.5, elapsed
    assert_408_or_nothing(data)
    # A client that says nothing at all is dropped too.
    with WireClient(ap.host, ap.port) as client:
        elapsed, data = wait_closed(client, 5)
    assert 0.8 <= elapsed < 3.5, elapsed
    assert_408_or_nothing(data)


def test_idle_keepalive_connection_is_closed(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([resource([demo_backend.url])], settings={"keepalive_timeout": 1})
    with WireClient(ap.host, ap.port) as client:
        assert client.request("GET", "/one").status == 200
        elapsed, data = wait_closed(client, 5)
    assert 0.8 <= elapsed < 3.5, elapsed
    assert data == b""


def test_stalled_request_body_is_dropped(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([resource([demo_backend.url])], settings={"body_timeout": 1})
    with WireClient(ap.host, ap.port) as client:
        client.send(request_bytes("POST", "/partial", [("Content-Length", "1000")], b"0123456789"))
        elapsed, data = wait_closed(client, 5)
    assert 0.8 <= elapsed < 3.5, elapsed
    assert_408_or_nothing(data)


def test_connections_over_the_limit_get_503(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([resource([demo_backend.url])], settings={"max_connections": 5})
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(WireClient(ap.host, ap.port)) for _ in range(5)]
        for client in held:
            assert client.request("GET", "/held").status == 200
        with WireClient(ap.host, ap.port) as extra:
            resp = extra.read_response()
            assert resp.status == 503
            assert resp.header("Connection") == "close"
            assert extra.closed_by_peer(3)
        # The held connections are unaffected.
        for client in held:
            assert client.request("GET", "/still").status == 200
        # Once one of them goes, a new connection is served again.
        held[0].close()
        deadline = time.monotonic() + 3
        while True:
            with WireClient(ap.host, ap.port) as again:
                again.send(request_bytes("GET", "/again"))
                try:
                    status = again.read_response().status
                except ConnectionError:
                    status = 0
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200


# HTTPS backends -------------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with ``cryptography`` or ``openssl``."""
    cert, key = directory / "backend-cert.pem", directory / "backend-key.pem"
    try:
        _self_signed_cryptography(cert, key)
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.fail("neither the cryptography package nor openssl is available")
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec"),
                *("-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"),
                *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                *("-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return cert, key


def _self_signed_cryptography(cert_path: Path, key_path: Path) -> None:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def tls_backend(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    cert, key = self_signed(tmp_path)
    port = free_port()
    svc = Service(
        [
            *("demo-backend", "--listen", f"127.0.0.1:{port}"),
            *("--tls-cert", str(cert), "--tls-key", str(key)),
        ],
        tmp_path / "tls-backend.log",
        "127.0.0.1",
        port,
    )
    try:
        yield svc.wait_ready(), cert
    finally:
        svc.stop()


def test_https_backend(start_ap: StartAP, tls_backend: tuple[Service, Path]) -> None:
    backend, cert = tls_backend
    url = f"https://127.0.0.1:{backend.port}"
    ap = start_ap(
        [
            resource([url], id="trusted", path_prefix="/trusted", ca_file=str(cert)),
            resource([url], id="unknown-ca", path_prefix="/unknown-ca", tls_verify=True),
            resource([url], id="unverified", path_prefix="/unverified", tls_verify=False),
        ]
    )
    body = os.urandom(100_000)
    resp = get(ap, "/trusted/x", "POST", body)
    assert resp.status == 200
    document = resp.json()
    assert document["path"] == "/trusted/x"
    assert document["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert_error_page(get(ap, "/unknown-ca/x"), 502)
    assert get(ap, "/unverified/x").status == 200
    # A refused certificate does not spoil the trusted resource's connections.
    assert get(ap, "/trusted/y").status == 200


# a pooled connection closed as the request reaches it ---------------------------------------


class ClosingOnSecondRequest:
    """A backend whose first connection answers one request, keeps the connection, and
    closes it unanswered when the next request's bytes arrive (a backend draining its idle
    connections as the AP reuses one); every later connection answers with what it read.
    ``bodies``: the request bodies it answered, in order."""

    def __init__(self, slow_reconnect: bool = False) -> None:
        # slow_reconnect: no accept queue to speak of, and no accept for 0.6 s after the
        # close; a connection parked in the queue (the test's) makes the AP's next connect
        # wait for its SYN to be sent again (about 1 s).
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self.listener.getsockname()[1]
        self.bodies: list[bytes] = []
        self.connections = 0
        self.slow_reconnect = slow_reconnect
        self._accepting = threading.Event()
        self._accepting.set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        while True:
            self._accepting.wait()
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()
            if self.slow_reconnect and self.connections == 1:
                self._accepting.clear()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            while True:
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                if number == 1 and self.bodies:
                    # The second request on the first connection: closed unread.
                    threading.Timer(0.6, self._accepting.set).start()
                    return
                data += chunk
                head, sep, rest = data.partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(rest) < length:
                    continue
                body, data = rest[:length], rest[length:]
                self.bodies.append(body)
                answer = b"got " + body
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )

    def __enter__(self) -> ClosingOnSecondRequest:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()


@pytest.mark.parametrize("size", [20, 16 << 10])
def test_a_post_on_a_pooled_connection_closed_unanswered_goes_again(
    start_ap: StartAP, size: int
) -> None:
    """The form of a sign-in posted as its Policy service drains: sent once more on a new
    connection with the same body, not a 502 (a body up to 16 KiB is kept for that)."""
    with ClosingOnSecondRequest() as backend:
        ap = start_ap([resource([backend.url])])
        assert get(ap, "/first").status == 200
        body = (b"username=carol&password=" + b"x" * size)[:size]
        resp = get(ap, "/login", method="POST", body=body)
        assert resp.status == 200, resp.body[:200]
        assert resp.body == b"got " + body
        assert backend.bodies == [b"", body]  # answered once, whole
        assert backend.connections == 2


def test_a_post_with_a_larger_body_is_not_kept_to_go_again(start_ap: StartAP) -> None:
    """A body over 16 KiB is streamed, not kept: the same failure is a 502 page."""
    with ClosingOnSecondRequest() as backend:
        ap = start_ap([resource([backend.url])])
        assert get(ap, "/first").status == 200
        resp = get(ap, "/upload", method="POST", body=b"y" * ((16 << 10) + 1))
        assert_error_page(resp, 502)
        assert backend.bodies == [b""]


@pytest.mark.parametrize(("pause", "slow_reconnect"), [(0.0, False), (0.3, False), (0.3, True)])
def test_a_post_whose_body_comes_in_parts_goes_again_whole(
    start_ap: StartAP, pause: float, slow_reconnect: bool
) -> None:
    """The head and the first part reach the closing connection; the rest comes after the
    AP made a new one, or (``slow_reconnect``) while it still waits for it: the backend gets
    the whole body once."""
    with ClosingOnSecondRequest(slow_reconnect) as backend:
        ap = start_ap([resource([backend.url], read_timeout=5, connect_timeout=5)])
        assert get(ap, "/first").status == 200
        # Parked in the accept queue (one place): the AP's next connect waits.
        parked = socket.create_connection(("127.0.0.1", backend.port)) if slow_reconnect else None
        body = b"username=carol&password=" + b"p" * 2000
        head = request_bytes(
            "POST",
            "/login",
            [
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Content-Length", str(len(body))),
            ],
        )
        with WireClient(ap.host, ap.port, timeout=15) as client:
            client.send(head + body[:100])
            time.sleep(pause)
            client.send(body[100:])
            resp = client.read_response("POST")
        if parked is not None:
            parked.close()
        assert resp.status == 200, resp.body[:200]
        assert resp.body == b"got " + body
        assert backend.bodies == [b"", body]

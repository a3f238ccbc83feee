"""TLS on the Access Point's own listener, against a real AP process: TLS 1.2 and 1.3, ALPN,
SNI, certificate reload on SIGHUP without dropping connections, the HTTP→HTTPS redirect, HSTS,
and clear errors for unusable certificate or key files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.certs import Pair, TestCA, serial_of, serial_of_file
from tests.support.http_wire import WireClient
from tests.support.processes import GATEHOUSE, Service, free_port, wait_port, write_config
from tests.support.recording_backend import RecordingBackend, Reply

StartAP = Callable[..., Service]


def tls_client(
    ap: Service,
    ca: Path,
    server_name: str | None = "localhost",
    version: ssl.TLSVersion | None = None,
    session: ssl.SSLSession | None = None,
    ctx: ssl.SSLContext | None = None,
) -> WireClient:
    """A :class:`WireClient` whose socket speaks TLS to ``ap`` (SNI ``server_name``),
    resuming ``session`` if given (made with ``ctx``, as a session must be)."""
    if ctx is None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.check_hostname = False  # the tests check which certificate came, by serial
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    client = WireClient(ap.host, ap.port, timeout=15)
    try:
        client.sock = ctx.wrap_socket(client.sock, server_hostname=server_name, session=session)
    except BaseException:
        client.close()
        raise
    return client


def tls_sock(client: WireClient) -> ssl.SSLSocket:
    assert isinstance(client.sock, ssl.SSLSocket)
    return client.sock


def served_serial(client: WireClient) -> int:
    der = tls_sock(client).getpeercert(True)
    assert der is not None
    return serial_of(der)


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


def app(backend: Service) -> dict[str, Any]:
    return {"id": "app", "path_prefix": "/", "backends": [backend.url], "public": True}


def tls_settings(*pairs: Pair, **extra: Any) -> dict[str, Any]:
    return {
        "tls": {
            "certificates": [{"cert_file": str(p.cert), "key_file": str(p.key)} for p in pairs],
            **extra,
        }
    }


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_handshake_alpn_and_a_proxied_request(
    start_ap: StartAP, demo_backend: Service, ca: TestCA, version: ssl.TLSVersion
) -> None:
    pair = ca.issue("ap", ["localhost", "127.0.0.1"])
    ap = start_ap([app(demo_backend)], tls_settings(pair))
    with tls_client(ap, ca.path, version=version) as client:
        sock = tls_sock(client)
        assert sock.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2"}.get(version, "TLSv1.3")
        assert sock.selected_alpn_protocol() == "http/1.1"
        response = client.request("GET", "/hello?x=1", [("Host", "localhost")])
        assert response.status == 200
        echoed = {k.lower(): v for k, v in response.json()["headers"]}
        assert echoed["x-forwarded-proto"] == "https"
        assert "proto=https" in echoed["forwarded"]
        # HSTS is on by default with TLS (one year, no includeSubDomains).
        assert response.header("Strict-Transport-Security") == "max-age=31536000"
        # Keep-alive over TLS: a second request on the same connection.
        assert client.request("GET", "/again", [("Host", "localhost")]).status == 200


def test_minimum_version_13_refuses_a_tls12_client(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> None:
    pair = ca.issue("ap", ["localhost"])
    ap = start_ap([app(demo_backend)], tls_settings(pair, min_version="1.3"))
    with pytest.raises(ssl.SSLError):
        tls_client(ap, ca.path, version=ssl.TLSVersion.TLSv1_2).close()
    with tls_client(ap, ca.path, version=ssl.TLSVersion.TLSv1_3) as client:
        assert client.request("GET", "/", [("Host", "localhost")]).status == 200


def test_sni_picks_the_certificate_by_its_names_or_configured_hosts(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> None:
    default = ca.issue("default", ["default.test"])
    shop = ca.issue("shop", ["shop.test", "*.shop.test"])
    other = ca.issue("other", ["ignored.invalid"])
    settings = tls_settings(default, shop)
    settings["tls"]["certificates"].append(
        {"cert_file": str(other.cert), "key_file": str(other.key), "hosts": ["wiki.test"]}
    )
    ap = start_ap([app(demo_backend)], settings)
    cases = {
        "default.test": default,
        "shop.test": shop,
        "www.shop.test": shop,
        "a.b.shop.test": default,  # a wildcard covers one label only
        "wiki.test": other,
        "ignored.invalid": other,
        "unknown.test": default,
        None: default,
    }
    for name, pair in cases.items():
        with tls_client(ap, ca.path, server_name=name) as client:
            assert served_serial(client) == serial_of_file(pair.cert), name
            assert client.request("GET", "/", [("Host", name or "x")]).status == 200


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_sessions_resume_on_every_worker(
    start_ap: StartAP, demo_backend: Service, ca: TestCA, version: ssl.TLSVersion
) -> None:
    """The workers share the session ticket keys (made once, before the fork): a session
    resumes whichever worker the kernel hands the next connection to. With a key per worker,
    each of these connections would go to the other worker half the time and get a full
    handshake (all 12 resuming by chance: 1 in 2**12)."""
    pair = ca.issue("ap", ["localhost"])
    ap = start_ap([app(demo_backend)], tls_settings(pair), workers=2)
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.minimum_version = ctx.maximum_version = version
    with tls_client(ap, ca.path, ctx=ctx) as client:
        # TLS 1.3 tickets come after the handshake: read an answer before taking the session.
        assert client.request("GET", "/", [("Host", "localhost")]).status == 200
        session = tls_sock(client).session
    resumed = []
    for _ in range(12):
        with tls_client(ap, ca.path, session=session, ctx=ctx) as client:
            assert client.request("GET", "/", [("Host", "localhost")]).status == 200
            resumed.append(tls_sock(client).session_reused)
            session = tls_sock(client).session
    assert resumed == [True] * 12


def test_sighup_reload_swaps_the_certificate_and_keeps_open_connections(
    start_ap: StartAP, demo_backend: Service, ca: TestCA, tmp_path: Path
) -> None:
    first = ca.issue("live", ["localhost"])
    old_serial = serial_of_file(first.cert)
    ap = start_ap([app(demo_backend)], tls_settings(first), workers=2)
    kept = tls_client(ap, ca.path)
    assert kept.request("GET", "/before", [("Host", "localhost")]).status == 200
    # Certificate renewal: new files replace the old ones under the same names.
    renewed = ca.issue("renewed", ["localhost"])
    os.replace(renewed.cert, first.cert)
    os.replace(renewed.key, first.key)
    new_serial = serial_of_file(first.cert)
    assert new_serial != old_serial
    ap.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30  # reloading under a loaded suite
    seen: set[int] = set()
    while time.monotonic() < deadline:
        # Both workers must have reloaded: several new connections all get the new one.
        seen = set()
        for _ in range(8):
            with tls_client(ap, ca.path) as client:
                seen.add(served_serial(client))
        if seen == {new_serial}:
            break
        time.sleep(0.1)
    assert seen == {new_serial}
    # The connection opened before the reload is still up, with its own certificate.
    assert served_serial(kept) == old_serial
    response = kept.request("GET", "/after", [("Host", "localhost")])
    assert response.status == 200
    kept.close()
    assert "TLS certificates reloaded" in ap.output()


def test_a_reload_with_a_bad_key_keeps_the_running_certificate(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> None:
    pair = ca.issue("ap", ["localhost"])
    serial = serial_of_file(pair.cert)
    ap = start_ap([app(demo_backend)], tls_settings(pair))
    # One answer first: the worker's event loop runs, so its SIGHUP handler is installed (the
    # listening socket accepts before that, and a SIGHUP until then is ignored).
    with tls_client(ap, ca.path) as client:
        assert served_serial(client) == serial
    pair.key.write_bytes(ca.issue("stranger", ["x"]).key.read_bytes())
    ap.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30  # reloading under a loaded suite
    while "reload refused" not in ap.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "access_point.tls.certificates[0].key_file" in ap.output()
    with tls_client(ap, ca.path) as client:
        assert served_serial(client) == serial
        assert client.request("GET", "/", [("Host", "localhost")]).status == 200


def test_plain_http_listener_redirects_to_https(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> None:
    pair = ca.issue("ap", ["localhost"])
    redirect_port = free_port()
    ap = start_ap(
        [app(demo_backend)],
        tls_settings(pair, redirect_listen=f"127.0.0.1:{redirect_port}"),
    )
    wait_port("127.0.0.1", redirect_port)
    with WireClient("127.0.0.1", redirect_port) as client:
        response = client.request("GET", "/some/path?q=1&r=2", [("Host", "shop.test:8080")])
    assert response.status == 308
    assert response.header("Location") == f"https://shop.test:{ap.port}/some/path?q=1&r=2"
    assert response.header("Connection") == "close"
    with WireClient("127.0.0.1", redirect_port) as client:
        response = client.request("POST", "/login", [("Host", "[::1]:80")], body=b"secret")
    assert response.status == 308
    assert response.header("Location") == f"https://[::1]:{ap.port}/login"
    # Nothing is proxied in clear: no Host, no redirect.
    with WireClient("127.0.0.1", redirect_port) as client:
        response = client.request("GET", "/", version="1.0")
    assert response.status == 400


def test_redirect_status_and_port_are_configurable(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> None:
    pair = ca.issue("ap", ["localhost"])
    redirect_port = free_port()
    start_ap(
        [app(demo_backend)],
        tls_settings(
            pair,
            redirect_listen=f"127.0.0.1:{redirect_port}",
            redirect_status=301,
            redirect_https_port=443,
        ),
    )
    wait_port("127.0.0.1", redirect_port)
    with WireClient("127.0.0.1", redirect_port) as client:
        response = client.request("GET", "/x", [("Host", "shop.test")])
    assert response.status == 301
    assert response.header("Location") == "https://shop.test/x"


def test_hsts_settings(start_ap: StartAP, demo_backend: Service, ca: TestCA) -> None:
    pair = ca.issue("ap", ["localhost"])
    ap = start_ap(
        [app(demo_backend)], tls_settings(pair, hsts_max_age="1440m", hsts_include_subdomains=True)
    )
    with tls_client(ap, ca.path) as client:
        response = client.request("GET", "/", [("Host", "localhost")])
    assert response.header_values("Strict-Transport-Security") == [
        "max-age=86400; includeSubDomains"
    ]
    off = start_ap([app(demo_backend)], tls_settings(pair, hsts_max_age=0), name="off")
    with tls_client(off, ca.path) as client:
        response = client.request("GET", "/", [("Host", "localhost")])
    assert response.header("Strict-Transport-Security") is None


def test_the_aps_hsts_replaces_the_backends_and_is_relayed_without_it(
    start_ap: StartAP, ca: TestCA
) -> None:
    pair = ca.issue("ap", ["localhost"])
    theirs = [(b"Strict-Transport-Security", b"max-age=5"), (b"X-A", b"1")]
    with RecordingBackend(lambda request: Reply(headers=theirs)) as backend:
        resource = {"id": "app", "path_prefix": "/", "backends": [backend.url], "public": True}
        ap = start_ap([resource], tls_settings(pair))
        with tls_client(ap, ca.path) as client:
            response = client.request("GET", "/", [("Host", "localhost")])
        assert response.header_values("Strict-Transport-Security") == ["max-age=31536000"]
        assert response.header("X-A") == "1"
        # HSTS off, or no TLS: the backend's own field goes through as it came.
        off = start_ap([resource], tls_settings(pair, hsts_max_age=0), name="off")
        with tls_client(off, ca.path) as client:
            response = client.request("GET", "/", [("Host", "localhost")])
        assert response.header_values("Strict-Transport-Security") == ["max-age=5"]
        plain = start_ap([resource], name="plain")
        with WireClient(plain.host, plain.port) as client:
            response = client.request("GET", "/")
        assert response.header_values("Strict-Transport-Security") == ["max-age=5"]


def test_plain_listener_sends_no_hsts(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([app(demo_backend)])
    with WireClient(ap.host, ap.port) as client:
        response = client.request("GET", "/")
    assert response.status == 200
    assert response.header("Strict-Transport-Security") is None
    echoed = {k.lower(): v for k, v in response.json()["headers"]}
    assert echoed["x-forwarded-proto"] == "http"


# bad input: a clear error naming the file and the field, no traceback ---------------------


def run_ap(
    tmp_path: Path, settings: dict[str, Any], prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    port = free_port()
    path = write_config(
        tmp_path / "bad.yaml",
        {"access_point": {"listen": f"127.0.0.1:{port}", **settings}, "resources": []},
    )
    return subprocess.run(
        [*prefix, *GATEHOUSE, "access-point", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_missing_key_file_is_a_clear_error(tmp_path: Path, ca: TestCA) -> None:
    pair = ca.issue("ap", ["localhost"])
    missing = tmp_path / "nowhere.key"
    result = run_ap(
        tmp_path,
        {"tls": {"certificates": [{"cert_file": str(pair.cert), "key_file": str(missing)}]}},
    )
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert "Traceback" not in out
    assert "access_point.tls.certificates[0].key_file" in out
    assert f"cannot read {missing}: No such file or directory" in out
    assert "bad.yaml" in out


#: Root reads any file (CAP_DAC_OVERRIDE): run as root, the AP starts without that
#: capability and the one to search any directory (util-linux's setpriv), so that a file's
#: mode applies to it as to anyone else.
WITHOUT_FILE_OVERRIDE = (
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
)


def test_an_unreadable_cert_file_is_a_clear_error(tmp_path: Path, ca: TestCA) -> None:
    prefix: Sequence[str] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root reads any file, and setpriv (util-linux) is not here to stop it")
        prefix = WITHOUT_FILE_OVERRIDE
    pair = ca.issue("ap", ["localhost"])
    pair.cert.chmod(0)
    result = run_ap(
        tmp_path,
        {"tls": {"certificates": [{"cert_file": str(pair.cert), "key_file": str(pair.key)}]}},
        prefix,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in out
    assert "access_point.tls.certificates[0].cert_file" in out
    assert "Permission denied" in out


def test_a_key_that_does_not_match_is_a_clear_error(tmp_path: Path, ca: TestCA) -> None:
    first = ca.issue("one", ["localhost"])
    second = ca.issue("two", ["localhost"])
    result = run_ap(
        tmp_path,
        {
            "tls": {
                "certificates": [
                    {"cert_file": str(first.cert), "key_file": str(first.key)},
                    {"cert_file": str(first.cert), "key_file": str(second.key)},
                ]
            }
        },
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in out
    assert "access_point.tls.certificates[1].key_file" in out
    assert f"{second.key} is not the private key of {first.cert}" in out


def test_a_file_that_is_no_certificate_is_a_clear_error(tmp_path: Path, ca: TestCA) -> None:
    pair = ca.issue("ap", ["localhost"])
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    result = run_ap(
        tmp_path,
        {"tls": {"certificates": [{"cert_file": str(junk), "key_file": str(pair.key)}]}},
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in out
    assert "access_point.tls.certificates[0]" in out
    assert str(junk) in out


def test_inline_pem_is_refused_by_the_model(tmp_path: Path, ca: TestCA) -> None:
    pair = ca.issue("ap", ["localhost"])
    result = run_ap(
        tmp_path,
        {
            "tls": {
                "certificates": [{"cert_file": str(pair.cert), "key_file": pair.key.read_text()}]
            }
        },
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in out
    assert "access_point.tls.certificates[0].key_file" in out
    assert "not the PEM text itself" in out


def test_tls_listener_is_not_plain_http(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> None:
    pair = ca.issue("ap", ["localhost"])
    ap = start_ap([app(demo_backend)], tls_settings(pair))
    with socket.create_connection((ap.host, ap.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = sock.recv(4096)
    assert b"200 OK" not in data
    assert b"x-forwarded-proto" not in data.lower()


def test_a_managed_ap_refuses_a_published_view_naming_a_missing_key(
    tmp_path: Path, ca: TestCA
) -> None:
    """What a managed AP acknowledges when Admin publishes TLS files its host lacks."""
    from gatehouse.access_point.managed import ViewCheck
    from gatehouse.access_point.server import Overrides
    from gatehouse.errors import ConfigError

    pair = ca.issue("ap", ["localhost"])
    view = {
        "access_point": {
            "tls": {
                "certificates": [
                    {"cert_file": str(pair.cert), "key_file": str(pair.key)},
                    {"cert_file": str(pair.cert), "key_file": str(tmp_path / "gone.key")},
                ]
            }
        },
        "resources": [],
    }
    with pytest.raises(ConfigError) as caught:
        ViewCheck(Overrides())(view)
    message = str(caught.value)
    assert message.startswith("the published configuration: ")
    assert "access_point.tls.certificates[1].key_file: cannot read" in message
    assert str(tmp_path / "gone.key") in message


def test_clients_closing_tls_connections_leave_no_warnings(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> None:
    pair = ca.issue("ap", ["localhost"])
    ap = start_ap([app(demo_backend)], tls_settings(pair))
    for _ in range(5):
        with tls_client(ap, ca.path) as client:
            assert client.request("GET", "/", [("Host", "localhost")]).status == 200
    with tls_client(ap, ca.path) as client:
        assert client.request("GET", "/", [("Host", "localhost")]).status == 200
        tls_sock(client).unwrap()  # close_notify, then EOF
    time.sleep(0.5)
    # A TLS transport cannot half-close: the AP must not ask for it (asyncio would warn on
    # every connection its client closed).
    assert "eof_received" not in ap.output()
    assert "WARNING" not in ap.output()


def test_a_reload_turning_tls_off_is_refused(
    start_ap: StartAP, demo_backend: Service, ca: TestCA
) -> None:
    pair = ca.issue("ap", ["localhost"])
    ap = start_ap([app(demo_backend)], tls_settings(pair))
    with tls_client(ap, ca.path) as client:  # the worker runs: its SIGHUP handler is set
        assert client.request("GET", "/", [("Host", "localhost")]).status == 200
    path: Path = ap.config_path  # type: ignore[attr-defined]
    write_config(
        path,
        {"access_point": {"listen": f"127.0.0.1:{ap.port}"}, "resources": [app(demo_backend)]},
    )
    ap.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30  # reloading under a loaded suite
    while "needs a restart" not in ap.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "reload refused: turning TLS on or off needs a restart" in ap.output()
    with tls_client(ap, ca.path) as client:
        response = client.request("GET", "/", [("Host", "localhost")])
    assert response.status == 200
    assert response.header("Strict-Transport-Security") == "max-age=31536000"

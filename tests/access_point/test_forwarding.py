"""What the Access Point forwards, checked end to end through a real AP process.

The demo backend echoes the request it got as JSON (names lowercased by uvicorn); the
RecordingBackend keeps names, case and order exactly as they arrived.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from gatehouse.config.access_point import DEFAULT_IDENTITY_HEADERS
from tests.conftest import StartAP
from tests.support.processes import Service
from tests.support.raw_client import exchange, parse_responses
from tests.support.recording_backend import RecordingBackend, Reply

Headers = Sequence[tuple[str, str]]
HOST = "example.test"


def request(
    svc: Service,
    method: str,
    target: str,
    headers: Headers = (),
    body: bytes | None = None,
    host: str | None = HOST,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request with exactly the given header fields (plus Host unless ``host`` is None)."""
    conn = http.client.HTTPConnection(svc.host, svc.port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def echo(svc: Service, target: str, headers: Headers = (), **kwargs: Any) -> dict[str, Any]:
    status, response_headers, body = request(svc, "GET", target, headers, **kwargs)
    assert status == 200, body[:300]
    document: dict[str, Any] = json.loads(body)
    document["response_headers"] = response_headers
    return document


def values(document: dict[str, Any], name: str) -> list[str]:
    """Values of every field ``name`` the demo backend received."""
    return [v for n, v in document["headers"] if n.lower() == name.lower()]


def names(document: dict[str, Any]) -> set[str]:
    return {n.lower() for n, _ in document["headers"]}


def public(backend: str, **extra: Any) -> dict[str, Any]:
    return {"id": "app", "backends": [backend], "public": True, **extra}


@pytest.fixture
def recording() -> Iterator[RecordingBackend]:
    with RecordingBackend() as backend:
        yield backend


# hop-by-hop ---------------------------------------------------------------------------------------


def test_hop_by_hop_fields_are_removed(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([public(demo_backend.url)])
    got = echo(
        ap,
        "/",
        [
            ("Connection", "keep-alive, X-Custom, x-other-hop"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-Custom", "must not pass"),
            ("X-Other-Hop", "must not pass"),
            ("X-Kept", "yes"),
        ],
    )
    removed = {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
        "x-custom",
        "x-other-hop",
    }
    assert not names(got) & removed, got["headers"]
    assert values(got, "X-Kept") == ["yes"]


def test_end_to_end_fields_keep_order_case_and_value(
    start_ap: StartAP, recording: RecordingBackend
) -> None:
    ap = start_ap([public(recording.url)])
    sent = [
        ("X-B", "2"),
        ("x-a", "1"),
        ("Accept", "text/html;q=0.9, */*;q=0.1"),
        ("X-B", "again,  with  spaces"),
        ("Cookie", "a=1; b=2"),
    ]
    status, _, _ = request(ap, "GET", "/ordered", sent)
    assert status == 200
    (got,) = recording.requests
    assert got.headers[0] == (b"Host", f"127.0.0.1:{recording.port}".encode())
    forwarded = [(n.decode(), v.decode()) for n, v in got.headers if n.lower().startswith(b"x-")]
    forwarded = [h for h in forwarded if not h[0].lower().startswith("x-forwarded")]
    assert forwarded == [("X-B", "2"), ("x-a", "1"), ("X-B", "again,  with  spaces")]
    assert got.header_values(b"Accept") == [b"text/html;q=0.9, */*;q=0.1"]
    assert got.header_values(b"Cookie") == [b"a=1; b=2"]


def test_response_hop_by_hop_fields_are_removed(
    start_ap: StartAP, recording: RecordingBackend
) -> None:
    recording.responder = lambda _: Reply(
        headers=[
            (b"Connection", b"X-Backend-Secret"),
            (b"X-Backend-Secret", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"X-Public", b"yes"),
        ]
    )
    ap = start_ap([public(recording.url)])
    status, headers, body = request(ap, "GET", "/")
    assert (status, body) == (200, b"ok")
    got = {n.lower(): v for n, v in headers}
    assert got["x-public"] == "yes"
    assert "x-backend-secret" not in got
    assert "keep-alive" not in got
    assert "proxy-authenticate" not in got


# forwarding fields --------------------------------------------------------------------------------


CLIENT_FORWARDING = [
    ("X-Forwarded-For", "203.0.113.9, 198.51.100.2"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "public.example"),
    ("Forwarded", "for=203.0.113.9;proto=https"),
    ("X-Real-IP", "203.0.113.9"),
]


def test_forwarding_fields_from_an_untrusted_peer_are_replaced(
    start_ap: StartAP, demo_backend: Service
) -> None:
    ap = start_ap([public(demo_backend.url)])
    got = echo(ap, "/", CLIENT_FORWARDING)
    assert values(got, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(got, "X-Forwarded-Proto") == ["http"]
    assert values(got, "X-Forwarded-Host") == [HOST]
    assert values(got, "Forwarded") == [f"for=127.0.0.1;proto=http;host={HOST}"]
    assert all("203.0.113.9" not in v for _, v in got["headers"]), got["headers"]


def test_forwarding_fields_are_set_without_client_values(
    start_ap: StartAP, demo_backend: Service
) -> None:
    ap = start_ap([public(demo_backend.url)])
    got = echo(ap, "/", host=f"{HOST}:8443")
    assert values(got, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(got, "X-Forwarded-Proto") == ["http"]
    assert values(got, "X-Forwarded-Host") == [f"{HOST}:8443"]
    assert values(got, "Forwarded") == [f"for=127.0.0.1;proto=http;host={HOST}:8443"]


def test_trusted_proxy_chain_is_kept_and_the_peer_appended(
    start_ap: StartAP, demo_backend: Service
) -> None:
    ap = start_ap([public(demo_backend.url)], {"trusted_proxies": ["127.0.0.0/8"]})
    got = echo(ap, "/", CLIENT_FORWARDING)
    assert values(got, "X-Forwarded-For") == ["203.0.113.9, 198.51.100.2, 127.0.0.1"]
    assert values(got, "X-Forwarded-Proto") == ["https"]
    assert values(got, "X-Forwarded-Host") == ["public.example"]
    (forwarded,) = values(got, "Forwarded")
    assert forwarded.startswith("for=203.0.113.9;proto=https, ")
    assert forwarded.endswith(f"for=127.0.0.1;proto=http;host={HOST}")
    assert "x-real-ip" not in names(got)

    # A trusted peer that sends no chain gets the same fields an untrusted one would.
    plain = echo(ap, "/")
    assert values(plain, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(plain, "X-Forwarded-Proto") == ["http"]


def test_trusted_proxies_elsewhere_do_not_trust_this_peer(
    start_ap: StartAP, demo_backend: Service
) -> None:
    ap = start_ap([public(demo_backend.url)], {"trusted_proxies": ["10.0.0.0/8"]})
    got = echo(ap, "/", CLIENT_FORWARDING)
    assert values(got, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(got, "X-Forwarded-Proto") == ["http"]


# Via ----------------------------------------------------------------------------------------------


def test_via_is_added_to_request_and_response(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([public(demo_backend.url)])
    got = echo(ap, "/", [("Via", "1.0 front-lb")])
    via = ", ".join(values(got, "Via"))
    assert via.startswith("1.0 front-lb")
    assert via.endswith("1.1 gatehouse")
    response_via = [v for n, v in got["response_headers"] if n.lower() == "via"]
    assert response_via
    assert response_via[-1].endswith("1.1 gatehouse")


def test_via_uses_the_pseudonym_and_the_client_version(
    start_ap: StartAP, recording: RecordingBackend
) -> None:
    ap = start_ap([public(recording.url)], {"via_pseudonym": "edge-7"})
    data = b"GET /v HTTP/1.0\r\nHost: example.test\r\n\r\n"
    response, closed = exchange(ap.host, ap.port, data)
    (reply,) = parse_responses(response)
    assert reply.status == 200
    assert closed
    (got,) = recording.requests
    assert got.header_values(b"Via") == [b"1.0 edge-7"]
    assert reply.header(b"Via") == b"1.1 edge-7"


# identity headers ---------------------------------------------------------------------------------


IDENTITY_SPOOF = [
    ("Remote-User", "admin"),
    ("remote-groups", "admins"),
    ("REMOTE-EMAIL", "admin@example.test"),
    ("rEmOtE-nAmE", "Admin"),
    ("Remote_User", "admin"),
    ("X-Auth-User", "admin"),
    ("x-auth-user", "admin"),
    ("X-Harmless", "kept"),
]


def test_identity_headers_never_reach_the_backend(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([public(demo_backend.url)])
    got = echo(ap, "/", IDENTITY_SPOOF)
    received = names(got)
    for name in DEFAULT_IDENTITY_HEADERS:
        assert name.lower() not in received, got["headers"]
    assert "remote_user" not in received
    assert values(got, "X-Harmless") == ["kept"]
    # Not an identity header unless configured.
    assert values(got, "X-Auth-User") == ["admin", "admin"]


def test_custom_identity_headers_never_reach_the_backend(
    start_ap: StartAP, demo_backend: Service
) -> None:
    settings = {"identity_headers": [*DEFAULT_IDENTITY_HEADERS, "X-Auth-User"]}
    ap = start_ap([public(demo_backend.url)], settings)
    got = echo(ap, "/", IDENTITY_SPOOF)
    received = names(got)
    for name in [*DEFAULT_IDENTITY_HEADERS, "X-Auth-User", "Remote_User"]:
        assert name.lower() not in received, got["headers"]
    assert values(got, "X-Harmless") == ["kept"]


def test_identity_headers_are_dropped_whatever_the_transfer(
    start_ap: StartAP, recording: RecordingBackend
) -> None:
    # Also on a chunked POST, and when the client hides a name in a Connection list.
    ap = start_ap([public(recording.url)])
    data = (
        b"POST /p HTTP/1.1\r\nHost: example.test\r\nConnection: Remote-User, close\r\n"
        b"Remote-User: admin\r\nREMOTE-USER: root\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\ndata\r\n0\r\n\r\n"
    )
    response, closed = exchange(ap.host, ap.port, data)
    assert [r.status for r in parse_responses(response)] == [200]
    assert closed
    (got,) = recording.requests
    assert got.body == b"data"
    assert got.header_values(b"Remote-User") == []
    assert b"admin" not in recording.raw_bytes
    assert b"root" not in recording.raw_bytes


# routing and rewriting ----------------------------------------------------------------------------


def test_strip_prefix(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap(
        [
            public(demo_backend.url, id="stripped", path_prefix="/app", strip_prefix=True),
            public(demo_backend.url, id="kept", path_prefix="/keep"),
        ]
    )
    got = echo(ap, "/app/x/y?q=1")
    assert (got["path"], got["query"]) == ("/x/y", "q=1")
    assert echo(ap, "/app")["path"] == "/"
    assert echo(ap, "/app/")["path"] == "/"
    assert echo(ap, "/keep/x")["path"] == "/keep/x"


def test_backend_base_path(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([public(demo_backend.url + "/base", path_prefix="/", strip_prefix=True)])
    assert echo(ap, "/x?k=v")["path"] == "/base/x"


def test_backend_base_path_with_a_shared_backend(start_ap: StartAP, demo_backend: Service) -> None:
    # Two resources on the same backend host and port, with different base paths: each keeps
    # its own.
    url = demo_backend.url
    ap = start_ap(
        [
            public(url, id="plain", path_prefix="/plain", strip_prefix=True),
            public(url + "/base", id="based", path_prefix="/based", strip_prefix=True),
            public(url + "/other", id="other", path_prefix="/other"),
        ]
    )
    assert echo(ap, "/plain/x")["path"] == "/x"
    assert echo(ap, "/based/x")["path"] == "/base/x"
    assert echo(ap, "/other/x")["path"] == "/other/other/x"


def test_preserve_host(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap(
        [
            public(demo_backend.url, id="preserved", path_prefix="/p", preserve_host=True),
            public(demo_backend.url, id="replaced", path_prefix="/r", preserve_host=False),
        ]
    )
    sent = f"{HOST}:8080"
    preserved = echo(ap, "/p", host=sent)
    assert values(preserved, "Host") == [sent]
    replaced = echo(ap, "/r", host=sent)
    assert values(replaced, "Host") == [f"{demo_backend.host}:{demo_backend.port}"]
    # Either way the backend can still learn what the client asked for.
    assert values(replaced, "X-Forwarded-Host") == [sent]


def test_longest_prefix_and_host_routing(start_ap: StartAP) -> None:
    labels = ["root", "api", "api-v2", "host", "wild"]
    with contextlib.ExitStack() as stack:
        backends = {label: stack.enter_context(RecordingBackend()) for label in labels}
        ap = start_ap(
            [
                public(backends["root"].url, id="root", path_prefix="/"),
                public(backends["api"].url, id="api", path_prefix="/api"),
                public(backends["api-v2"].url, id="api-v2", path_prefix="/api/v2"),
                public(backends["host"].url, id="host", hosts=["api.example.test"]),
                public(backends["wild"].url, id="wild", hosts=["*.example.test"]),
            ]
        )
        cases = [
            (HOST, "/", "root"),
            (HOST, "/x", "root"),
            (HOST, "/api", "api"),
            (HOST, "/api/x", "api"),
            (HOST, "/apix", "root"),
            (HOST, "/api/v2", "api-v2"),
            (HOST, "/api/v2/x", "api-v2"),
            (HOST, "/api/v20", "api"),
            ("api.example.test", "/api/x", "host"),
            ("API.Example.Test:1234", "/y", "host"),
            ("www.example.test", "/api/x", "wild"),
            ("a.b.example.test", "/", "wild"),
        ]
        for host, path, expected in cases:
            for backend in backends.values():
                backend.reset()
            status, _, _ = request(ap, "GET", path, host=host)
            assert status == 200, (host, path)
            reached = [n for n, b in backends.items() if b.requests]
            assert reached == [expected], (host, path)
            assert backends[expected].requests[0].target == path.encode()


def test_unmatched_host_or_path_is_404(start_ap: StartAP, recording: RecordingBackend) -> None:
    ap = start_ap([public(recording.url, hosts=["only.example.test"], path_prefix="/app")])
    for host, path in [("other.test", "/app"), ("only.example.test", "/other")]:
        status, headers, body = request(ap, "GET", path, host=host)
        assert status == 404, (host, path)
        assert dict(headers)["Content-Type"].startswith("text/html")
        assert b"No resource is configured" in body
    assert recording.requests == []
    status, _, _ = request(ap, "GET", "/app/x", host="only.example.test")
    assert status == 200


def test_protected_resource_without_policy_service_is_503(
    start_ap: StartAP, recording: RecordingBackend
) -> None:
    ap = start_ap([{"id": "private", "backends": [recording.url], "public": False}])
    status, _, body = request(ap, "GET", "/secret")
    assert status == 503
    assert "no policy service" in body.decode().lower()
    assert recording.requests == []
    assert recording.accepted == 0


def test_health(start_ap: StartAP, recording: RecordingBackend) -> None:
    ap = start_ap([public(recording.url)])
    status, headers, body = request(ap, "GET", "/_gatehouse/health")
    assert status == 200
    assert dict(headers)["Content-Type"] == "application/json"
    assert body == b'{"status":"ok"}'  # up or down only: details on the status listener
    status, _, body = request(ap, "HEAD", "/_gatehouse/health")
    assert (status, body) == (200, b"")
    status, _, _ = request(ap, "GET", "/_gatehouse/nothing")
    assert status == 404
    # The reserved prefix is answered by the AP, even with a catch-all resource.
    assert recording.requests == []


# targets ------------------------------------------------------------------------------------------


QUERIES = [
    "a=1",
    "a=1&a=2&b",
    "x=%20y+z&c=%2F%2f&e=%C3%A9",
    "path=/../etc//passwd&dot=./.",
    "q=a%26b%3Dc",
    "=&&=",
    "?",
]


def test_query_string_is_forwarded_unchanged(
    start_ap: StartAP, recording: RecordingBackend
) -> None:
    ap = start_ap([public(recording.url)])
    wrong = []
    for query in QUERIES:
        recording.reset()
        status, _, _ = request(ap, "GET", "/q?" + query)
        assert status == 200, query
        (got,) = recording.requests
        if got.target != b"/q?" + query.encode():
            wrong.append((query, got.target))
    assert wrong == []


def test_empty_query_keeps_its_question_mark(
    start_ap: StartAP, recording: RecordingBackend
) -> None:
    # An empty query is still a query: "/q?" is not "/q" (RFC 3986 §6.2.3).
    ap = start_ap([public(recording.url)])
    status, _, _ = request(ap, "GET", "/q?")
    assert status == 200
    (got,) = recording.requests
    assert got.target == b"/q?"


NORMALISED = [
    ("//a/./b/../c", "/a/c"),
    ("/a//b///c", "/a/b/c"),
    ("/a/b/../../c/", "/c/"),
    ("/%7Euser/%41", "/~user/A"),
    ("/a%2Fb", "/a%2Fb"),
    ("/a%20b", "/a%20b"),
    ("/x/./y/.", "/x/y/"),
]


def test_path_is_normalised(start_ap: StartAP, demo_backend: Service) -> None:
    ap = start_ap([public(demo_backend.url)])
    wrong = []
    for sent, forwarded in NORMALISED:
        got = echo(ap, sent + "?k=v")
        assert got["query"] == "k=v"
        if got["path"] != forwarded:
            wrong.append((sent, got["path"], forwarded))
    assert wrong == []

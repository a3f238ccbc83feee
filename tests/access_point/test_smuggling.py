"""Request smuggling and malformed requests, sent raw to a real Access Point.

Every case goes on a fresh connection to an AP whose only resource is public and routes to a
:class:`RecordingBackend`. Each must be refused with the right status, the connection closed
after the error page, and the backend must see nothing the client should not have got through:
no request at all when the first request is refused, exactly the valid request when one
precedes the bad one in the same write (RFC 9112 §6.3, §11.2; RFC 9110 §5.5).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Service, free_port, write_config
from tests.support.raw_client import exchange, parse_responses, statuses
from tests.support.recording_backend import RecordingBackend

MAX_REQUEST_LINE = 1024
MAX_HEADER_BYTES = 4096
#: How long a case waits for the AP to close; only a failing case waits this long.
TIMEOUT = 2.0
#: Time given to a wrongly forwarded request to reach the backend before it is checked.
SETTLE = 0.05

HOST = b"Host: example.test\r\n"
VALID = b"GET /ok HTTP/1.1\r\n" + HOST + b"\r\n"


def post(*headers: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    """A POST to ``/`` with a Host field, the given header lines, and ``body``."""
    lines = b"".join(h + b"\r\n" for h in headers)
    return b"POST / HTTP/" + version + b"\r\n" + HOST + lines + b"\r\n" + body


def get(target: bytes, *headers: bytes, method: bytes = b"GET") -> bytes:
    lines = b"".join(h + b"\r\n" for h in headers)
    return method + b" " + target + b" HTTP/1.1\r\n" + HOST + lines + b"\r\n"


def chunked(body: bytes) -> bytes:
    return post(b"Transfer-Encoding: chunked", body=body)


#: (request bytes, expected status or statuses), refused as the first request on a connection.
CASES = [
    # Content-Length and Transfer-Encoding together (CL.TE / TE.CL desync).
    pytest.param(
        post(b"Content-Length: 6", b"Transfer-Encoding: chunked", body=b"0\r\n\r\nG"),
        400,
        id="cl-then-te",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked", b"Content-Length: 6", body=b"0\r\n\r\nG"),
        400,
        id="te-then-cl",
    ),
    pytest.param(
        post(b"Content-Length: 0", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
        id="cl0-then-te",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked", b"Content-Length: 0", body=b"0\r\n\r\n"),
        400,
        id="te-then-cl0",
    ),
    pytest.param(
        post(b"Content-Length: 4", b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
        400,
        id="cl-then-te-gzip-chunked",
    ),
    # Content-Length values.
    pytest.param(
        post(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
        400,
        id="cl-duplicate-equal",
    ),
    pytest.param(
        post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
        400,
        id="cl-duplicate-differing",
    ),
    pytest.param(post(b"Content-Length: 5, 5", body=b"hello"), 400, id="cl-list-equal"),
    pytest.param(post(b"Content-Length: 5,6", body=b"hello!"), 400, id="cl-list-differing"),
    pytest.param(post(b"Content-Length: +5", body=b"hello"), 400, id="cl-plus-sign"),
    pytest.param(post(b"Content-Length: -5", body=b"hello"), 400, id="cl-negative"),
    pytest.param(post(b"Content-Length: 0x5", body=b"hello"), 400, id="cl-hex"),
    pytest.param(post(b"Content-Length: 5 5", body=b"hello"), 400, id="cl-space-inside"),
    pytest.param(post(b"Content-Length: 1\t0", body=b"0123456789"), 400, id="cl-tab-inside"),
    pytest.param(post(b"Content-Length: ", body=b""), 400, id="cl-empty"),
    pytest.param(post(b"Content-Length: 5.0", body=b"hello"), 400, id="cl-decimal"),
    pytest.param(post(b"Content-Length: 5a", body=b"hello"), 400, id="cl-trailing-letter"),
    pytest.param(post(b"Content-Length: " + b"9" * 20), 400, id="cl-20-digits"),
    pytest.param(post(b"Content-Length: \xd9\xa5", body=b"hello"), 400, id="cl-arabic-digit"),
    # Transfer-Encoding values.
    pytest.param(post(b"Transfer-Encoding: gzip", body=b"hello"), 400, id="te-gzip"),
    pytest.param(post(b"Transfer-Encoding: identity", body=b""), 400, id="te-identity"),
    pytest.param(
        post(b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), 400, id="te-chunked-then-gzip"
    ),
    pytest.param(
        post(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"), 501, id="te-gzip-chunked"
    ),
    pytest.param(
        post(b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        501,
        id="te-gzip-and-chunked-fields",
    ),
    pytest.param(post(b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), 400, id="te-xchunked"),
    pytest.param(
        post(b"Transfer-Encoding: chunked x", body=b"0\r\n\r\n"), 400, id="te-chunked-junk"
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked;q=1", body=b"0\r\n\r\n"), 400, id="te-chunked-param"
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\x0b", body=b"0\r\n\r\n"), 400, id="te-chunked-vtab"
    ),
    pytest.param(
        post(b"Transfer-Encoding: \x0bchunked", body=b"0\r\n\r\n"), 400, id="te-vtab-chunked"
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\x00", body=b"0\r\n\r\n"), 400, id="te-chunked-nul"
    ),
    pytest.param(post(b"Transfer-Encoding: chu nked", body=b"0\r\n\r\n"), 400, id="te-chu-nked"),
    pytest.param(
        post(b"Transfer-Encoding: chunked, chunked", body=b"0\r\n\r\n"), 400, id="te-chunked-twice"
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
        id="te-two-chunked-fields",
    ),
    pytest.param(post(b"Transfer-Encoding: ", body=b"0\r\n\r\n"), 400, id="te-empty"),
    # Transfer-Encoding name obfuscation.
    pytest.param(
        post(b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"), 400, id="te-space-before-colon"
    ),
    pytest.param(
        post(b"Transfer-Encoding\t: chunked", body=b"0\r\n\r\n"), 400, id="te-tab-before-colon"
    ),
    pytest.param(
        post(b"X-Padding: 1", b" Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
        id="te-obs-fold-line",
    ),
    pytest.param(
        post(b"Transfer-Encoding: x", b" chunked", body=b"0\r\n\r\n"), 400, id="te-value-obs-fold"
    ),
    pytest.param(
        post(b"Content-Length: 5", b"Transfer-Encoding:\x0bchunked", body=b"hello"),
        400,
        id="cl-and-te-vtab-separator",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked", body=b"0\r\n\r\n", version=b"1.0"), 400, id="te-http10"
    ),
    # obs-fold and line endings.
    pytest.param(get(b"/", b"X-A: b", b" c"), 400, id="obs-fold-space"),
    pytest.param(get(b"/", b"X-A: b", b"\tc"), 400, id="obs-fold-tab"),
    pytest.param(b"GET / HTTP/1.1\nHost: example.test\n\n", 400, id="bare-lf-everywhere"),
    pytest.param(b"GET / HTTP/1.1\nHost: example.test\r\n\r\n", 400, id="bare-lf-request-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: example.test\nX-A: b\r\n\r\n", 400, id="bare-lf-header"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: example.test\r\n\n", 400, id="bare-lf-end-of-head"),
    pytest.param(b"GET / HTTP/1.1\rHost: example.test\r\n\r\n", 400, id="bare-cr-request-line"),
    pytest.param(get(b"/", b"X-A: b\rc"), 400, id="bare-cr-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\r\n", 400, id="bare-cr-end-of-head"),
    # Header values.
    pytest.param(get(b"/", b"X-A: a\x00b"), 400, id="value-nul"),
    pytest.param(get(b"/", b"X-A: a\x7fb"), 400, id="value-del"),
    pytest.param(get(b"/", b"X-A: a\x01b"), 400, id="value-ctl-01"),
    pytest.param(get(b"/", b"X-A: a\x1bb"), 400, id="value-escape"),
    # Header names.
    pytest.param(get(b"/", b"X A: b"), 400, id="name-space"),
    pytest.param(get(b"/", b'X"A: b'), 400, id="name-quote"),
    pytest.param(get(b"/", b"X(A: b"), 400, id="name-paren"),
    pytest.param(get(b"/", b"X@A: b"), 400, id="name-at"),
    pytest.param(get(b"/", b"X-\xc3\xa9: b"), 400, id="name-non-ascii"),
    pytest.param(get(b"/", b": x"), 400, id="name-empty"),
    pytest.param(get(b"/", b"X-A\x00: b"), 400, id="name-nul"),
    pytest.param(get(b"/", b"X-A"), 400, id="name-without-colon"),
    # Request line.
    pytest.param(get(b"/", method=b"get"), 400, id="method-lowercase"),
    pytest.param(get(b"/", method=b"XYZZY"), 400, id="method-unknown"),
    pytest.param(get(b"/", method=b"G(T"), 400, id="method-invalid-char"),
    # Without a version the request line is an HTTP/0.9 simple-request: either refusal fits.
    pytest.param(b"GET /\r\n" + HOST + b"\r\n", (400, 505), id="version-missing"),
    pytest.param(b"GET / HTTP/0.9\r\n" + HOST + b"\r\n", (400, 505), id="version-0.9"),
    pytest.param(b"GET / HTTP/1.1 \r\n" + HOST + b"\r\n", 400, id="version-trailing-space"),
    pytest.param(b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505, id="version-2.0"),
    pytest.param(b"GET / HTTP/3.0\r\n" + HOST + b"\r\n", 505, id="version-3.0"),
    pytest.param(b"GET / HTTP/1.10\r\n" + HOST + b"\r\n", 400, id="version-1.10"),
    pytest.param(b"GET / http/1.1\r\n" + HOST + b"\r\n", 400, id="version-lowercase"),
    pytest.param(b"GET / HTTP/1.x\r\n" + HOST + b"\r\n", 400, id="version-letter"),
    pytest.param(b"GET\t/ HTTP/1.1\r\n" + HOST + b"\r\n", 400, id="request-line-tab"),
    pytest.param(
        b"GET /\tHTTP/1.1\r\n" + HOST + b"\r\n", 400, id="request-line-tab-before-version"
    ),
    # Request targets.
    pytest.param(get(b"/a\x00b"), 400, id="target-nul"),
    pytest.param(get(b"/caf\xc3\xa9"), 400, id="target-raw-utf8"),
    pytest.param(get(b"/\xff"), 400, id="target-raw-byte-ff"),
    pytest.param(b"GET /a b HTTP/1.1\r\n" + HOST + b"\r\n", 400, id="target-space"),
    pytest.param(get(b"/a#b"), 400, id="target-fragment"),
    pytest.param(get(b"/../etc/passwd"), 400, id="target-dotdot-above-root"),
    pytest.param(get(b"/a/../../etc"), 400, id="target-dotdot-escapes"),
    pytest.param(get(b"/%2e%2e/x"), 400, id="target-encoded-dotdot"),
    pytest.param(get(b"/a/..%2f..%2fb"), 400, id="target-encoded-slash-traversal"),
    pytest.param(get(b"/a/%2e%2e%2fb"), 400, id="target-fully-encoded-traversal"),
    pytest.param(get(b"/a\\b"), 400, id="target-backslash"),
    pytest.param(get(b"/..%5cetc"), 400, id="target-encoded-backslash"),
    pytest.param(get(b"/a%00b"), 400, id="target-encoded-nul"),
    pytest.param(get(b"/%zz"), 400, id="target-bad-percent"),
    pytest.param(get(b"/a%2"), 400, id="target-truncated-percent"),
    pytest.param(get(b"a/b"), 400, id="target-relative"),
    pytest.param(get(b"http://user@example.test/"), 400, id="target-absolute-userinfo"),
    pytest.param(get(b"ftp://example.test/"), 400, id="target-absolute-ftp"),
    pytest.param(get(b"*", method=b"OPTIONS"), 400, id="target-asterisk"),
    pytest.param(get(b"example.test:443", method=b"CONNECT"), 405, id="connect"),
    # Host.
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="host-missing"),
    pytest.param(get(b"/", b"Host: other.test"), 400, id="host-twice"),
    pytest.param(get(b"/", b"HOST: example.test"), 400, id="host-twice-other-case"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: exa mple.test\r\n\r\n", 400, id="host-space"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: example.test/x\r\n\r\n", 400, id="host-slash"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: user@example.test\r\n\r\n", 400, id="host-at"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: example.test:1:2\r\n\r\n", 400, id="host-two-ports"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: example.test:123456\r\n\r\n", 400, id="host-port-long"),
    # Chunked bodies.
    pytest.param(chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-zz"),
    pytest.param(chunked(b"-1\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-negative"),
    pytest.param(chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-0x"),
    pytest.param(
        chunked(b"1" + b"0" * 16 + b"\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-overflow"
    ),
    pytest.param(chunked(b"5\r\nhelloXX0\r\n\r\n"), 400, id="chunk-data-no-crlf"),
    pytest.param(chunked(b"5\r\nhello\n0\r\n\r\n"), 400, id="chunk-data-bare-lf"),
    pytest.param(chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-leading-space"),
    pytest.param(chunked(b"5\nhello\r\n0\r\n\r\n"), 400, id="chunk-size-bare-lf"),
    pytest.param(chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-ext-ctl"),
    pytest.param(chunked(b"5;a\x00\r\nhello\r\n0\r\n\r\n"), 400, id="chunk-ext-nul"),
    pytest.param(chunked(b"5\r\nhello\r\n0\r\nX-A: b\r\n c\r\n\r\n"), 400, id="trailer-obs-fold"),
    # Size limits.
    pytest.param(get(b"/" + b"a" * 2000), 414, id="request-line-too-long"),
    pytest.param(get(b"/", b"X-Big: " + b"a" * 8192), 431, id="header-value-too-large"),
    pytest.param(
        get(b"/", *(b"X-H%d: %s" % (i, b"v" * 100) for i in range(80))), 431, id="header-block-8k"
    ),
    pytest.param(get(b"/", *(b"X: 1" for _ in range(2000))), 431, id="header-count-huge"),
    # Expectations.
    pytest.param(post(b"Expect: something-else", b"Content-Length: 0"), 417, id="expect-unknown"),
    pytest.param(post(b"Expect: 100-continue, x", b"Content-Length: 0"), 417, id="expect-list"),
]

#: Smuggling attempts after a valid request in the same write: the valid one gets through.
PIPELINED = [
    pytest.param(
        post(b"Content-Length: 6", b"Transfer-Encoding: chunked", body=b"0\r\n\r\nG"),
        400,
        id="valid-then-cl-te",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked", b"Content-Length: 3", body=b"5\r\nhello\r\n0\r\n\r\n"),
        400,
        id="valid-then-te-cl",
    ),
    pytest.param(
        post(b"Content-Length: 5", b"Content-Length: 40", body=b"hello"),
        400,
        id="valid-then-double-cl",
    ),
    pytest.param(
        post(b"X-A: 1", b" Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
        id="valid-then-te-obs-fold",
    ),
    pytest.param(
        post(b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"), 400, id="valid-then-te-space"
    ),
    pytest.param(chunked(b"zz\r\nhello\r\n0\r\n\r\n"), 400, id="valid-then-bad-chunk"),
    pytest.param(b"GET / HTTP/1.1\nHost: example.test\n\n", 400, id="valid-then-bare-lf"),
    pytest.param(get(b"/%2e%2e/etc"), 400, id="valid-then-encoded-traversal"),
    pytest.param(b"GET / HTTP/2.0\r\n" + HOST + b"\r\n", 505, id="valid-then-http2"),
]


@pytest.fixture(scope="module")
def backend() -> Iterator[RecordingBackend]:
    with RecordingBackend() as recording:
        yield recording


@pytest.fixture(scope="module")
def ap(backend: RecordingBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("smuggling")
    port = free_port()
    config: dict[str, object] = {
        "access_point": {
            "listen": f"127.0.0.1:{port}",
            "max_request_line": MAX_REQUEST_LINE,
            "max_header_bytes": MAX_HEADER_BYTES,
        },
        "resources": [{"id": "open", "hosts": ["*"], "backends": [backend.url], "public": True}],
    }
    path = write_config(tmp / "ap.yaml", config)
    svc = Service(
        ["access-point", "--config", str(path), "--workers", "1"], tmp / "ap.log", "127.0.0.1", port
    )
    try:
        yield svc.wait_ready()
    finally:
        svc.stop()


@pytest.fixture
def recording(backend: RecordingBackend) -> RecordingBackend:
    backend.reset()
    return backend


def send(ap: Service, data: bytes) -> tuple[bytes, bool]:
    return exchange(ap.host, ap.port, data, TIMEOUT)


def assert_backend_saw(backend: RecordingBackend, targets: list[bytes]) -> None:
    time.sleep(SETTLE)
    assert [r.target for r in backend.requests] == targets
    assert backend.errors == []
    assert backend.partial == []
    if not targets:
        assert backend.raw_bytes == b""


@pytest.mark.parametrize(("data", "status"), CASES)
def test_refused(
    ap: Service, recording: RecordingBackend, data: bytes, status: int | tuple[int, ...]
) -> None:
    response, closed = send(ap, data)
    allowed = status if isinstance(status, tuple) else (status,)
    got = statuses(response)
    assert len(got) == 1, response[:300]
    assert got[0] in allowed, response[:200]
    assert closed, "the connection stayed open after the error"
    assert_backend_saw(recording, [])


@pytest.mark.parametrize(("data", "status"), PIPELINED)
def test_refused_after_valid(
    ap: Service, recording: RecordingBackend, data: bytes, status: int
) -> None:
    response, closed = send(ap, VALID + data)
    assert statuses(response) == [200, status], response[:300]
    assert closed, "the connection stayed open after the error"
    assert_backend_saw(recording, [b"/ok"])
    forwarded = recording.requests[0]
    assert (forwarded.method, forwarded.body) == (b"GET", b"")


def test_table_size() -> None:
    assert len(CASES) + len(PIPELINED) >= 60


# Controls: the same AP accepts the well-formed versions, so the refusals above mean something.


def test_valid_get_is_forwarded(ap: Service, recording: RecordingBackend) -> None:
    response, closed = send(ap, get(b"/ok", b"Connection: close"))
    assert statuses(response) == [200]
    assert closed
    assert_backend_saw(recording, [b"/ok"])


def test_valid_chunked_post_is_forwarded(ap: Service, recording: RecordingBackend) -> None:
    data = post(
        b"Transfer-Encoding: chunked",
        b"Connection: close",
        body=b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    response, closed = send(ap, data)
    assert statuses(response) == [200]
    assert closed
    assert_backend_saw(recording, [b"/"])
    assert recording.requests[0].body == b"hello world"
    # The trailer is not forwarded.
    assert b"X-Trailer" not in recording.raw_bytes


def test_valid_pipeline_is_answered_in_order(ap: Service, recording: RecordingBackend) -> None:
    data = VALID + post(b"Content-Length: 5", body=b"hello") + get(b"/last", b"Connection: close")
    response, closed = send(ap, data)
    assert statuses(response) == [200, 200, 200]
    assert closed
    assert_backend_saw(recording, [b"/ok", b"/", b"/last"])
    assert recording.requests[1].body == b"hello"


@pytest.mark.parametrize(
    "line",
    [b"GET  /ok HTTP/1.1", b"GET /ok  HTTP/1.1", b"GET   /ok   HTTP/1.1"],
    ids=["before-target", "before-version", "both"],
)
def test_extra_spaces_in_request_line_are_canonicalised(
    ap: Service, recording: RecordingBackend, line: bytes
) -> None:
    # llhttp accepts several spaces between the parts of a request line (as nginx does). That
    # is safe for a proxy because the AP routes on what it parsed and sends the backend its own
    # canonical request line: both sides see the same single request.
    response, closed = send(ap, line + b"\r\n" + HOST + b"Connection: close\r\n\r\n")
    assert statuses(response) == [200]
    assert closed
    assert_backend_saw(recording, [b"/ok"])
    assert recording.raw_bytes.startswith(b"GET /ok HTTP/1.1\r\n")


def test_underscore_transfer_encoding_is_not_transfer_encoding(
    ap: Service, recording: RecordingBackend
) -> None:
    # Transfer_Encoding is not Transfer-Encoding, but CGI-style backends map "_" and "-" to the
    # same variable: the AP drops the field, and the body is framed by Content-Length alone.
    body = b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n"
    data = post(
        b"Content-Length: %d" % len(body),
        b"Transfer_Encoding: chunked",
        b"Connection: close",
        body=body,
    )
    response, closed = send(ap, data)
    assert statuses(response) == [200]
    assert closed
    assert_backend_saw(recording, [b"/"])
    forwarded = recording.requests[0]
    assert forwarded.body == body
    names = [name.lower() for name, _ in forwarded.headers]
    assert b"transfer_encoding" not in names
    assert b"transfer-encoding" not in names
    assert forwarded.header(b"Content-Length") == str(len(body)).encode()
    assert b"Transfer_Encoding" not in recording.raw_bytes


def test_underscore_content_length_does_not_frame(ap: Service, recording: RecordingBackend) -> None:
    data = post(b"Content_Length: 40", b"Connection: close")
    response, closed = send(ap, data)
    assert statuses(response) == [200]
    assert closed
    assert_backend_saw(recording, [b"/"])
    forwarded = recording.requests[0]
    assert forwarded.body == b""
    assert forwarded.header(b"Content_Length") is None


def test_uppercase_chunked_is_chunked(ap: Service, recording: RecordingBackend) -> None:
    # Transfer codings are case-insensitive (RFC 9112 §7).
    data = post(
        b"Transfer-Encoding: CHUNKED", b"Connection: close", body=b"5\r\nhello\r\n0\r\n\r\n"
    )
    response, closed = send(ap, data)
    assert statuses(response) == [200]
    assert closed
    assert_backend_saw(recording, [b"/"])
    assert recording.requests[0].body == b"hello"


def test_error_page_says_close(ap: Service, recording: RecordingBackend) -> None:
    response, closed = send(ap, post(b"Content-Length: 1", b"Transfer-Encoding: chunked"))
    (page,) = parse_responses(response)
    assert page.status == 400
    assert page.complete
    assert page.header(b"Connection") == b"close"
    assert closed

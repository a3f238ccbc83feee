"""Tables and properties for the Access Point's pure request logic: head validation, path
normalisation, header rewriting and routing."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from gatehouse.access_point.headers import (
    HeaderPolicy,
    ResponseFields,
    end_to_end,
    forwarded_fields,
    request_lines,
    session_cookie,
    without_cookie,
)
from gatehouse.access_point.request import BadRequest, RequestHead, normalize_path, parse_head
from gatehouse.access_point.routing import Router, prefix_matches, strip_prefix
from gatehouse.config.access_point import DEFAULT_IDENTITY_HEADERS
from gatehouse.cookies import TwoSessionCookies
from gatehouse.policy.sessions import session_cookie as portal_session_cookie

Header = tuple[bytes, bytes]
HOST = (b"Host", b"example.test")

# Written out here rather than imported, so the tests check the code against RFC 9110 §7.6.1
# and not against itself.
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"proxy-authenticate",
    b"proxy-authorization",
}
#: Fields the AP sets or answers itself (Expect: it sends 100 Continue), so client values
#: must not pass.
SET_BY_PROXY = {
    b"expect",
    b"host",
    b"content-length",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
    b"x-real-ip",
}
IDENTITY = {h.lower().encode() for h in DEFAULT_IDENTITY_HEADERS}
CUSTOM_IDENTITY = "X-Auth-Subject"


def head(
    *headers: Header,
    method: bytes = b"GET",
    target: bytes = b"/",
    version: bytes = b"1.1",
    host: bool = True,
) -> RequestHead:
    fields = [HOST, *headers] if host else list(headers)
    return parse_head(method, target, version, fields)


def refusal(
    *headers: Header,
    method: bytes = b"GET",
    target: bytes = b"/",
    version: bytes = b"1.1",
    host: bool = True,
) -> int:
    with pytest.raises(BadRequest) as info:
        head(*headers, method=method, target=target, version=version, host=host)
    return info.value.status


# parse_head -----------------------------------------------------------------------------------


def test_parse_head_simple_get() -> None:
    parsed = parse_head(b"GET", b"/a/b?x=1&y", b"1.1", [(b"Host", b"Example.Test:8080")])
    assert parsed.method == b"GET"
    assert parsed.path == "/a/b"
    assert parsed.query == b"x=1&y"
    assert parsed.host == "example.test"
    assert parsed.authority == b"Example.Test:8080"
    assert parsed.content_length is None
    assert not parsed.chunked
    assert parsed.keep_alive
    assert not parsed.expect_continue
    assert parsed.upgrade is None


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"example.test", "example.test"),
        (b"EXAMPLE.test", "example.test"),
        (b"example.test.", "example.test"),
        (b"example.test:443", "example.test"),
        (b"127.0.0.1:8080", "127.0.0.1"),
        (b"[::1]:8080", "[::1]"),
        (b"[2001:db8::1]", "[2001:db8::1]"),
    ],
)
def test_parse_head_host(authority: bytes, host: str) -> None:
    assert parse_head(b"GET", b"/", b"1.1", [(b"Host", authority)]).host == host


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        (b"/a/b?x=1&y", b"/a/b?x=1&y"),
        (b"/a/b?", b"/a/b?"),
        (b"/", b"/"),
        # Normalised, absolute-form: sent on as rebuilt from path and query, never as received.
        (b"/a/%7Eb", None),
        (b"/a//b", None),
        (b"/a/./b?q", None),
        (b"/a/../b", None),
        (b"http://example.test/p?q=1", None),
    ],
)
def test_parse_head_keeps_the_target_only_when_it_is_path_and_query(
    target: bytes, kept: bytes | None
) -> None:
    parsed = parse_head(b"GET", target, b"1.1", [(b"Host", b"example.test")])
    assert parsed.target == kept
    if kept is not None:
        query = b"" if parsed.query is None else b"?" + parsed.query
        assert parsed.path.encode() + query == kept


def test_parse_head_absolute_form_authority_wins() -> None:
    parsed = parse_head(b"GET", b"http://Other.Test:81/p?q=1", b"1.1", [(b"Host", b"example.test")])
    assert parsed.host == "other.test"
    assert parsed.authority == b"Other.Test:81"
    assert parsed.path == "/p"
    assert parsed.query == b"q=1"


def test_parse_head_http10_without_host() -> None:
    parsed = parse_head(b"GET", b"/", b"1.0", [])
    assert parsed.host == ""
    assert not parsed.keep_alive


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"Keep-Alive, CLOSE", False),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"Keep-Alive", True),
    ],
)
def test_parse_head_keep_alive(version: bytes, connection: bytes | None, keep_alive: bool) -> None:
    fields = [] if connection is None else [(b"Connection", connection)]
    assert parse_head(b"GET", b"/", version, [HOST, *fields]).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("fields", "content_length", "chunked"),
    [
        ([(b"Content-Length", b"0")], 0, False),
        ([(b"Content-Length", b" 42\t")], 42, False),
        ([(b"content-length", b"007")], 7, False),
        ([(b"Transfer-Encoding", b"chunked")], None, True),
        ([(b"transfer-encoding", b"Chunked")], None, True),
        ([(b"Transfer-Encoding", b" chunked ")], None, True),
    ],
)
def test_parse_head_framing(
    fields: list[Header], content_length: int | None, chunked: bool
) -> None:
    parsed = parse_head(b"POST", b"/", b"1.1", [HOST, *fields])
    assert (parsed.content_length, parsed.chunked) == (content_length, chunked)


def test_parse_head_connection_tokens_and_upgrade() -> None:
    parsed = head((b"Connection", b"Upgrade, X-Custom"), (b"Upgrade", b"websocket"))
    assert parsed.connection_tokens == frozenset({b"upgrade", b"x-custom"})
    assert parsed.upgrade == b"websocket"
    # Upgrade only counts when Connection names it.
    assert head((b"Upgrade", b"websocket")).upgrade is None


@pytest.mark.parametrize(
    ("version", "value", "expected"),
    [
        (b"1.1", b"100-continue", True),
        (b"1.1", b"100-Continue", True),
        (b"1.0", b"100-continue", False),
    ],
)
def test_parse_head_expect_continue(version: bytes, value: bytes, expected: bool) -> None:
    parsed = parse_head(b"POST", b"/", version, [HOST, (b"Expect", value)])
    assert parsed.expect_continue is expected


@pytest.mark.parametrize(
    ("fields", "cookie"),
    [
        ([], None),
        ([(b"Cookie", b"a=1; gatehouse_session=SID")], b"a=1; gatehouse_session=SID"),
        (
            [(b"cookie", b"a=1"), (b"X", b"y"), (b"COOKIE", b"gatehouse_session=SID")],
            b"a=1; gatehouse_session=SID",
        ),
        ([(b"Cookie2", b"a=1"), (b"Cookies", b"b=2")], None),
    ],
)
def test_parse_head_cookie(fields: list[Header], cookie: bytes | None) -> None:
    """Several Cookie fields read as one (RFC 6265 §5.4), in order: the first session wins."""
    parsed = parse_head(b"GET", b"/", b"1.1", [HOST, *fields])
    assert parsed.cookie == cookie
    assert parsed.headers == [HOST, *fields], "the fields themselves are untouched"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"version": b"2.0"}, 505),
        ({"version": b"0.9"}, 505),
        ({"version": b"3.0"}, 505),
        ({"method": b"CONNECT", "target": b"example.test:443"}, 405),
        ({"method": b"OPTIONS", "target": b"*"}, 400),
        ({"target": b"a/b"}, 400),
        ({"target": b"/a#frag"}, 400),
        ({"target": b"http://user@example.test/"}, 400),
        ({"target": b"http:///path"}, 400),
        ({"target": b"ftp://example.test/"}, 400),
        ({"target": b"/../x"}, 400),
        ({"host": False}, 400),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else str(v),
)
def test_parse_head_refuses_request_line(kwargs: dict[str, object], status: int) -> None:
    assert refusal(**kwargs) == status  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ([(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")], 400),
        ([(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"0")], 400),
        ([(b"Content-Length", b"5"), (b"Content-Length", b"5")], 400),
        ([(b"Content-Length", b"5"), (b"Content-Length", b"6")], 400),
        ([(b"Content-Length", b"5, 5")], 400),
        ([(b"Content-Length", b"+5")], 400),
        ([(b"Content-Length", b"-5")], 400),
        ([(b"Content-Length", b"0x5")], 400),
        ([(b"Content-Length", b"5 5")], 400),
        ([(b"Content-Length", b"")], 400),
        ([(b"Content-Length", b"9" * 20)], 400),
        ([(b"Content-Length", "\u0665".encode())], 400),
        ([(b"Transfer-Encoding", b"gzip")], 400),
        ([(b"Transfer-Encoding", b"identity")], 400),
        ([(b"Transfer-Encoding", b"chunked, gzip")], 400),
        ([(b"Transfer-Encoding", b"gzip, chunked")], 501),
        ([(b"Transfer-Encoding", b"gzip"), (b"Transfer-Encoding", b"chunked")], 501),
        ([(b"Transfer-Encoding", b"xchunked")], 400),
        ([(b"Transfer-Encoding", b"chunked x")], 400),
        ([(b"Transfer-Encoding", b"chu nked")], 400),
        ([(b"Transfer-Encoding", b"chunked\x0b")], 400),
        ([(b"Transfer-Encoding", b"chunked, chunked")], 400),
        ([(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")], 400),
        ([(b"Transfer-Encoding", b"")], 400),
        ([(b"Transfer-Encoding", b",")], 400),
        ([HOST], 400),
        ([(b"HOST", b"other.test")], 400),
        ([(b"Expect", b"something-else")], 417),
        ([(b"Expect", b"100-continue, x")], 417),
    ],
)
def test_parse_head_refuses_fields(fields: list[Header], status: int) -> None:
    assert refusal(*fields, method=b"POST") == status


def test_parse_head_refuses_transfer_encoding_in_http10() -> None:
    assert refusal((b"Transfer-Encoding", b"chunked"), method=b"POST", version=b"1.0") == 400


@pytest.mark.parametrize(
    "value",
    [
        b"exa mple.test",
        b"example.test/x",
        b"user@example.test",
        b"example.test:1:2",
        b"example.test:123456",
        b"example.test:port",
        b"[::1",
        b'"example.test"',
        b"example.test\x00",
        "ex\u00e4mple.test".encode(),
    ],
)
def test_parse_head_refuses_host(value: bytes) -> None:
    assert refusal((b"Host", value), host=False) == 400


@pytest.mark.parametrize(
    "authority", [b"exa mple.test", b"example.test:x", b"[::1", b'ex"ample', b"example.test:1:2"]
)
def test_parse_head_refuses_absolute_form_authority(authority: bytes) -> None:
    assert refusal(target=b"http://" + authority + b"/") == 400


# normalize_path ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", "/"),
        (b"/a/b", "/a/b"),
        (b"/a/b/", "/a/b/"),
        # merged slashes
        (b"//", "/"),
        (b"//a", "/a"),
        (b"/a//b", "/a/b"),
        (b"/a///b//", "/a/b/"),
        # dot segments
        (b"/.", "/"),
        (b"/./a", "/a"),
        (b"/a/./b", "/a/b"),
        (b"/a/.", "/a/"),
        (b"/a/b/../c", "/a/c"),
        (b"/a/b/..", "/a/"),
        (b"/a/..", "/"),
        (b"//a/./b/../c", "/a/c"),
        (b"/a/b/c/../../d", "/a/d"),
        (b"/a/.../b", "/a/.../b"),
        (b"/a/..b/c", "/a/..b/c"),
        (b"/a/.b", "/a/.b"),
        # percent-decoding of unreserved characters only
        (b"/%7Euser", "/~user"),
        (b"/%7euser", "/~user"),
        (b"/%41%62%2D%5F%2E", "/Ab-_."),
        (b"/%2e/a", "/a"),
        (b"/a/%2E%2E/b", "/b"),
        (b"/a/.%2e/b", "/b"),
        (b"/a%2fb", "/a%2Fb"),
        (b"/a%2Fb", "/a%2Fb"),
        (b"/a%20b", "/a%20b"),
        (b"/%c3%a9", "/%C3%A9"),
        (b"/%25", "/%25"),
        (b"/%252e%252e/", "/%252e%252e/"),
        (b"/a?b", "/a?b"),
    ],
)
def test_normalize_path(raw: bytes, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"a",
        b"a/b",
        b"*",
        b"/..",
        b"/../a",
        b"/a/../..",
        b"/a/../../b",
        b"/%2e%2e",
        b"/%2e%2e/a",
        b"/a/%2e%2e/%2e%2e/b",
        b"/a/..%2fb",
        b"/a/..%2f..%2fb",
        b"/a/%2e%2e%2fb",
        b"/..%5cb",
        b"/a%5cb",
        b"/a\\b",
        b"/a\\..\\b",
        b"/a%00b",
        b"/%zz",
        b"/%z",
        b"/%",
        b"/a%2",
        b"/a%g0",
        b"/caf\xc3\xa9",
        b"/\xff",
    ],
)
def test_normalize_path_refuses(raw: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        normalize_path(raw)
    assert info.value.status == 400


SEGMENTS = st.sampled_from(
    [
        "",
        ".",
        "..",
        "...",
        "a",
        "b",
        ".a",
        "%2e",
        "%2E",
        "%2e%2e",
        ".%2e",
        "%2f",
        "%2F",
        "..%2f",
        "%5c",
        "%41",
        "%7e",
        "%25",
        "%252e",
        "%",
        "%z",
        "a%20b",
        "\\",
        "~",
    ]
)
PATHS = st.one_of(
    st.lists(SEGMENTS, max_size=8).map(lambda segments: "/" + "/".join(segments)),
    st.text(alphabet="/.%2eEfF5cAa~\\", max_size=24).map(lambda text: "/" + text),
).map(str.encode)


@given(PATHS)
@settings(max_examples=500, deadline=None)
def test_normalize_path_is_idempotent_and_canonical(raw: bytes) -> None:
    try:
        path = normalize_path(raw)
    except BadRequest as exc:
        status = exc.status
        path = None
    if path is None:
        assert status == 400
        return
    assert path.startswith("/")
    assert normalize_path(path.encode()) == path
    assert "//" not in path
    assert "/../" not in path + "/"
    assert "/./" not in path + "/"
    assert all(segment not in (".", "..") for segment in path.split("/"))


# end_to_end -------------------------------------------------------------------------------------


def policy(allow_underscores: bool = False) -> HeaderPolicy:
    return HeaderPolicy.build(
        [*DEFAULT_IDENTITY_HEADERS, CUSTOM_IDENTITY], "gatehouse", allow_underscores, []
    )


@pytest.mark.parametrize(
    ("fields", "tokens", "allow_underscores", "kept"),
    [
        ([(b"Accept", b"*/*"), (b"X-A", b"1")], set(), False, [b"Accept", b"X-A"]),
        ([(b"Connection", b"close"), (b"Keep-Alive", b"5"), (b"X", b"1")], set(), False, [b"X"]),
        ([(b"TE", b"trailers"), (b"Trailer", b"X"), (b"Upgrade", b"h2c")], set(), False, []),
        ([(b"Proxy-Connection", b"x"), (b"Proxy-Authorization", b"x")], set(), False, []),
        ([(b"X-Custom", b"1"), (b"X-Other", b"2")], {b"x-custom"}, False, [b"X-Other"]),
        ([(b"remote-user", b"bob"), (b"REMOTE-GROUPS", b"admins")], set(), False, []),
        ([(b"Remote-Email", b"x"), (b"Remote-Name", b"y")], set(), False, []),
        ([(b"x-auth-subject", b"bob"), (b"X-Auth", b"ok")], set(), False, [b"X-Auth"]),
        ([(b"X_Real", b"1"), (b"Remote_User", b"bob"), (b"X-A", b"1")], set(), False, [b"X-A"]),
        ([(b"X_Real", b"1")], set(), True, [b"X_Real"]),
        ([(b"Remote_User", b"bob")], set(), True, [b"Remote_User"]),
        (
            [(b"Host", b"h"), (b"Content-Length", b"1"), (b"Transfer-Encoding", b"x")],
            set(),
            False,
            [],
        ),
        ([(b"X-Forwarded-For", b"1.2.3.4"), (b"Forwarded", b"for=x")], set(), False, []),
        ([(b"X-Forwarded-Host", b"h"), (b"X-Forwarded-Proto", b"https")], set(), False, []),
        ([(b"X-Real-IP", b"1.2.3.4")], set(), False, []),
        ([(b"Cookie", b"a=1"), (b"cookie", b"b=2")], set(), False, [b"Cookie", b"cookie"]),
    ],
)
def test_end_to_end(
    fields: list[Header], tokens: set[bytes], allow_underscores: bool, kept: list[bytes]
) -> None:
    rules = policy(allow_underscores)
    out = end_to_end(fields, rules.drop, frozenset(tokens), rules.allow_underscores)
    assert [name for name, _ in out] == kept
    assert all((name, value) in fields for name, value in out)


TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
SPECIAL_NAMES = sorted(HOP_BY_HOP | SET_BY_PROXY | IDENTITY | {CUSTOM_IDENTITY.lower().encode()})


@st.composite
def field_names(draw: st.DrawFn) -> bytes:
    """Any token, often one the proxy must drop, in random case."""
    if draw(st.booleans()):
        name = draw(st.sampled_from(SPECIAL_NAMES)).decode()
    else:
        name = draw(st.text(alphabet=TCHAR, min_size=1, max_size=12))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(name, flips, strict=True)).encode()


FIELD_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t"),
    max_size=16,
).map(lambda v: v.strip(" \t").encode())


@given(
    fields=st.lists(st.tuples(field_names(), FIELD_VALUES), max_size=20),
    named=st.lists(field_names(), max_size=3),
    allow_underscores=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_end_to_end_property(
    fields: list[Header], named: list[bytes], allow_underscores: bool
) -> None:
    rules = policy(allow_underscores)
    tokens = frozenset(n.lower() for n in named)
    identity = IDENTITY | {CUSTOM_IDENTITY.lower().encode()}

    def dropped(name: bytes) -> bool:
        lname = name.lower()
        return (
            lname in HOP_BY_HOP
            or lname in SET_BY_PROXY
            or lname in identity
            or lname in tokens
            or (not allow_underscores and b"_" in name)
        )

    out = end_to_end(fields, rules.drop, tokens, rules.allow_underscores)
    for name, _ in out:
        assert name.lower() not in HOP_BY_HOP
        assert name.lower() not in identity
        assert name.lower() not in tokens
        assert allow_underscores or b"_" not in name
    # Everything else is kept, in order, byte for byte.
    assert out == [(n, v) for n, v in fields if not dropped(n)]


SESSION_COOKIE = b"gatehouse_session"
COOKIE_VALUES = st.lists(
    st.sampled_from(
        [
            b"gatehouse_session=SID",
            b"a=1",
            b"gatehouse_session2=X",
            b" b=2 ",
            b"",
            b"gatehouse_session=",
        ]
    ),
    max_size=4,
).map(b";".join)


@given(
    fields=st.lists(
        st.one_of(
            st.tuples(field_names(), FIELD_VALUES),
            st.tuples(st.sampled_from([b"Cookie", b"cookie", b"COOKIE"]), COOKIE_VALUES),
        ),
        max_size=12,
    ),
    named=st.lists(field_names(), max_size=2),
    allow_underscores=st.booleans(),
    session_cookie=st.sampled_from([None, SESSION_COOKIE]),
)
@settings(max_examples=300, deadline=None)
def test_request_lines_is_end_to_end_without_the_session_cookie(
    fields: list[Header],
    named: list[bytes],
    allow_underscores: bool,
    session_cookie: bytes | None,
) -> None:
    """The one-pass hot-path version equals the composition of the two pure steps."""
    rules = policy(allow_underscores)
    tokens = frozenset(n.lower() for n in named)
    expected = end_to_end(fields, rules.drop, tokens, rules.allow_underscores)
    if session_cookie is not None:
        expected = without_cookie(expected, session_cookie)
    out = request_lines(fields, rules.drop, tokens, rules.allow_underscores, session_cookie)
    assert out == [name + b": " + value for name, value in expected]
    if session_cookie is not None:
        assert not any(b"gatehouse_session=" in line for line in out)


@pytest.mark.parametrize(
    ("cookie", "line"),
    [
        (b"gatehouse_session=SID", None),
        (b"a=1; gatehouse_session=SID; b=2", b"Cookie: a=1; b=2"),
        (b"a=1", b"Cookie: a=1"),
    ],
)
def test_request_lines_remove_the_session_cookie(cookie: bytes, line: bytes | None) -> None:
    rules = policy()
    fields = [(b"Accept", b"*/*"), (b"Cookie", cookie), (b"Remote-User", b"spoofed")]
    out = request_lines(fields, rules.drop, frozenset(), False, SESSION_COOKIE)
    assert out == [b"Accept: */*", *([line] if line else [])]
    # The portal (no cookie name given) sees the Cookie field as sent.
    out = request_lines(fields, rules.drop, frozenset(), False, None)
    assert out == [b"Accept: */*", b"Cookie: " + cookie]


# one session cookie (issue 13: the AP enforced the first, the portal's sign-out ended the last)


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (b"gatehouse_session=SID", "SID"),
        (b"a=1; gatehouse_session=SID ; b=2", "SID"),
        (b"a=1", None),
        (b"gatehouse_session", None),  # no "=": not this cookie (as Starlette reads it)
        (b"xgatehouse_session=X; gatehouse_session2=Y", None),
        (b"gatehouse_session=\xc3\xa9", None),  # not ASCII: no session
        (b"gatehouse_session=A; gatehouse_session=B", TwoSessionCookies),
        (b"gatehouse_session=A;gatehouse_session=A", TwoSessionCookies),  # even the same id
        (b"gatehouse_session=A; gatehouse_session =B", TwoSessionCookies),
        (b"\tgatehouse_session=A; a=1; gatehouse_session=", TwoSessionCookies),
    ],
)
def test_session_cookie_is_refused_when_sent_twice(
    cookie: bytes, expected: str | type[Exception] | None
) -> None:
    if isinstance(expected, type):
        with pytest.raises(TwoSessionCookies):
            session_cookie(cookie, SESSION_COOKIE)
    else:
        assert session_cookie(cookie, SESSION_COOKIE) == expected


def test_two_cookie_fields_each_with_the_session_are_refused() -> None:
    head = parse_head(
        b"GET",
        b"/app",
        b"1.1",
        [HOST, (b"Cookie", b"gatehouse_session=A"), (b"Cookie", b"a=1; gatehouse_session=B")],
    )
    assert head.cookie is not None
    with pytest.raises(TwoSessionCookies):
        session_cookie(head.cookie, SESSION_COOKIE)


@given(fields=st.lists(COOKIE_VALUES, min_size=1, max_size=3))
@settings(max_examples=300, deadline=None)
def test_the_access_point_and_the_portal_read_the_same_session(fields: list[bytes]) -> None:
    """Whatever the Cookie fields, both refuse, or both find the same session."""
    joined = b"; ".join(fields)  # as parse_head joins them
    try:
        ap: object = session_cookie(joined, SESSION_COOKIE)
    except TwoSessionCookies:
        ap = TwoSessionCookies
    headers = Headers(raw=[(b"cookie", f) for f in fields])
    try:
        portal: object = portal_session_cookie(headers, SESSION_COOKIE.decode())
    except HTTPException as exc:
        portal = TwoSessionCookies if exc.status_code == 400 else exc
    assert ap == portal
    if ap is not TwoSessionCookies:
        # ... and the backend never sees it.
        lines = request_lines(
            [(b"Cookie", f) for f in fields], frozenset(), frozenset(), True, SESSION_COOKIE
        )
        assert not any(b"gatehouse_session=" in line for line in lines)


# forwarding fields, Via, responses ----------------------------------------------------------------


def fields_dict(fields: list[Header]) -> dict[bytes, bytes]:
    return dict(fields)


def test_forwarded_fields_untrusted_peer_replaces_client_values() -> None:
    client = [
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil.test"),
        (b"Forwarded", b"for=6.6.6.6"),
    ]
    out = fields_dict(forwarded_fields(client, "10.0.0.7", b"http", b"example.test", False))
    assert out == {
        b"X-Forwarded-For": b"10.0.0.7",
        b"X-Forwarded-Proto": b"http",
        b"X-Forwarded-Host": b"example.test",
        b"Forwarded": b"for=10.0.0.7;proto=http;host=example.test",
    }


def test_forwarded_fields_trusted_peer_extends_the_chain() -> None:
    client = [
        (b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"),
        (b"X-Forwarded-For", b"3.3.3.3"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"public.test"),
        (b"Forwarded", b"for=1.1.1.1"),
    ]
    out = fields_dict(forwarded_fields(client, "10.0.0.7", b"http", b"example.test", True))
    assert out[b"X-Forwarded-For"] == b"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.7"
    assert out[b"X-Forwarded-Proto"] == b"https"
    assert out[b"X-Forwarded-Host"] == b"public.test"
    assert out[b"Forwarded"] == b"for=1.1.1.1, for=10.0.0.7;proto=http;host=example.test"


@pytest.mark.parametrize(
    ("host", "element"),
    [
        (b"example.test", b"for=127.0.0.1;proto=http;host=example.test"),
        (b"", b"for=127.0.0.1;proto=http"),
        (b"a b", b'for=127.0.0.1;proto=http;host="a b"'),
        (b'a"b', b'for=127.0.0.1;proto=http;host="a\\"b"'),
    ],
)
def test_forwarded_host_quoting(host: bytes, element: bytes) -> None:
    out = fields_dict(forwarded_fields([], "127.0.0.1", b"http", host, False))
    assert out[b"Forwarded"] == element


def test_forwarded_ipv6_is_quoted_and_bracketed() -> None:
    out = fields_dict(forwarded_fields([], "::1", b"https", b"h", False))
    assert out[b"Forwarded"] == b'for="[::1]";proto=https;host=h'
    assert out[b"X-Forwarded-For"] == b"::1"


@pytest.mark.parametrize(
    ("trusted", "peer", "expected"),
    [
        ([], "127.0.0.1", False),
        (["127.0.0.0/8"], "127.0.0.1", True),
        (["127.0.0.0/8"], "10.0.0.1", False),
        (["10.0.0.0/8", "::1/128"], "::1", True),
        (["10.0.0.0/8"], "", False),
        (["10.0.0.0/8"], "not-an-ip", False),
    ],
)
def test_is_trusted(trusted: list[str], peer: str, expected: bool) -> None:
    networks = [ipaddress.ip_network(n) for n in trusted]
    rules = HeaderPolicy.build([], "gatehouse", False, networks)
    assert rules.is_trusted(peer) is expected


def test_via_lines() -> None:
    rules = HeaderPolicy.build([], "edge-1", False, [])
    assert (rules.via_line_11, rules.via_line_10) == (b"Via: 1.1 edge-1", b"Via: 1.0 edge-1")


def split_response(headers: list[Header]) -> ResponseFields:
    """A backend response's fields as the upstream parser hands them over, the head ended."""
    fields = ResponseFields()
    for name, value in headers:
        fields.field(name, value)
    fields.close()
    return fields


def test_split_response() -> None:
    framing = split_response(
        [
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Secret", b"1"),
            (b"Content-Length", b"12"),
            (b"Set-Cookie", b"a=1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"websocket"),
            (b"Proxy-Authenticate", b"Basic"),
        ]
    )
    assert framing.lines == [b"Content-Type: text/plain", b"Set-Cookie: a=1"]
    assert framing.content_length == b"12"
    assert framing.chunked
    assert framing.upgrade == b"websocket"


@pytest.mark.parametrize(
    ("connection", "kept"),
    [
        (b"keep-alive", [b"X-A", b"X-B"]),
        (b" Keep-Alive ", [b"X-A", b"X-B"]),
        (b"close", [b"X-A", b"X-B"]),
        (b"", [b"X-A", b"X-B"]),
        (b"x-a", [b"X-B"]),
        (b"keep-alive, X-A", [b"X-B"]),
        (b"X-B ,x-a", []),
    ],
)
def test_split_response_connection_options(connection: bytes, kept: list[bytes]) -> None:
    framing = split_response([(b"X-A", b"1"), (b"Connection", connection), (b"X-B", b"2")])
    assert [line.split(b":")[0] for line in framing.lines] == kept


def test_response_fields_end_with_the_head_and_start_again_on_reset() -> None:
    fields = ResponseFields()
    fields.field(b"X-A", b"1")
    fields.field(b"Content-Length", b" 5 ")
    assert fields.close() == [b"X-A: 1"]
    assert fields.content_length == b"5"
    # After the head: trailer fields of a chunked body, never relayed.
    fields.field(b"X-Trailer", b"2")
    assert fields.lines == [b"X-A: 1"]
    fields.reset()
    fields.field(b"X-B", b"3")
    assert (fields.close(), fields.content_length, fields.chunked) == ([b"X-B: 3"], None, False)


OURS = b"Strict-Transport-Security: max-age=31536000"


def closed_with(headers: list[Header], sts: bytes = b"") -> list[bytes]:
    fields = ResponseFields()
    for name, value in headers:
        fields.field(name, value)
    return fields.close(sts)


def test_the_aps_hsts_line_replaces_every_one_of_the_backend() -> None:
    backend = [
        (b"Strict-Transport-Security", b"max-age=1"),
        (b"X-A", b"1"),
        (b"strict-transport-security", b"max-age=2; preload"),
    ]
    assert closed_with(backend, OURS) == [b"X-A: 1", OURS]
    assert closed_with([(b"X-A", b"1")], OURS) == [b"X-A: 1", OURS]


def test_without_an_hsts_line_of_its_own_the_ap_relays_the_backends() -> None:
    backend = [
        (b"Strict-Transport-Security", b"max-age=1"),
        (b"X-A", b"1"),
        (b"strict-transport-security", b"max-age=2"),
    ]
    assert closed_with(backend) == [
        b"X-A: 1",
        b"Strict-Transport-Security: max-age=1",
        b"strict-transport-security: max-age=2",
    ]
    # Named in Connection: hop-by-hop, so dropped like any field Connection names.
    named = [(b"Connection", b"Strict-Transport-Security"), *backend]
    assert closed_with(named) == [b"X-A: 1"]
    assert closed_with(named, OURS) == [b"X-A: 1", OURS]


def test_a_reset_forgets_the_previous_responses_hsts() -> None:
    fields = ResponseFields()
    fields.field(b"Strict-Transport-Security", b"max-age=1")
    fields.close()
    fields.reset()
    fields.field(b"X-A", b"1")
    assert fields.close() == [b"X-A: 1"]


# routing ----------------------------------------------------------------------------------------

ROUTES = Router(
    [
        (["*"], "/", "any-root"),
        (["*"], "/api", "any-api"),
        (["*.example.com"], "/", "wild-root"),
        (["*.example.com"], "/app", "wild-app"),
        (["*.a.example.com"], "/", "wild-a-root"),
        (["www.example.com"], "/", "www-root"),
        (["www.example.com"], "/app", "www-app"),
        (["www.example.com"], "/app/admin", "www-admin"),
        (["www.example.com", "alias.test"], "/files/", "www-files"),
        (["only.test"], "/only", "only"),
    ]
)


@pytest.mark.parametrize(
    ("host", "path", "target", "prefix"),
    [
        # exact host beats *.domain beats *
        ("www.example.com", "/", "www-root", "/"),
        ("x.example.com", "/", "wild-root", "/"),
        ("other.test", "/", "any-root", "/"),
        # the longest prefix wins within a host
        ("www.example.com", "/app", "www-app", "/app"),
        ("www.example.com", "/app/x", "www-app", "/app"),
        ("www.example.com", "/app/admin", "www-admin", "/app/admin"),
        ("www.example.com", "/app/admin/users", "www-admin", "/app/admin"),
        ("other.test", "/api/v1", "any-api", "/api"),
        # segment boundaries
        ("www.example.com", "/apple", "www-root", "/"),
        ("www.example.com", "/app/administrator", "www-app", "/app"),
        ("other.test", "/apis", "any-root", "/"),
        ("www.example.com", "/files/a", "www-files", "/files/"),
        ("www.example.com", "/files", "www-root", "/"),
        ("alias.test", "/files/a", "www-files", "/files/"),
        ("alias.test", "/x", "any-root", "/"),
        # wildcards: any depth, the longest suffix first, never the bare domain
        ("x.y.example.com", "/app/z", "wild-app", "/app"),
        ("b.a.example.com", "/app", "wild-a-root", "/"),
        ("a.example.com", "/app", "wild-app", "/app"),
        ("example.com", "/app", "any-root", "/"),
        ("badexample.com", "/app", "any-root", "/"),
        # an exact host without a matching prefix falls back to the patterns
        ("only.test", "/only/x", "only", "/only"),
        ("only.test", "/other", "any-root", "/"),
    ],
)
def test_router(host: str, path: str, target: str, prefix: str) -> None:
    assert ROUTES.match(host, path) == (target, prefix)


def test_router_without_fallback() -> None:
    router = Router([(["a.test"], "/x", 1), (["*.b.test"], "/", 2)])
    assert router.match("a.test", "/y") is None
    assert router.match("b.test", "/") is None
    assert router.match("other.test", "/x") is None
    assert router.match("c.b.test", "/z") == (2, "/")


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        ("/", "/anything", True),
        ("/app", "/app", True),
        ("/app", "/app/", True),
        ("/app", "/app/x", True),
        ("/app", "/apple", False),
        ("/app", "/ap", False),
        ("/app/", "/app/x", True),
        ("/app/", "/app", False),
    ],
)
def test_prefix_matches(prefix: str, path: str, matches: bool) -> None:
    assert prefix_matches(prefix, path) is matches


@pytest.mark.parametrize(
    ("prefix", "path", "stripped"),
    [
        ("/", "/x", "/x"),
        ("/app", "/app", "/"),
        ("/app", "/app/", "/"),
        ("/app", "/app/x/y", "/x/y"),
        ("/app/", "/app/x", "/x"),
    ],
)
def test_strip_prefix(prefix: str, path: str, stripped: str) -> None:
    assert strip_prefix(prefix, path) == stripped

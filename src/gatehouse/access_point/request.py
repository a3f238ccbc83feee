"""Validate a parsed request head and normalise its target (RFC 9110, RFC 9112).

llhttp (through httptools) already refuses most malformed framing: both Content-Length and
Transfer-Encoding, duplicate Content-Length, obs-fold, bare LF, invalid bytes in names and
values, invalid chunk sizes. This module adds the rules a proxy must enforce on top, so that the
backend and the Access Point can never disagree about where a request ends or what it targets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = ["BadRequest", "RequestHead", "normalize_path", "parse_head"]

_HOST = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]{1,5})?$")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_CONTENT_LENGTH_DIGITS = 18
_NO_TOKENS: frozenset[bytes] = frozenset()


class BadRequest(Exception):
    """The request must be refused with ``status``; the connection is closed afterwards."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class RequestHead:
    """What the proxy needs to know about a validated request head."""

    method: bytes
    path: str
    query: bytes | None
    version: bytes
    headers: list[tuple[bytes, bytes]]
    host: str
    authority: bytes
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    upgrade: bytes | None
    connection_tokens: frozenset[bytes]
    #: The Cookie field's value; several Cookie fields joined with "; " (RFC 6265 §5.4).
    cookie: bytes | None = None
    #: The request target as received, when it is already ``path`` and ``query`` exactly
    #: (origin-form, nothing normalised): sent on as it is to a backend without a base path.
    target: bytes | None = None


def _decode_unreserved(path: bytes) -> bytes:
    """Decode %XX only where XX is an unreserved character (RFC 3986 §6.2.2.2)."""
    out = bytearray()
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == 0x25:  # '%'
            if i + 2 >= n or path[i + 1] not in _HEX or path[i + 2] not in _HEX:
                raise BadRequest(400, "invalid percent-encoding in path")
            value = int(path[i + 1 : i + 3], 16)
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += path[i : i + 3].upper()
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _has_dot_segment(path: bytes) -> bool:
    return any(segment in (b".", b"..") for segment in path.split(b"/"))


def normalize_path(raw: bytes) -> str:
    """Return the canonical form of an origin-form path, or raise :class:`BadRequest`.

    Merges repeated slashes, resolves ``.`` and ``..`` segments and decodes percent-encoded
    unreserved characters, so that routing sees the path the backend will act on. Paths that
    would still hide a traversal after full decoding (``%2e%2e``, ``..%2f``, backslashes, NUL)
    are refused rather than guessed at.
    """
    if not raw.startswith(b"/"):
        raise BadRequest(400, "request target must be an absolute path")
    if b"%" in raw:
        raw = _decode_unreserved(raw)
        decoded = unquote_to_bytes(raw)
        if b"\\" in decoded or b"\x00" in decoded:
            raise BadRequest(400, "invalid characters in path")
        if _has_dot_segment(decoded.replace(b"\\", b"/")) and not _has_dot_segment(raw):
            raise BadRequest(400, "encoded dot segments in path")
        if b"%2F" in raw and _has_dot_segment(decoded):
            raise BadRequest(400, "encoded path traversal")
    if b"\\" in raw:
        raise BadRequest(400, "invalid characters in path")
    if b"//" in raw or b"/." in raw:
        out: list[bytes] = []
        for segment in raw.split(b"/")[1:]:
            if segment == b"..":
                if not out:
                    raise BadRequest(400, "path goes above the root")
                out.pop()
            elif segment not in (b".", b""):
                out.append(segment)
        trailing = raw.endswith((b"/", b"/.", b"/.."))
        raw = b"/" + b"/".join(out) + (b"/" if trailing and out else b"")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        # Raw UTF-8 in a request target is not allowed by RFC 3986; llhttp lets it through.
        raise BadRequest(400, "non-ASCII bytes in request target") from None


def _split_target(method: bytes, target: bytes) -> tuple[bytes, bytes | None, bytes | None]:
    """Split a request target into (path, query, authority from absolute-form)."""
    authority: bytes | None = None
    if not target.startswith(b"/"):
        lower = target[:8].lower()
        if lower.startswith((b"http://", b"https://")):
            rest = target.split(b"://", 1)[1]
            slash = rest.find(b"/")
            query_at = rest.find(b"?")
            end = min(i for i in (slash, query_at, len(rest)) if i >= 0)
            authority = rest[:end]
            target = rest[end:] or b"/"
            if target.startswith(b"?"):
                target = b"/" + target
            if b"@" in authority or not authority:
                raise BadRequest(400, "invalid authority in request target")
        elif target == b"*" and method == b"OPTIONS":
            raise BadRequest(400, "asterisk-form requests are not supported")
        else:
            raise BadRequest(400, "invalid request target")
    if b"#" in target:
        raise BadRequest(400, "fragment in request target")
    path, sep, query = target.partition(b"?")
    # An empty query ("/p?") is kept as sent: RFC 3986 §6.2.3 does not equate it with "/p".
    return path, query if sep else None, authority


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip(b" \t").lower() for t in value.split(b",") if t.strip(b" \t")]


_host_cache: dict[bytes, str] = {}


def _host_name(authority: bytes) -> str:
    """The host of a Host field or authority, lowercase, without port; validated and cached
    (nearly every request of a site carries one of a handful of values)."""
    host = _host_cache.get(authority)
    if host is not None:
        return host
    if not _HOST.match(authority):
        raise BadRequest(400, "invalid Host field")
    if authority.startswith(b"["):
        raw = authority[: authority.find(b"]") + 1]
    else:
        raw = authority.partition(b":")[0]
    host = raw.decode("ascii").lower().rstrip(".")
    if len(_host_cache) >= 1024:
        _host_cache.clear()
    _host_cache[authority] = host
    return host


def parse_head(
    method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]]
) -> RequestHead:
    """Validate a request head (already parsed by llhttp) and extract what the proxy needs."""
    if version not in (b"1.1", b"1.0"):
        raise BadRequest(505, "HTTP version not supported")
    if method == b"CONNECT":
        raise BadRequest(405, "CONNECT is not supported")
    # On the hot path, single bytes are looked for as ints: `b"#" in target` first tries
    # the needle as an int, raising and clearing a TypeError, several times slower.
    as_received: bytes | None = None
    if target.startswith(b"/") and 0x23 not in target:  # "#"
        # The common origin-form target.
        path_raw, sep, query_raw = target.partition(b"?")
        query, target_authority = (query_raw if sep else None), None
        as_received = target
    else:
        path_raw, query, target_authority = _split_target(method, target)
    if (
        0x25 in path_raw  # "%"
        or 0x5C in path_raw  # "\\"
        or (0x2E in path_raw and path_raw.find(b"/.") >= 0)
        or path_raw.find(b"//") >= 0
    ):
        path = normalize_path(path_raw)
        as_received = None
    else:
        try:
            path = path_raw.decode("ascii")
        except UnicodeDecodeError:
            raise BadRequest(400, "non-ASCII bytes in request target") from None

    content_length: int | None = None
    te_values: list[bytes] = []
    hosts = 0
    host_field = b""
    connection: list[bytes] = []
    upgrade: bytes | None = None
    expect: bytes | None = None
    cookie: bytes | None = None
    for name, value in headers:
        n = len(name)
        # Compare on length first: cheaper than lower() for the common headers.
        if n == 4 and name.lower() == b"host":
            hosts += 1
            if hosts == 1:
                host_field = value.strip(b" \t")
        elif n == 14 and name.lower() == b"content-length":
            if content_length is not None:
                raise BadRequest(400, "several Content-Length fields")
            digits = value.strip(b" \t")
            if not digits.isdigit() or len(digits) > _MAX_CONTENT_LENGTH_DIGITS:
                raise BadRequest(400, "invalid Content-Length")
            content_length = int(digits)
        elif n == 17 and name.lower() == b"transfer-encoding":
            te_values.append(value)
        elif n == 10 and name.lower() == b"connection":
            connection.extend(_tokens(value))
        elif n == 7 and name.lower() == b"upgrade":
            upgrade = value.strip(b" \t")
        elif n == 6:
            lname = name.lower()
            if lname == b"cookie":
                cookie = value if cookie is None else cookie + b"; " + value
            elif lname == b"expect":
                expect = value.strip(b" \t").lower()

    chunked = False
    if te_values:
        if version == b"1.0":
            raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
        if content_length is not None:
            raise BadRequest(400, "both Content-Length and Transfer-Encoding")
        codings = [t for v in te_values for t in _tokens(v)]
        if not codings or codings[-1] != b"chunked":
            raise BadRequest(400, "Transfer-Encoding does not end in chunked")
        if codings.count(b"chunked") > 1:
            raise BadRequest(400, "chunked applied more than once")
        if len(codings) > 1:
            raise BadRequest(501, "transfer codings other than chunked are not implemented")
        chunked = True

    if hosts > 1:
        raise BadRequest(400, "several Host fields")
    if not hosts and version == b"1.1":
        raise BadRequest(400, "missing Host field")
    authority = target_authority if target_authority is not None else host_field
    host = _host_name(authority)

    if expect is not None and expect != b"100-continue":
        raise BadRequest(417, "unsupported expectation")

    tokens = frozenset(connection) if connection else _NO_TOKENS
    keep_alive = b"close" not in tokens if version == b"1.1" else b"keep-alive" in tokens
    if upgrade is not None and b"upgrade" not in tokens:
        upgrade = None
    # Positional: a third of the cost of keywords, once per request.
    return RequestHead(
        method,
        path,
        query,
        version,
        headers,
        host,
        authority,
        content_length,
        chunked,
        keep_alive,
        expect == b"100-continue" and version == b"1.1",  # expect_continue
        upgrade,
        tokens,
        cookie,
        as_received,  # target
    )

"""Rewrite headers as a reverse proxy must (RFC 9110 §7.6, RFC 7239).

Pure functions over lists of ``(name, value)`` byte pairs, so they are tested from tables and
with Hypothesis, and cost one pass per message on the hot path.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gatehouse.config.access_point import DEFAULT_IDENTITY_HEADERS
from gatehouse.cookies import session_value

Header = tuple[bytes, bytes]

#: Hop-by-hop fields (RFC 9110 §7.6.1) plus the non-standard ones proxies traditionally drop.
HOP_BY_HOP = frozenset(
    {
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
)
#: Fields the proxy sets itself on the way to the backend.
FORWARDING = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)
_FRAMING = frozenset({b"content-length", b"host", b"expect"})


#: One field as a line of a message head, without the line break.
field_line = b": ".join


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """What the request rewriter needs from the configuration, prepared once per version."""

    drop: frozenset[bytes]
    via: bytes
    allow_underscores: bool
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    #: The Via line added to requests from HTTP/1.1 and HTTP/1.0 clients, and to responses;
    #: derived from ``via``, so never empty (an empty line would end a head early).
    via_line_11: bytes = field(init=False, repr=False, compare=False)
    via_line_10: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "via_line_11", b"Via: 1.1 " + self.via)
        object.__setattr__(self, "via_line_10", b"Via: 1.0 " + self.via)

    @classmethod
    def build(
        cls,
        identity_headers: Iterable[str],
        via_pseudonym: str,
        allow_underscores: bool,
        trusted_proxies: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
    ) -> HeaderPolicy:
        # The default identity headers are always stripped, whatever else is configured.
        names = {*DEFAULT_IDENTITY_HEADERS, *identity_headers}
        identity = {h.lower().encode("ascii") for h in names}
        return cls(
            drop=frozenset(HOP_BY_HOP | FORWARDING | _FRAMING | identity),
            via=via_pseudonym.encode("ascii"),
            allow_underscores=allow_underscores,
            trusted=tuple(trusted_proxies),
        )

    def is_trusted(self, peer_ip: str) -> bool:
        if not self.trusted or not peer_ip:
            return False
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        return any(address in net for net in self.trusted)


#: A Forwarded host with one of these is a quoted-string (RFC 7239 §4).
_QUOTED_HOST = re.compile(rb'[";, ]')


def _forwarded_node(ip: str) -> bytes:
    """An RFC 7239 node: IPv6 addresses are quoted and bracketed."""
    return f'"[{ip}]"'.encode() if ":" in ip else ip.encode()


@dataclass(frozen=True, slots=True)
class Forwarding:
    """Values for the forwarding fields of one request."""

    client_ip: str
    proto: bytes
    host: bytes


def forwarded_fields(
    headers: Sequence[Header], peer_ip: str, scheme: bytes, host: bytes, trusted: bool
) -> list[Header]:
    """X-Forwarded-For/-Proto/-Host and Forwarded for the upstream request.

    From an untrusted peer every client-supplied value is replaced. From a trusted proxy (the
    load balancer) the chain it sent is kept and the peer appended, and its -Proto/-Host kept.
    """
    xff: list[bytes] = []
    proto = host_out = None
    forwarded: list[bytes] = []
    if trusted:
        for name, value in headers:
            lname = name.lower()
            if lname == b"x-forwarded-for":
                xff.append(value.strip(b" \t"))
            elif lname == b"x-forwarded-proto" and proto is None:
                proto = value.strip(b" \t")
            elif lname == b"x-forwarded-host" and host_out is None:
                host_out = value.strip(b" \t")
            elif lname == b"forwarded":
                forwarded.append(value.strip(b" \t"))
    peer = peer_ip.encode()
    xff.append(peer)
    proto = proto or scheme
    host_out = host_out or host
    element = b"for=" + _forwarded_node(peer_ip) + b";proto=" + scheme
    if host and _QUOTED_HOST.search(host) is None:
        element += b";host=" + host
    elif host:
        element += b';host="' + host.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    forwarded.append(element)
    return [
        (b"X-Forwarded-For", b", ".join([x for x in xff if x])),
        (b"X-Forwarded-Proto", proto),
        (b"X-Forwarded-Host", host_out),
        (b"Forwarded", b", ".join([f for f in forwarded if f])),
    ]


def end_to_end(
    headers: Iterable[Header],
    drop: frozenset[bytes],
    connection_tokens: frozenset[bytes],
    allow_underscores: bool = True,
) -> list[Header]:
    """Keep the end-to-end fields: drop ``drop``, the fields Connection names, and (unless
    allowed) names with underscores, which CGI-style backends would confuse with dashes."""
    out = []
    for name, value in headers:
        lname = name.lower()
        if lname in drop or lname in connection_tokens:
            continue
        if not allow_underscores and b"_" in name:
            continue
        out.append((name, value))
    return out


def request_lines(
    headers: Iterable[Header],
    drop: frozenset[bytes],
    connection_tokens: frozenset[bytes],
    allow_underscores: bool,
    session_cookie: bytes | None,
) -> list[bytes]:
    """The lines of the fields :func:`end_to_end` keeps, with cookie ``session_cookie`` (if
    given) removed as by :func:`without_cookie`: one pass on the hot path."""
    out = []
    for header in headers:
        name = header[0]
        lname = name.lower()
        if lname in drop or lname in connection_tokens:
            continue
        if not allow_underscores and 0x5F in name:  # "_", as an int: see parse_head
            continue
        if session_cookie is not None and lname == b"cookie":
            value = split_cookie(header[1], session_cookie)[1]
            if value:
                out.append(name + b": " + value)
            continue
        out.append(field_line(header))
    return out


_STS = b"strict-transport-security"
#: Fields not relayed as they come: the hop-by-hop ones, Content-Length (the AP frames the
#: body itself) and Strict-Transport-Security (kept aside: the AP's own policy may replace
#: it, see :meth:`ResponseFields.close`).
RESPONSE_DROP = HOP_BY_HOP | {b"content-length", _STS}
#: Connection options that name no field, so need no second pass.
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b"upgrade", b""})


class ResponseFields:
    """The fields of one backend response, sorted as llhttp reports them: the end-to-end ones
    as head lines, ready to send; the hop-by-hop ones (RFC 9110 §7.6.1) dropped, with what
    they say about the body kept aside.

    One call per field on the hot path: the upstream protocol hands :meth:`field` to its
    parser as ``on_header``, and :meth:`close` ends the head (fields after it are trailers,
    never relayed). :meth:`reset` starts the next response on the same connection.
    """

    lines: list[bytes]
    content_length: bytes | None
    chunked: bool
    upgrade: bytes | None
    #: Field names listed in Connection (dropped too), when any.
    named: set[bytes] | None
    #: The backend's Strict-Transport-Security lines, when it sent any.
    sts: list[bytes] | None
    open: bool

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lines = []
        self.content_length = self.upgrade = self.named = self.sts = None
        self.chunked = False
        self.open = True

    def field(self, name: bytes, value: bytes) -> None:
        if not self.open:
            return
        lname = name.lower()
        if lname not in RESPONSE_DROP:
            self.lines.append(name + b": " + value)
        elif lname == b"content-length":
            if self.content_length is None:
                self.content_length = value.strip(b" \t")
        elif lname == b"connection":
            # Usually one option that names no field ("keep-alive"): no set needed.
            if value.strip(b" \t").lower() not in _CONNECTION_OPTIONS:
                named = self.named
                if named is None:
                    named = self.named = set()
                named.update(t.strip(b" \t").lower() for t in value.split(b","))
        elif lname == b"transfer-encoding":
            self.chunked = True
        elif lname == b"upgrade":
            self.upgrade = value.strip(b" \t")
        elif lname == _STS:
            sts = self.sts
            if sts is None:
                self.sts = [name + b": " + value]
            else:
                sts.append(name + b": " + value)

    def close(self, sts: bytes = b"") -> list[bytes]:
        """End the head; the lines of the end-to-end fields, without those Connection names.

        ``sts``: the AP's own Strict-Transport-Security line, which replaces the backend's
        (one such field in the answer); empty: the backend's are relayed, if any."""
        self.open = False
        named = self.named
        lines = self.lines
        if named:
            named -= _CONNECTION_OPTIONS
            if named:
                lines = self.lines = [line for line in lines if _name(line) not in named]
        if sts:
            lines.append(sts)
        elif self.sts is not None and not (named and _STS in named):
            lines += self.sts
        return lines


def _name(line: bytes) -> bytes:
    """The lowercase name of a field line (names cannot hold a colon)."""
    return line[: line.index(b":")].lower()


@functools.lru_cache(maxsize=4096)
def split_cookie(value: bytes, name: bytes) -> tuple[str | None, bytes]:
    """Cookie ``name``'s value in one Cookie field value, and the field without it.

    Cached: a client sends the same Cookie value with every request of a session.
    """
    found: str | None = None
    kept: list[bytes] = []
    for part in value.split(b";"):
        key, eq, cookie = part.partition(b"=")
        # The name rule of gatehouse.cookies: every spelling of the pair is removed.
        if eq and key.strip(b" \t") == name:
            if found is None:
                try:
                    found = cookie.strip(b" \t").decode("ascii")
                except UnicodeDecodeError:
                    found = None
        else:
            kept.append(part)
    rest = value if len(kept) == value.count(b";") + 1 else b";".join(kept).strip(b" \t;")
    return found, rest


@functools.lru_cache(maxsize=4096)
def session_cookie(value: bytes, name: bytes) -> str | None:
    """The session cookie ``name`` in a request's Cookie fields (joined by ``; ``), read by the
    same rule as the portal (:func:`gatehouse.cookies.session_value`); None when absent or
    not ASCII.

    Raises:
        TwoSessionCookies: the cookie is there more than once; the request must be refused.
    """
    found = session_value((value.decode("latin-1"),), name.decode("latin-1"))
    return found if found is not None and found.isascii() else None


def cookie_value(headers: Iterable[Header], name: bytes) -> str | None:
    """The value of cookie ``name`` in the request's Cookie fields (RFC 6265 §5.4)."""
    for hname, value in headers:
        if len(hname) == 6 and hname.lower() == b"cookie":
            found = split_cookie(value, name)[0]
            if found is not None:
                return found
    return None


def without_cookie(headers: list[Header], name: bytes) -> list[Header]:
    """Remove cookie ``name`` from Cookie fields, so backends never see Gatehouse's session."""
    out: list[Header] = []
    for hname, value in headers:
        if len(hname) == 6 and hname.lower() == b"cookie":
            value = split_cookie(value, name)[1]
            if not value:
                continue
        out.append((hname, value))
    return out


def client_address(headers: Iterable[Header], peer_ip: str, trusted: bool) -> str:
    """The client's IP: the peer, or behind a trusted proxy the last X-Forwarded-For entry."""
    if not trusted:
        return peer_ip
    last = None
    for name, value in headers:
        if len(name) == 15 and name.lower() == b"x-forwarded-for":
            last = value
    if not last:
        return peer_ip
    candidate = last.rsplit(b",", 1)[-1].strip(b" \t").decode("latin-1")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer_ip

"""Where the portal may send a browser after login or logout: no open redirects.

A return URL (``rd``) is accepted when it is a path on the same site (``/x``, never ``//x``
or ``/\\x``, which browsers read as another host) or an absolute ``http(s)`` URL whose host is
the one the request came in on or matches a configured host pattern. Anything else becomes
``/``. A bare ``*`` pattern never allows arbitrary hosts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

FALLBACK = "/"
MAX_LENGTH = 4096


@dataclass(frozen=True, slots=True)
class HostPatterns:
    """Host names and ``*.domain`` patterns a return URL may point at."""

    exact: frozenset[str]
    suffixes: tuple[str, ...]

    @classmethod
    def of(cls, patterns: Iterable[str]) -> HostPatterns:
        exact: set[str] = set()
        suffixes: list[str] = []
        for raw in patterns:
            pattern = raw.strip().lower().rstrip(".")
            if not pattern or pattern == "*":
                continue  # "*" is the catch-all resource host, not a licence to go anywhere
            if pattern.startswith("*."):
                suffixes.append(pattern[1:])
            else:
                exact.add(pattern)
        return cls(frozenset(exact), tuple(suffixes))

    def match(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if host in self.exact:
            return True
        return any(host.endswith(s) and len(host) > len(s) for s in self.suffixes)


NO_HOSTS = HostPatterns(frozenset(), ())


def _clean(value: str) -> bool:
    # Browsers drop tabs and newlines inside URLs and treat "\" as "/": "/\t/evil" and
    # "/\\evil" both become "//evil". Refuse every control character, space and backslash.
    return all(0x20 < ord(c) < 0x7F for c in value) and "\\" not in value


def _hostname(authority: str) -> str | None:
    """The host name of a ``host[:port]`` authority (a Host header), lowercased."""
    try:
        name = urlsplit("//" + authority.strip()).hostname
    except ValueError:
        return None
    return name.rstrip(".") if name else None


def safe_return_url(
    rd: str | None, *, request_host: str | None = None, allowed: HostPatterns = NO_HOSTS
) -> str:
    """``rd`` if it is safe to redirect to, else ``/``.

    Args:
        rd: the return URL as the browser sent it.
        request_host: the ``Host`` (``host[:port]``) the portal request came in on.
        allowed: further hosts an absolute return URL may name.
    """
    if not rd or len(rd) > MAX_LENGTH or not _clean(rd):
        return FALLBACK
    if rd.startswith("/"):
        if rd.startswith("//"):
            return FALLBACK
        return rd
    try:
        parts = urlsplit(rd)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return FALLBACK
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        return FALLBACK
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return FALLBACK
    if request_host and hostname.rstrip(".") == _hostname(request_host):
        return rd
    if allowed.match(hostname):
        return rd
    return FALLBACK

"""Match a request's host and path to a configured resource.

Host patterns: an exact name, ``*.domain`` (any sub-domain) or ``*`` (any host). Among the
resources whose host pattern matches, the most specific host wins, then the longest path prefix.
Prefixes match on segment boundaries: ``/app`` matches ``/app`` and ``/app/x``, not ``/apple``.

The cost of a match does not grow with the number of resources: hosts and ``*.domain``
suffixes are dictionary keys (a host is looked up once, then once per dot for the
wildcards), and within a host pattern a path is looked up once per segment boundary, longest
first, in a dictionary of that pattern's prefixes (:class:`_Prefixes`). A pattern with only a
few prefixes (the common case) is scanned instead, which is cheaper than building the keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

#: Up to this many prefixes under one host pattern, a scan beats the per-boundary lookups.
_SCAN_MAX = 8


def prefix_matches(prefix: str, path: str) -> bool:
    """True when ``path`` is ``prefix`` or lies below it on a segment boundary."""
    if prefix == "/" or path == prefix:
        return True
    if not path.startswith(prefix):
        return False
    return prefix.endswith("/") or path[len(prefix)] == "/"


def strip_prefix(prefix: str, path: str) -> str:
    """Remove a matched prefix from a path, keeping it absolute."""
    rest = path[len(prefix.rstrip("/")) :]
    return rest if rest.startswith("/") else "/" + rest


class _Prefixes(Generic[T]):
    """The path prefixes of one host pattern and their targets; the longest match wins.

    With several resources on the same prefix the first one configured wins.
    """

    def __init__(self, entries: list[tuple[str, T]]) -> None:
        by_prefix: dict[str, T] = {}
        for prefix, target in entries:
            by_prefix.setdefault(prefix, target)
        self._by_prefix = by_prefix
        ordered = sorted(by_prefix.items(), key=lambda item: len(item[0]), reverse=True)
        self._scan = ordered if len(ordered) <= _SCAN_MAX else None

    def longest(self, path: str) -> tuple[T, str] | None:
        scan = self._scan
        if scan is not None:
            for prefix, scanned in scan:
                if prefix_matches(prefix, path):
                    return scanned, prefix
            return None
        # Every prefix that can match ``path``, longest first: the path itself, then at each
        # "/" from the right the part up to and including it, and the part before it.
        by_prefix = self._by_prefix
        target: T | None = by_prefix.get(path)
        if target is not None:
            return target, path
        end = path.rfind("/")
        while end >= 0:
            candidate = path[: end + 1]
            target = by_prefix.get(candidate)
            if target is not None:
                return target, candidate
            if end > 0:
                candidate = path[:end]
                target = by_prefix.get(candidate)
                if target is not None:
                    return target, candidate
            end = path.rfind("/", 0, end)
        target = by_prefix.get("/")  # matches any path, also one not starting with "/"
        return (target, "/") if target is not None else None


class Router(Generic[T]):
    """A compiled routing table; built once per config version, read on every request."""

    def __init__(self, routes: Sequence[tuple[Sequence[str], str, T]]) -> None:
        exact: dict[str, list[tuple[str, T]]] = {}
        wildcard: dict[str, list[tuple[str, T]]] = {}
        any_host: list[tuple[str, T]] = []
        for hosts, prefix, target in routes:
            for host in hosts:
                if host == "*":
                    any_host.append((prefix, target))
                elif host.startswith("*."):
                    wildcard.setdefault(host[1:], []).append((prefix, target))
                else:
                    exact.setdefault(host, []).append((prefix, target))
        self._exact = {host: _Prefixes(entries) for host, entries in exact.items()}
        #: By domain suffix with its leading dot (``*.example.com`` is ``.example.com``).
        self._wildcard = {suffix: _Prefixes(entries) for suffix, entries in wildcard.items()}
        self._any = _Prefixes(any_host) if any_host else None

    def match(self, host: str, path: str) -> tuple[T, str] | None:
        """Return the target and its matched prefix for ``host`` (lowercase, no port) and path."""
        prefixes = self._exact.get(host)
        if prefixes is not None:
            found = prefixes.longest(path)
            if found is not None:
                return found
        wildcard = self._wildcard
        if wildcard:
            # The longest suffix first, so *.a.example.com beats *.example.com; never the bare
            # domain (the suffix starts after the host's first character).
            dot = host.find(".", 1)
            while dot > 0:
                prefixes = wildcard.get(host[dot:])
                if prefixes is not None:
                    found = prefixes.longest(path)
                    if found is not None:
                        return found
                dot = host.find(".", dot + 1)
        if self._any is not None:
            return self._any.longest(path)
        return None

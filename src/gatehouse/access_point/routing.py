"""Match a request's host and path to a configured resource.

Host patterns: an exact name, ``*.domain`` (any sub-domain) or ``*`` (any host). Among the
resources whose host pattern matches, the most specific host wins, then the longest path prefix.
Prefixes match on segment boundaries: ``/app`` matches ``/app`` and ``/app/x``, not ``/apple``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_EXACT, _WILDCARD, _ANY = 2, 1, 0


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


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    prefix: str
    target: T


class Router(Generic[T]):
    """A compiled routing table; built once per config version, read on every request."""

    def __init__(self, routes: Sequence[tuple[Sequence[str], str, T]]) -> None:
        exact: dict[str, list[_Entry[T]]] = {}
        wildcard: dict[str, list[_Entry[T]]] = {}
        any_host: list[_Entry[T]] = []
        for hosts, prefix, target in routes:
            entry = _Entry(prefix, target)
            for host in hosts:
                if host == "*":
                    any_host.append(entry)
                elif host.startswith("*."):
                    wildcard.setdefault(host[1:], []).append(entry)
                else:
                    exact.setdefault(host, []).append(entry)

        def by_length(entries: list[_Entry[T]]) -> list[_Entry[T]]:
            return sorted(entries, key=lambda e: len(e.prefix), reverse=True)

        self._exact = {h: by_length(v) for h, v in exact.items()}
        # Longest domain suffix first, so *.a.example.com beats *.example.com.
        self._wildcard = sorted(
            ((suffix, by_length(v)) for suffix, v in wildcard.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._any = by_length(any_host)

    @staticmethod
    def _first(entries: list[_Entry[T]], path: str) -> T | None:
        for entry in entries:
            if prefix_matches(entry.prefix, path):
                return entry.target
        return None

    def match(self, host: str, path: str) -> tuple[T, str] | None:
        """Return the target and its matched prefix for ``host`` (lowercase, no port) and path."""
        entries = self._exact.get(host)
        if entries:
            for entry in entries:
                if prefix_matches(entry.prefix, path):
                    return entry.target, entry.prefix
        for suffix, entries in self._wildcard:
            if host.endswith(suffix) and len(host) > len(suffix):
                for entry in entries:
                    if prefix_matches(entry.prefix, path):
                        return entry.target, entry.prefix
        for entry in self._any:
            if prefix_matches(entry.prefix, path):
                return entry.target, entry.prefix
        return None

"""The router against a plain reference: every resource checked, longest match first.

:mod:`gatehouse.access_point.routing` looks prefixes and wildcard suffixes up in
dictionaries so that a match costs the same with 10 or 10,000 resources; these tests check it
chooses exactly what a scan of every configured resource would, on random tables large enough
for both of its ways (a scan under one host pattern with few prefixes, lookups with many).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from gatehouse.access_point.routing import Router, prefix_matches

Routes = list[tuple[list[str], str, int]]


def reference(routes: Sequence[tuple[Sequence[str], str, int]], host: str, path: str):  # type: ignore[no-untyped-def]
    """Exact host, then the longest ``*.domain`` suffix, then ``*``; in each, the longest
    prefix, the first configured on a tie."""

    def specificity(pattern: str) -> tuple[int, int] | None:
        if pattern == host:
            return (2, 0)
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return (1, len(pattern))
        if pattern == "*":
            return (0, 0)
        return None

    best: tuple[tuple[int, int], int, int] | None = None
    found: tuple[int, str] | None = None
    for order, (hosts, prefix, target) in enumerate(routes):
        for pattern in hosts:
            rank = specificity(pattern)
            if rank is None or not prefix_matches(prefix, path):
                continue
            key = (rank, len(prefix), -order)
            if best is None or key > best:
                best, found = key, (target, prefix)
    return found


HOSTS = ["*", "*.example.com", "*.a.example.com", "*.test", "www.example.com", "a.test"]
SEGMENTS = ["app", "api", "a", "apple", "v1", "x", ""]
REQUEST_HOSTS = [
    "www.example.com",
    "b.a.example.com",
    "a.example.com",
    "example.com",
    "a.test",
    "deep.sub.test",
    "other.org",
    ".example.com",
]


def random_path(rng: random.Random, trailing: bool) -> str:
    path = "/" + "/".join(rng.choice(SEGMENTS) for _ in range(rng.randint(0, 4)))
    return path + "/" if trailing and not path.endswith("/") and rng.random() < 0.3 else path


def random_routes(rng: random.Random, count: int) -> Routes:
    routes: Routes = []
    for target in range(count):
        hosts = rng.sample(HOSTS, rng.randint(1, 2))
        prefix = random_path(rng, trailing=True)
        routes.append((hosts, prefix, target))
    return routes


@pytest.mark.parametrize("count", [1, 5, 12, 40, 300])
def test_the_router_chooses_what_a_scan_of_every_resource_chooses(count: int) -> None:
    rng = random.Random(count)
    for _ in range(20):
        routes = random_routes(rng, count)
        router = Router(routes)
        for _ in range(200):
            host = rng.choice(REQUEST_HOSTS)
            path = random_path(rng, trailing=True) + rng.choice(["", "z", "/z"])
            assert router.match(host, path) == reference(routes, host, path), (host, path)


def test_paths_that_do_not_start_with_a_slash_still_reach_the_root_resource() -> None:
    routes: Routes = [(["*"], f"/r{i}", i) for i in range(20)] + [(["*"], "/", 99)]
    router = Router(routes)
    assert router.match("h", "*") == (99, "/")
    assert router.match("h", "r3/x") == (99, "/")
    assert router.match("h", "/r3/x") == (3, "/r3")


def test_ten_thousand_prefixes_under_one_host() -> None:
    routes: Routes = [(["*"], f"/r{i}", i) for i in range(10_000)]
    router = Router(routes)
    assert router.match("any", "/r0/index.html") == (0, "/r0")
    assert router.match("any", "/r9999") == (9999, "/r9999")
    assert router.match("any", "/r10000/") is None

"""A connection's memo of its last cached decision (``DecisionMemo``): requests on one
keep-alive connection, in process (fake sockets, a stand-in for the Policy service), checking
that the memo never serves what the cache would not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gatehouse.access_point.connection import ClientConnection, WorkerState
from gatehouse.access_point.decisions import (
    ALLOW,
    AUTHENTICATE,
    DENY,
    Decider,
    Decision,
    DecisionCache,
    session_hash,
)
from gatehouse.access_point.runtime import OriginRegistry, compile_config
from gatehouse.access_point.upstream import UpstreamConnection
from gatehouse.config.access_point import DEFAULT_IDENTITY_HEADERS, AccessPointConfig
from gatehouse.policy.calls import DecisionRequest
from tests.support.fake_socket import FakeTransport

SID = "s3cr3t-session-id"
OTHER = "another-session-id"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
ALICE = Decision(ALLOW, ((b"Remote-User", b"alice"),), 60.0)


class _Decider(Decider):
    """The Policy service, answering ``ap.answer`` and counting the questions."""

    def __init__(self, ap: AP) -> None:
        super().__init__(["http://127.0.0.1:9"], "ap1", DEFAULT_IDENTITY_HEADERS, 1.0, 1000)
        self.ap = ap

    async def decide(self, request: DecisionRequest) -> Decision:
        self.ap.asked.append(request)
        return self.ap.answer


class AP:
    """One client connection to an AP whose ``/`` is protected, and one pooled backend
    connection; the Policy service answers ``self.answer`` and counts the questions."""

    def __init__(self, loop: asyncio.AbstractEventLoop, **settings: Any) -> None:
        self.loop = loop
        self.settings = settings
        self.asked: list[DecisionRequest] = []
        self.answer = ALICE
        self.decider = _Decider(self)
        self.decider.cache.usable = True
        self.state = WorkerState(self._compile(1), loop)
        self.state.now = 1000.0
        self.client = FakeTransport()
        self.conn = ClientConnection(self.state)
        self.conn.connection_made(self.client)  # type: ignore[arg-type]
        self.backend = FakeTransport()

    def _compile(self, version: int) -> Any:
        config = AccessPointConfig.model_validate(
            {
                "access_point": {
                    "listen": "127.0.0.1:8000",
                    "policy_services": ["http://127.0.0.1:9"],
                    **self.settings,
                },
                "resources": [{"id": "app", "backends": ["http://127.0.0.1:8080"]}],
            }
        )
        registry = getattr(self, "registry", None) or OriginRegistry()
        self.registry = registry
        return compile_config(config, registry, version, self.decider)

    def reload(self) -> None:
        self.state.runtime = self._compile(2)

    def get(self, cookie: str | None = SID, method: str = "GET", *extra: str) -> tuple[int, bytes]:
        """One request; (status, the head the backend got or b"")."""
        route = self.state.runtime.router.match("127.0.0.1", "/")
        assert route is not None
        origin = route[0].group.origins[0]
        if not origin.idle:
            upstream = UpstreamConnection(origin)
            upstream.connection_made(self.backend)  # type: ignore[arg-type]
            origin.release(upstream, self.loop.time())
        lines = [f"{method} /x HTTP/1.1", "Host: app.test", *extra]
        if cookie is not None:
            lines.append(f"Cookie: theme=dark; gatehouse_session={cookie}")
        self.client.sent.clear()
        self.backend.sent.clear()
        self.conn.data_received(("\r\n".join(lines) + "\r\n\r\n").encode())
        for _ in range(5):  # let a question to the Policy service be answered
            self.loop.run_until_complete(asyncio.sleep(0))
        backend_head = b"".join(self.backend.sent)
        if backend_head:
            exchange = self.conn.active()
            assert exchange is not None
            assert exchange.upstream is not None
            exchange.upstream.data_received(RESPONSE)
        answer = b"".join(self.client.sent)
        return int(answer[9:12]), backend_head


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def ap(loop: asyncio.AbstractEventLoop) -> AP:
    return AP(loop)


def test_a_keep_alive_connection_is_served_from_its_memo(ap: AP) -> None:
    status, head = ap.get()
    assert (status, len(ap.asked)) == (200, 1)
    assert ap.conn.decision_memo is None, "a decision just asked for is not a cache hit"
    hits = ap.decider.cache.hits
    for _ in range(3):
        status, head = ap.get(SID, "GET", "Remote-User: mallory")
        assert status == 200
        assert b"Remote-User: alice\r\n" in head
        assert b"mallory" not in head
        assert b"gatehouse_session" not in head
        assert b"Cookie: theme=dark\r\n" in head
    assert len(ap.asked) == 1
    assert ap.conn.decision_memo is not None
    assert ap.decider.cache.hits == hits + 3


def test_a_revoked_session_is_not_served_from_the_memo(ap: AP) -> None:
    ap.get()
    ap.get()
    assert ap.conn.decision_memo is not None
    ap.decider.cache.revoke(session_hash(SID))
    ap.answer = Decision(AUTHENTICATE, (), 0.0, b"/_gatehouse/login")
    status, head = ap.get()
    assert (status, head, len(ap.asked)) == (303, b"", 2)
    status, head = ap.get()
    assert (status, head, len(ap.asked)) == (303, b"", 3)


def test_revoking_another_session_only_costs_a_lookup(ap: AP) -> None:
    ap.get()
    ap.get()
    ap.decider.cache.revoke(session_hash(OTHER))
    assert ap.get()[0] == 200
    assert len(ap.asked) == 1, "still in the cache"


@pytest.mark.parametrize(
    "change",
    [
        "expiry",
        "stream down",
        "stream restarted",
        "eviction",
        "replaced",
    ],
)
def test_the_memo_ends_with_its_cache_entry(ap: AP, change: str) -> None:
    ap.get()
    ap.get()
    assert ap.conn.decision_memo is not None
    cache = ap.decider.cache
    ap.answer = Decision(DENY, (), 60.0)
    if change == "expiry":
        ap.state.now += 60.0
    elif change == "stream down":
        cache.usable = False
    elif change == "stream restarted":
        cache.clear()
        cache.usable = True
    elif change == "eviction":
        cache.max_entries = 1
        cache.put(("x", "app", b"GET", "127.0.0.1", ()), ALICE, ap.state.now)
    elif change == "replaced":
        key = (session_hash(SID), "app", b"GET", "127.0.0.1", ())
        cache.put(key, ap.answer, ap.state.now)
    status, head = ap.get()
    assert (status, head) == (403, b"")
    assert len(ap.asked) == (1 if change == "replaced" else 2)


@pytest.mark.parametrize(
    ("cookie", "method"),
    [(OTHER, "GET"), (None, "GET"), (SID, "POST"), (SID, "HEAD")],
)
def test_the_memo_is_for_the_same_cookie_and_method(
    ap: AP, cookie: str | None, method: str
) -> None:
    ap.get()
    ap.get()
    ap.answer = Decision(DENY, (), 60.0)
    status, head = ap.get(cookie, method)
    assert (status, head) == (403, b"")
    assert len(ap.asked) == 2
    assert ap.asked[1]["session"] == cookie
    assert ap.asked[1]["method"] == method


def test_a_new_configuration_version_looks_up_the_cache_again(ap: AP) -> None:
    ap.get()
    ap.get()
    memo = ap.conn.decision_memo
    ap.reload()
    hits = ap.decider.cache.hits
    assert ap.get()[0] == 200
    assert ap.decider.cache.hits == hits + 1
    assert ap.conn.decision_memo is not memo, "made again for the new route"
    assert len(ap.asked) == 1


def test_no_memo_behind_a_trusted_proxy(loop: asyncio.AbstractEventLoop) -> None:
    """The client IP (part of the cache key) may change with every request then."""
    ap = AP(loop, trusted_proxies=["127.0.0.0/8"])
    for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        assert ap.get(SID, "GET", f"X-Forwarded-For: {ip}")[0] == 200
    assert ap.conn.decision_memo is None
    assert [r["client_ip"] for r in ap.asked] == ["10.0.0.1", "10.0.0.2"]


def test_no_memo_with_decision_headers(loop: asyncio.AbstractEventLoop) -> None:
    ap = AP(loop, decision_headers=["X-Team"])
    for team in ("blue", "blue", "red"):
        assert ap.get(SID, "GET", f"X-Team: {team}")[0] == 200
    assert ap.conn.decision_memo is None
    assert [r["headers"] for r in ap.asked] == [{"x-team": "blue"}, {"x-team": "red"}]


def test_cache_generation_changes_whenever_an_entry_may_go() -> None:
    cache = DecisionCache(max_entries=2)
    seen = {cache.generation}

    def changed() -> bool:
        new = cache.generation not in seen
        seen.add(cache.generation)
        return new

    cache.usable = True
    assert changed()
    key = ("s", "r", b"GET", "ip", ())
    cache.put(key, ALICE, 0.0)
    assert not changed(), "a new entry leaves the others as they were"
    assert cache.lookup(key, 1.0) == (60.0, ALICE)
    assert not changed()
    cache.put(key, ALICE, 1.0)
    assert changed(), "replaced"
    cache.put(("a", "r", b"GET", "ip", ()), ALICE, 0.0)
    cache.put(("b", "r", b"GET", "ip", ()), ALICE, 0.0)
    assert changed(), "evicted"
    assert cache.lookup(("b", "r", b"GET", "ip", ()), 60.0) is None
    assert changed(), "expired"
    cache.revoke("a")
    assert changed()
    cache.clear()
    assert changed()
    cache.usable = False
    assert changed()
    assert DecisionCache(1).generation not in seen, "unique across caches"

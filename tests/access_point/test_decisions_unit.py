"""Pure parts of the AP's access decisions: answer parsing, the cache, cookies, client IP."""

from __future__ import annotations

import pytest

from gatehouse.access_point.decisions import (
    ALLOW,
    AUTHENTICATE,
    DENY,
    Decision,
    DecisionCache,
    DecisionUnavailable,
    parse_decision,
    session_hash,
)
from gatehouse.access_point.headers import client_address, cookie_value, without_cookie

IDENTITY = frozenset({"remote-user", "remote-groups"})


def test_allow_keeps_only_identity_headers_and_strips_line_breaks() -> None:
    decision = parse_decision(
        {
            "decision": "allow",
            "ttl": 30,
            "headers": {"Remote-User": "al\r\nice", "Set-Cookie": "x=1", "Remote-Groups": "a,b"},
        },
        IDENTITY,
    )
    assert decision.kind == ALLOW
    assert decision.ttl == 30
    assert dict(decision.headers) == {b"Remote-User": b"alice", b"Remote-Groups": b"a,b"}
    # Ready to go into a request head as is.
    assert decision.lines == b"Remote-User: alice\r\nRemote-Groups: a,b"
    assert Decision(ALLOW, (), 1.0).lines == b""


@pytest.mark.parametrize(
    "url",
    ["https://evil.example/", "//evil.example/x", "javascript:alert(1)", "/x\r\nSet-Cookie: a"],
)
def test_authenticate_accepts_only_local_login_urls(url: str) -> None:
    with pytest.raises(DecisionUnavailable):
        parse_decision({"decision": "authenticate", "login_url": url}, IDENTITY)


def test_authenticate_and_deny() -> None:
    auth = parse_decision(
        {"decision": "authenticate", "login_url": "/_gatehouse/login?rd=%2F"}, IDENTITY
    )
    assert (auth.kind, auth.location, auth.ttl) == (AUTHENTICATE, b"/_gatehouse/login?rd=%2F", 0)
    deny = parse_decision({"decision": "deny", "ttl": -5}, IDENTITY)
    assert (deny.kind, deny.ttl) == (DENY, 0)


@pytest.mark.parametrize(
    "data", [None, [], {"decision": "maybe"}, {"decision": "allow", "headers": []}]
)
def test_malformed_answers_are_refused(data: object) -> None:
    with pytest.raises(DecisionUnavailable):
        parse_decision(data, IDENTITY)


def key(session: str, resource: str = "r") -> tuple[str, str, bytes, str, tuple[str, ...]]:
    return (session, resource, b"GET", "127.0.0.1", ())


def test_cache_expiry_revocation_and_bound() -> None:
    cache = DecisionCache(max_entries=3)
    allow = Decision(ALLOW, (), 10.0)
    cache.put(key("s1"), allow, now=0.0)
    assert cache.get(key("s1"), 1.0) is None, "unusable until the event stream says hello"
    cache.usable = True
    cache.put(key("s1"), allow, now=0.0)
    cache.put(key("s1", "other"), allow, now=0.0)
    assert cache.get(key("s1"), 9.9) is allow
    assert cache.get(key("s1"), 10.0) is None, "expired"
    cache.revoke("s1")
    assert cache.get(key("s1", "other"), 1.0) is None, "revoked with its session"
    for i in range(5):
        cache.put(key(f"s{i}"), allow, now=0.0)
    assert len(cache) == 3
    assert cache.get(key("s0"), 1.0) is None, "oldest evicted first"
    assert cache.get(key("s4"), 1.0) is allow
    cache.put(key("z"), Decision(DENY, (), 0.0), now=0.0)
    assert cache.get(key("z"), 0.0) is None, "ttl 0 is never cached"


def test_session_hash_is_stable_and_short() -> None:
    assert session_hash("abc") == session_hash("abc")
    assert len(session_hash("abc")) == 32
    assert session_hash("abc") != session_hash("abd")


def test_cookie_value_and_removal() -> None:
    headers = [(b"Cookie", b"a=1; gatehouse_session=SID; b=2"), (b"X", b"y")]
    assert cookie_value(headers, b"gatehouse_session") == "SID"
    assert cookie_value(headers, b"gatehouse") is None
    assert without_cookie(headers, b"gatehouse_session") == [(b"Cookie", b"a=1; b=2"), (b"X", b"y")]
    only = [(b"cookie", b"gatehouse_session=SID")]
    assert without_cookie(only, b"gatehouse_session") == []


@pytest.mark.parametrize(
    ("xff", "trusted", "expected"),
    [
        (b"203.0.113.9", True, "203.0.113.9"),
        (b"198.51.100.1, 203.0.113.9", True, "203.0.113.9"),
        (b"203.0.113.9", False, "127.0.0.1"),
        (b"not-an-ip", True, "127.0.0.1"),
        (b"2001:db8::1", True, "2001:db8::1"),
    ],
)
def test_client_address(xff: bytes, trusted: bool, expected: str) -> None:
    assert client_address([(b"X-Forwarded-For", xff)], "127.0.0.1", trusted) == expected


@pytest.mark.parametrize(
    ("value", "session", "rest"),
    [
        (b"a=1; gatehouse_session=SID; b=2", "SID", b"a=1; b=2"),
        (b"gatehouse_session=SID; b=2", "SID", b"b=2"),
        (b"a=1;gatehouse_session=SID", "SID", b"a=1"),
        (b"gatehouse_session=SID", "SID", b""),
        (b"a=1;  b=2", None, b"a=1;  b=2"),  # untouched, byte for byte
        (b"gatehouse_session2=X; a=1", None, b"gatehouse_session2=X; a=1"),
        (b"x_gatehouse_session=X", None, b"x_gatehouse_session=X"),
        (b"gatehouse_session=A; gatehouse_session=B", "A", b""),
    ],
)
def test_split_cookie(value: bytes, session: str | None, rest: bytes) -> None:
    from gatehouse.access_point.headers import split_cookie

    assert split_cookie(value, b"gatehouse_session") == (session, rest)

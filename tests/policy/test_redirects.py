"""Return URLs after login: only the same site or configured hosts, never an open redirect."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatehouse.policy.redirects import HostPatterns, safe_return_url

ALLOWED = HostPatterns.of(["app.example.com", "*.corp.example", "*"])


@pytest.mark.parametrize(
    ("rd", "expected"),
    [
        ("/", "/"),
        ("/app/page?x=1&y=2#frag", "/app/page?x=1&y=2#frag"),
        ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
        ("https://portal.example.com/x", "https://portal.example.com/x"),
        ("http://PORTAL.example.com:8443/x", "http://PORTAL.example.com:8443/x"),
        ("https://app.example.com/", "https://app.example.com/"),
        ("https://deep.sub.corp.example/a", "https://deep.sub.corp.example/a"),
        # refused
        (None, "/"),
        ("", "/"),
        ("//evil.example", "/"),
        ("//evil.example/path", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        (" /x", "/"),
        ("https://evil.example/", "/"),
        ("http://evil.example", "/"),
        ("https://corp.example/", "/"),  # *.corp.example covers sub-domains only
        ("https://evilcorp.example/", "/"),
        ("https://app.example.com.evil.example/", "/"),
        ("https://app.example.com@evil.example/", "/"),
        ("https://user:pw@app.example.com/", "/"),
        ("https:evil.example", "/"),
        ("https:/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("JavaScript://app.example.com/%0aalert(1)", "/"),
        ("data:text/html,<script>alert(1)</script>", "/"),
        ("ftp://app.example.com/", "/"),
        ("relative/path", "/"),
        ("evil.example", "/"),
        ("https://app.example.com:99999/", "/"),
        ("/" + "a" * 5000, "/"),
    ],
)
def test_return_urls(rd: str | None, expected: str) -> None:
    assert safe_return_url(rd, request_host="portal.example.com", allowed=ALLOWED) == expected


def test_star_alone_allows_no_external_host() -> None:
    anything = HostPatterns.of(["*"])
    assert safe_return_url("https://evil.example/", allowed=anything) == "/"
    assert not anything.match("evil.example")


def test_default_allows_only_relative_and_the_request_host() -> None:
    assert safe_return_url("/x") == "/x"
    assert safe_return_url("https://a.example/") == "/"
    assert safe_return_url("https://a.example/", request_host="a.example:8080") == (
        "https://a.example/"
    )
    assert safe_return_url("https://a.example/", request_host="b.example") == "/"


@given(st.text(max_size=80))
def test_result_is_always_local_or_an_allowed_host(rd: str) -> None:
    result = safe_return_url(rd, request_host="portal.example.com", allowed=ALLOWED)
    if result.startswith("/"):
        assert not result.startswith(("//", "/\\"))
        assert all(0x20 < ord(c) < 0x7F for c in result)
    else:
        assert result == rd
        host = result.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0].lower()
        assert host == "portal.example.com" or ALLOWED.match(host)

"""The Access Point's 403 page for a denied user: a sign-out link under the reserved prefix,
with the denied path as the return path; escaped, small, valid HTML. (End to end through a
real AP and Policy service: ``tests/policy/test_lockout_page.py``.)"""

from __future__ import annotations

from html.parser import HTMLParser

from gatehouse.access_point import pages
from gatehouse.access_point.request import RequestHead

MESSAGE = "You do not have access to this resource."


def head(path: str, query: bytes | None = None, method: bytes = b"GET") -> RequestHead:
    return RequestHead(
        method=method,
        path=path,
        query=query,
        version=b"1.1",
        headers=[(b"host", b"gw.test")],
        host="gw.test",
        authority=b"gw.test",
        content_length=None,
        chunked=False,
        keep_alive=True,
        expect_continue=False,
        upgrade=None,
        connection_tokens=frozenset(),
    )


class Links(HTMLParser):
    """Collects hrefs and checks that every opened element (but void ones) is closed."""

    VOID = frozenset({"meta", "link", "br", "img", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v or "" for k, v in attrs if k == "href")
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open[-1:] == [tag], (self.open, tag)
        self.open.pop()


def split(raw: bytes) -> tuple[bytes, str]:
    head_part, _, body = raw.partition(b"\r\n\r\n")
    return head_part, body.decode()


def test_the_403_page_links_to_sign_out_with_the_way_back() -> None:
    raw = pages.forbidden_page(MESSAGE, "/_gatehouse/", head("/staff/report", b"y=2&z=3"), False)
    status, body = split(raw)
    assert status.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Content-Type: text/html; charset=utf-8" in status
    assert b"Cache-Control: no-store" in status
    assert f"<p>{MESSAGE}</p>" in body
    assert (
        '<p><a href="/_gatehouse/logout?rd=%2Fstaff%2Freport%3Fy%3D2%26z%3D3">'
        "Sign out / sign in as someone else</a></p>"
    ) in body
    parser = Links()
    parser.feed(body)
    parser.close()
    assert parser.hrefs == ["/_gatehouse/logout?rd=%2Fstaff%2Freport%3Fy%3D2%26z%3D3"]
    assert parser.open == []
    assert "http" not in body.split("<body>")[-1]  # nothing loaded from anywhere


def test_the_link_follows_the_reserved_prefix() -> None:
    _, body = split(pages.forbidden_page(MESSAGE, "/_gh/", head("/x"), True))
    assert '<a href="/_gh/logout?rd=%2Fx">' in body
    _, root = split(pages.forbidden_page(MESSAGE, "/_gh/", head("/"), True))
    assert '<a href="/_gh/logout">' in root  # "/" is where the portal returns anyway


def test_the_return_path_is_escaped_and_never_another_host() -> None:
    _, body = split(pages.forbidden_page(MESSAGE, "/_gatehouse/", head("/a", b'q="><x>'), False))
    assert '<a href="/_gatehouse/logout?rd=%2Fa%3Fq%3D%22%3E%3Cx%3E">' in body
    assert "<x>" not in body
    for path in ("//evil.example/x", "/" + "a" * 3000):
        _, other = split(pages.forbidden_page(MESSAGE, "/_gatehouse/", head(path), False))
        assert '<a href="/_gatehouse/logout">' in other


def test_head_requests_get_the_head_only() -> None:
    raw = pages.forbidden_page(MESSAGE, "/_gatehouse/", head("/x", method=b"HEAD"), False)
    status, body = split(raw)
    assert body == ""
    assert b"Content-Length: " in status
    assert b"Content-Length: 0" not in status


def test_other_error_pages_have_no_sign_out_link() -> None:
    _, body = split(pages.error_page(502, "The backend could not be reached.", True))
    assert "logout" not in body
    assert "<p><small>Gatehouse access point</small></p>" in body

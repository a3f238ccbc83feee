"""End to end, on one kept-alive connection (where the AP remembers the connection's last
cached decision): a logout ends the session on that very connection within a second, and a
published policy change too. Real processes: Authentication, Policy, an AP without decision
headers (so the per-connection memo is in use), the demo backend."""

from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from tests.support.gateway import add_user, start_gateway

PASSWORD = "correct horse battery staple"


def until(check: Callable[[], bool], what: str, timeout: float = 1.0) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not within {timeout}s: {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_logout_ends_the_session_on_a_kept_alive_connection(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, {"resources": {"demo": "authenticated"}}, [{"id": "demo"}])
    try:
        add_user(gw.home, "alice", PASSWORD)
        browser = gw.browser()
        assert browser.login("alice", PASSWORD, rd="/demo/").status == 303
        cookie = f"gatehouse_session={browser.cookies['gatehouse_session']}"
        kept = http.client.HTTPConnection("127.0.0.1", gw.ap.port, timeout=5)

        def status() -> int:
            kept.request("GET", "/demo/", headers={"Cookie": cookie})
            response = kept.getresponse()
            response.read()
            return response.status

        # Several requests on one connection: after the first, the AP answers from the
        # connection's memo of its cached decision.
        assert [status() for _ in range(5)] == [200] * 5
        sock = kept.sock
        page = browser.get("/_gatehouse/logout")
        token = page.body.split(b'name="csrf" value="')[1].split(b'"')[0].decode()
        logout = browser.request(
            "POST",
            "/_gatehouse/logout",
            urllib.parse.urlencode({"csrf": token}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert logout.status in (200, 303)
        until(lambda: status() == 303, "the logged-out session refused on the same connection")
        assert kept.sock is sock, "the same connection all along"
        kept.close()
    finally:
        gw.stop()

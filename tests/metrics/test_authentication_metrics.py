"""A real Authentication service counts password checks by outcome and the lockouts they
cause, on its metrics listener."""

from __future__ import annotations

import urllib.request

from tests.authentication.conftest import (  # fixtures, used by name
    StartAuth,
    add_user,
    sqlite_user_db,  # noqa: F401
    start_auth,  # noqa: F401
)
from tests.authentication.http import verify
from tests.support.processes import free_port, wait_port


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_password_checks_and_lockouts_are_counted(
    start_auth: StartAuth,  # noqa: F811
    sqlite_user_db: str,  # noqa: F811
) -> None:
    add_user(sqlite_user_db, "alice", "right horse battery")
    port = free_port()
    service = start_auth(sqlite_user_db, metrics={"listen": f"127.0.0.1:{port}"})
    wait_port("127.0.0.1", port, 10, service.proc)
    assert verify(service, "alice", "right horse battery")["result"] == "ok"
    for _ in range(3):  # FAST_LOCKOUT: the third failure locks the account
        assert verify(service, "alice", "wrong")["result"] == "invalid"
    assert verify(service, "alice", "right horse battery")["result"] == "locked"
    got = scrape(port)
    assert got['gatehouse_authentications_total{method="password",outcome="ok"}'] == 1
    assert got['gatehouse_authentications_total{method="password",outcome="invalid"}'] == 3
    assert got['gatehouse_authentications_total{method="password",outcome="locked"}'] == 1
    assert got['gatehouse_authentication_lockouts_total{scope="account"}'] >= 1
    [build] = [key for key in got if key.startswith("gatehouse_build_info{")]
    assert 'role="authentication"' in build
    route = 'gatehouse_http_request_duration_seconds_count{route="/internal/v1/password/verify"}'
    assert got[route] == 5

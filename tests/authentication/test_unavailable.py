"""A user DB that is down answers 503 ``unavailable`` (never a traceback), then recovers."""

from __future__ import annotations

import time

from tests.authentication.conftest import StartAuth, add_user
from tests.authentication.http import call, verify
from tests.support.postgres import PostgresCluster
from tests.support.processes import Service

VERIFY_BODY = b'{"username": "alice", "password": "correct horse", "client_ip": "192.0.2.1"}'


def assert_unavailable(auth: Service) -> None:
    for method, path, body in [
        ("GET", "/internal/v1/health", None),
        ("POST", "/internal/v1/password/verify", VERIFY_BODY),
    ]:
        status, _, answer = call(auth, method, path, body)
        assert (status, answer["error"]) == (503, "unavailable"), (path, answer)
        assert answer["message"].startswith("database unavailable")


def wait_healthy(auth: Service, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while call(auth, "GET", "/internal/v1/health")[0] != 200:
        assert time.monotonic() < deadline, auth.output()
        time.sleep(0.1)


def test_starts_before_its_database_and_migrates_when_it_appears(
    postgres_cluster: PostgresCluster, start_auth: StartAuth
) -> None:
    url = postgres_cluster.url("appears_later")
    auth = start_auth(url)
    assert_unavailable(auth)
    postgres_cluster.sql("CREATE DATABASE appears_later")
    wait_healthy(auth)
    add_user(url, "alice", "correct horse")
    assert verify(auth, "alice", "correct horse")["result"] == "ok"
    assert "Traceback" not in auth.output()


def test_database_stopped_and_back(
    postgres_cluster: PostgresCluster, postgres_url: str, start_auth: StartAuth
) -> None:
    # failover_wait 0: the check is answered 503 at once (tests/storage/test_retry_*.py show
    # the wait for the database that a failover gets by default).
    auth = start_auth(postgres_url, database={"failover_wait": 0})
    add_user(postgres_url, "alice", "correct horse")
    assert verify(auth, "alice", "correct horse")["result"] == "ok"
    postgres_cluster.stop()
    try:
        assert_unavailable(auth)
    finally:
        postgres_cluster.start()
    assert verify(auth, "alice", "correct horse")["result"] == "ok"
    assert call(auth, "GET", "/internal/v1/health")[0] == 200
    assert "Traceback" not in auth.output()

"""The Policy service as a real process: decision API, event stream, admin API, lifecycle.

Every test talks HTTP on loopback to ``gatehouse policy``, which checks passwords with a real
``gatehouse authentication`` process; users are created with ``gatehouse users add``. The
harness here (:class:`Stack`, :class:`Browser`, :class:`EventReader`) is shared with
``test_portal.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from gatehouse.policy.events import EventHub, PostgresBridge, notify_payloads, parse_payload
from gatehouse.policy.sessions import hash_session_id
from tests.support.postgres import PostgresCluster, postgres_cluster, postgres_url
from tests.support.processes import GATEHOUSE, Service, free_port, write_config

__all__ = ["postgres_cluster", "postgres_url"]

TOKEN = "test-admin-token-0123456789"
PASSWORD = "correct horse battery staple"
PREFIX = "/_gatehouse/"
RESOURCES: dict[str, Any] = {
    "app": "authenticated",
    "pub": "public",
    "staff-only": {"groups_any": ["staff"]},
    "strong": {"auth_methods": ["password", "otp"]},
    "office": {"all": ["authenticated", {"ip": ["10.0.0.0/8"]}]},
}


# --- processes -----------------------------------------------------------------------------


def gatehouse(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEHOUSE, *args, "--home", str(home)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_user(home: Path, name: str, *groups: str, email: str | None = None) -> None:
    args = ["users", "add", name, "--password-stdin", "--display-name", name.title()]
    for group in groups:
        args += ["--group", group]
    if email:
        args += ["--email", email]
    done = gatehouse(home, *args, stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr


@dataclass
class Reply:
    status: int
    headers: Message
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, resp.headers, resp.read().decode("utf-8", "replace"))
    finally:
        conn.close()


class Policy:
    """A running ``gatehouse policy`` process."""

    def __init__(self, service: Service, config: dict[str, Any], tmp: Path) -> None:
        self.service = service
        self.config = config
        self.tmp = tmp

    @property
    def host(self) -> str:
        return self.service.host

    @property
    def port(self) -> int:
        return self.service.port

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return http_request(self.host, self.port, method, path, body, headers)

    def decide(self, session: str | None, resource: str = "app", **extra: Any) -> Reply:
        request = {
            "session": session,
            "resource": resource,
            "method": "GET",
            "path": "/app/page",
            "client_ip": "192.0.2.10",
            "headers": {},
            "ap": "ap1",
            **extra,
        }
        return self.request(
            "POST",
            "/internal/v1/decide",
            json.dumps(request).encode(),
            {"Content-Type": "application/json"},
        )

    def decision(self, session: str | None, resource: str = "app", **extra: Any) -> Any:
        reply = self.decide(session, resource, **extra)
        assert reply.status == 200, reply.body
        return reply.json()

    def admin(self, method: str, path: str, token: str | None = TOKEN) -> Reply:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.request(method, path, headers=headers)

    def events(self) -> EventReader:
        return EventReader(self.host, self.port)

    def stop(self) -> int:
        return self.service.stop()


class Stack:
    """An installation: a home with users, a running Authentication service, and Policy
    services started on demand."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        gatehouse(self.home, "groups", "add", "staff")
        add_user(self.home, "alice", "staff", email="alice@example.com")
        add_user(self.home, "bob")
        for name in ("mallory", "trudy", "dave"):
            add_user(self.home, name)
        (tmp / "token").write_text(TOKEN + "\n")
        self.auth_port = free_port()
        auth_config = {
            "authentication": {
                "listen": f"127.0.0.1:{self.auth_port}",
                "lockout": {
                    "insecure_no_rate_cap": True,
                    "account_max_failures": 3,
                    "account_window": 60,
                    "account_lock": 120,
                    "ip_max_failures": 10000,
                },
            }
        }
        self.auth = Service(
            [
                "authentication",
                "--config",
                str(write_config(tmp / "auth.yaml", auth_config)),
                "--home",
                str(self.home),
            ],
            tmp / "auth.log",
            "127.0.0.1",
            self.auth_port,
        ).wait_ready()
        self.policies: list[Policy] = []
        self._names = iter(range(1, 1000))

    def start_policy(
        self,
        policy: dict[str, Any] | None = None,
        sessions: dict[str, Any] | None = None,
        **sections: Any,
    ) -> Policy:
        n = next(self._names)
        port = free_port()
        config: dict[str, Any] = {
            "policy": {
                "id": f"ps{n}",
                "listen": f"127.0.0.1:{port}",
                "authentication": [f"http://127.0.0.1:{self.auth_port}"],
                "admin_token_file": str(self.tmp / "token"),
                "decision_ttl": 30,
                # The tests play the Access Point from loopback, over plaintext.
                "trusted_proxies": ["127.0.0.0/8"],
                **(policy or {}),
            },
            "sessions": {"idle_timeout": 600, "absolute_timeout": 3600, **(sessions or {})},
            "resources": RESOURCES,
            **sections,
        }
        config["policy"] = {k: v for k, v in config["policy"].items() if v is not None}
        path = write_config(self.tmp / f"policy{n}.yaml", config)
        service = Service(
            ["policy", "--config", str(path), "--home", str(self.home)],
            self.tmp / f"policy{n}.log",
            "127.0.0.1",
            port,
        )
        running = Policy(service.wait_ready(), config, self.tmp)
        self.policies.append(running)
        return running

    def audit_events(self, event: str) -> list[tuple[str | None, dict[str, Any]]]:
        with sqlite3.connect(self.home / "gatehouse.db") as db:
            rows = db.execute(
                "SELECT username, detail FROM audit_events WHERE event = ? ORDER BY id", (event,)
            ).fetchall()
        return [(name, json.loads(detail)) for name, detail in rows]

    def close(self) -> None:
        for running in self.policies:
            running.stop()
        self.auth.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def ps(stack: Stack) -> Policy:
    """A Policy service on the installation's SQLite session DB."""
    return stack.start_policy()


# --- a browser with a cookie jar ----------------------------------------------------------


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class Site:
    """Any HTTP server on loopback (an Access Point, say)."""

    host: str
    port: int

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        return http_request(self.host, self.port, method, path, body, headers)


@dataclass
class Browser:
    """Just enough of a browser: a cookie jar and forms."""

    ps: Policy | Site
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        reply = self.ps.request(method, path, body, sent)
        self.set_cookies = reply.headers.get_all("Set-Cookie") or []
        for header in self.set_cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return reply

    def get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None) -> Reply:
        return self.request("POST", path, form, headers)

    def login_form(self, rd: str | None = None, headers: dict[str, str] | None = None) -> str:
        """Open the login page; returns the form's CSRF value."""
        query = "" if rd is None else "?" + urlencode({"rd": rd})
        page = self.get(f"{PREFIX}login{query}", headers)
        assert page.status == 200, page.body
        match = CSRF_FIELD.search(page.body)
        assert match is not None
        return match.group(1)

    def login(
        self,
        username: str = "alice",
        password: str = PASSWORD,
        rd: str = "/app/page",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        csrf = self.login_form(rd, headers)
        form = {"username": username, "password": password, "csrf": csrf, "rd": rd}
        return self.post(f"{PREFIX}login", form, headers)

    @property
    def session(self) -> str | None:
        return self.cookies.get("gatehouse_session")


def logged_in(ps: Policy, username: str = "alice") -> str:
    browser = Browser(ps)
    reply = browser.login(username)
    assert reply.status == 303, reply.body
    assert browser.session is not None
    return browser.session


# --- the event stream ----------------------------------------------------------------------


class EventReader:
    """Reads ``/internal/v1/events`` on a thread; events arrive in :attr:`events`."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.conn.request("GET", "/internal/v1/events")
        self.response = self.conn.getresponse()
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                self.events.put(json.loads(line))
        except (OSError, ValueError, http.client.HTTPException):
            pass
        self.events.put(None)

    def next(self, timeout: float) -> dict[str, Any] | None:
        return self.events.get(timeout=timeout)

    def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {kind!r} event within {timeout} s")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                raise AssertionError(f"stream ended while waiting for {kind!r}")
            if event.get("type") == kind:
                return event

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
        self.conn.close()

    def __enter__(self) -> EventReader:
        hello = self.next(5)
        assert hello is not None
        assert hello["type"] == "hello"
        self.hello = hello
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- health and errors ---------------------------------------------------------------------


def test_health(ps: Policy) -> None:
    reply = ps.request("GET", "/internal/v1/health")
    assert reply.status == 200
    assert reply.json()["status"] == "ok"
    assert reply.json()["role"] == "policy"
    routing = reply.json()["authentication"]  # which Authentication service logins use
    assert routing["using"] == routing["endpoints"][0]["url"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "body is not valid JSON"),
        (b"[]", "body must be a JSON object"),
        (b'{"method": "GET", "path": "/", "client_ip": "192.0.2.1"}', "resource: missing"),
        (
            b'{"resource": "app", "method": "GET", "path": "/", "client_ip": "nope"}',
            "client_ip: not an IP address: 'nope'",
        ),
        (
            b'{"resource": "app", "method": "GET", "path": "x", "client_ip": "192.0.2.1"}',
            "path: must start with '/'",
        ),
        (
            b'{"resource": "app", "method": "GET", "path": "/", "client_ip": "192.0.2.1",'
            b' "headers": {"a": 1}}',
            "headers: must be an object of strings",
        ),
    ],
)
def test_bad_decision_requests_get_json_errors(ps: Policy, body: bytes, message: str) -> None:
    reply = ps.request("POST", "/internal/v1/decide", body, {"Content-Type": "application/json"})
    assert reply.status == 400
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {"error": "bad_request", "message": message}


def test_unknown_internal_paths_and_methods_are_json(ps: Policy) -> None:
    missing = ps.request("GET", "/internal/v1/nothing")
    assert missing.status == 404
    assert missing.json()["error"] == "not_found"
    wrong = ps.request("GET", "/internal/v1/decide")
    assert wrong.status == 405
    assert wrong.json()["error"] == "bad_request"
    page = ps.request("GET", f"{PREFIX}nothing")
    assert page.status == 404
    assert "<main" in page.body
    assert "Traceback" not in page.body


# --- decisions -----------------------------------------------------------------------------


def test_public_resources_are_allowed_without_a_session(ps: Policy) -> None:
    assert ps.decision(None, "pub") == {"decision": "allow", "headers": {}, "ttl": 30.0}


def test_without_a_session_the_answer_is_authenticate(ps: Policy) -> None:
    answer = ps.decision(None, url="https://app.example/app/page?a=1&b=2")
    assert answer == {
        "decision": "authenticate",
        "methods": ["password"],
        "step_up": False,
        "login_url": "/_gatehouse/login?rd=https%3A%2F%2Fapp.example%2Fapp%2Fpage%3Fa%3D1%26b%3D2",
    }
    # Without the original URL, the path is the return URL.
    assert ps.decision(None)["login_url"] == "/_gatehouse/login?rd=%2Fapp%2Fpage"
    # Unknown, malformed and foreign session ids count as no session.
    for junk in ("x", "A" * 43, "../../etc/passwd"):
        assert ps.decision(junk)["decision"] == "authenticate"


def test_a_session_is_allowed_with_identity_headers(ps: Policy) -> None:
    session = logged_in(ps, "alice")
    answer = ps.decision(session)
    assert answer["decision"] == "allow"
    assert answer["headers"] == {
        "Remote-User": "alice",
        "Remote-Groups": "staff",
        "Remote-Email": "alice@example.com",
        "Remote-Name": "Alice",
        "Remote-Auth-Methods": "password",
    }
    assert 0 < answer["ttl"] <= 30


def test_deny_when_rules_say_no(ps: Policy) -> None:
    bob = logged_in(ps, "bob")
    assert ps.decision(bob, "staff-only") == {"decision": "deny", "ttl": 30.0}
    alice = logged_in(ps, "alice")
    assert ps.decision(alice, "staff-only")["decision"] == "allow"
    # Logging in would not help from outside the network: deny, not authenticate.
    assert ps.decision(None, "office")["decision"] == "deny"
    assert ps.decision(alice, "office", client_ip="10.1.2.3")["decision"] == "allow"
    assert ps.decision(alice, "no-such-resource")["decision"] == "deny"


def test_step_up_names_the_missing_methods(ps: Policy) -> None:
    alice = logged_in(ps, "alice")
    assert ps.decision(alice, "strong", url="https://app.example/s") == {
        "decision": "authenticate",
        "methods": ["otp"],
        "step_up": True,
        "login_url": "/_gatehouse/login?rd=https%3A%2F%2Fapp.example%2Fs&step=otp",
    }
    answer = ps.decision(None, "strong")
    assert answer["methods"] == ["password", "otp"]
    assert answer["step_up"] is False


# --- the event stream ----------------------------------------------------------------------


def test_event_stream_says_hello_then_pings(ps: Policy) -> None:
    with ps.events() as events:
        assert events.response.status == 200
        assert events.response.headers["Content-Type"] == "application/x-ndjson"
        assert events.hello["instance"].startswith("ps")
        started = time.monotonic()
        events.wait_for("ping", 7)
        assert 3 < time.monotonic() - started < 7


# --- admin API -----------------------------------------------------------------------------


def test_admin_api_needs_the_token(ps: Policy) -> None:
    for token in (None, "wrong-token-wrong-token"):
        reply = ps.admin("GET", "/internal/v1/sessions", token)
        assert reply.status == 401
        assert reply.json()["error"] == "unauthorized"
        assert ps.admin("DELETE", "/internal/v1/sessions?user=alice", token).status == 401
        assert ps.admin("DELETE", "/internal/v1/sessions/" + "0" * 32, token).status == 401


def test_admin_lists_and_revokes_sessions(stack: Stack, ps: Policy) -> None:
    first = logged_in(ps, "dave")
    second = logged_in(ps, "dave")
    listed = ps.admin("GET", "/internal/v1/sessions?user=dave").json()["sessions"]
    assert [s["id_hash"] for s in listed] == [hash_session_id(first), hash_session_id(second)]
    assert listed[0]["username"] == "dave"
    assert listed[0]["methods"] == ["password"]
    everyone = ps.admin("GET", "/internal/v1/sessions").json()["sessions"]
    assert {s["username"] for s in everyone} >= {"dave"}

    with ps.events() as events:
        reply = ps.admin("DELETE", f"/internal/v1/sessions/{hash_session_id(first)}")
        assert reply.json() == {"revoked": 1}
        assert events.wait_for("revoke", 1)["session"] == hash_session_id(first)
    assert ps.decision(first)["decision"] == "authenticate"
    assert ps.decision(second)["decision"] == "allow"
    assert ps.admin("DELETE", f"/internal/v1/sessions/{hash_session_id(first)}").json() == {
        "revoked": 0
    }

    third = logged_in(ps, "dave")
    with ps.events() as events:
        assert ps.admin("DELETE", "/internal/v1/sessions?user=dave").json() == {"revoked": 2}
        revoked = {events.wait_for("revoke", 1)["session"] for _ in range(2)}
    assert revoked == {hash_session_id(second), hash_session_id(third)}
    assert ps.decision(second)["decision"] == "authenticate"
    assert ps.decision(third)["decision"] == "authenticate"
    audited = [d["session"] for name, d in stack.audit_events("session_revoked") if name == "dave"]
    assert audited == [hash_session_id(s) for s in (first, second, third)]


def test_admin_refuses_bad_input(ps: Policy) -> None:
    assert ps.admin("DELETE", "/internal/v1/sessions/not-a-hash").status == 400
    assert ps.admin("DELETE", "/internal/v1/sessions").status == 400
    assert ps.admin("GET", "/internal/v1/sessions?user=").status == 400


def test_admin_api_is_absent_without_a_token_file(stack: Stack) -> None:
    bare = stack.start_policy({"admin_token_file": None})
    reply = bare.admin("GET", "/internal/v1/sessions")
    assert reply.status == 404
    assert reply.json()["error"] == "not_found"


# --- PostgreSQL ----------------------------------------------------------------------------


def test_sessions_on_postgresql_are_shared_and_revocations_reach_every_instance(
    stack: Stack, postgres_url: str
) -> None:
    ps1 = stack.start_policy({"session_db": postgres_url})
    ps2 = stack.start_policy({"session_db": postgres_url})
    browser = Browser(ps1)
    assert browser.login("alice").status == 303
    session = browser.session
    assert session is not None
    # Any instance serves any session.
    assert ps2.decision(session)["decision"] == "allow"
    with ps2.events() as events:
        assert ps1.admin("DELETE", "/internal/v1/sessions?user=alice").json()["revoked"] >= 1
        assert events.wait_for("revoke", 1)["session"] == hash_session_id(session)
    assert ps2.decision(session)["decision"] == "authenticate"

    # Logout on one instance reaches the streams of the other.
    assert browser.login("alice").status == 303
    session = browser.session
    assert session is not None
    with ps2.events() as events:
        csrf = CSRF_FIELD.search(browser.get(f"{PREFIX}logout").body)
        assert csrf is not None
        assert browser.post(f"{PREFIX}logout", {"csrf": csrf.group(1)}).status == 200
        assert events.wait_for("revoke", 1)["session"] == hash_session_id(session)


# --- lifecycle -----------------------------------------------------------------------------


def test_stops_promptly_with_open_event_streams(stack: Stack) -> None:
    running = stack.start_policy()
    with running.events() as events:
        started = time.monotonic()
        running.service.signal(signal.SIGTERM)
        assert running.service.proc.wait(5) in (0, -signal.SIGTERM)  # uvicorn re-raises it
        assert time.monotonic() - started < 3
        while events.next(3) is not None:  # the stream was ended, not cut by a timeout
            pass
    assert "Traceback" not in running.service.output()


def test_config_errors_are_reported_with_their_field_path(tmp_path: Path) -> None:
    bad = write_config(tmp_path / "bad.yaml", {"sessions": {"idle_timeout": "soon"}})
    done = gatehouse(tmp_path / "home", "policy", "--config", str(bad))
    assert done.returncode == 2
    assert "sessions.idle_timeout: not a duration" in done.stderr
    missing = write_config(
        tmp_path / "token.yaml", {"policy": {"admin_token_file": str(tmp_path / "absent")}}
    )
    done = gatehouse(tmp_path / "home", "policy", "--config", str(missing))
    assert done.returncode == 2
    assert "policy.admin_token_file: cannot read admin token file" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_lists_the_policy_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gatehouse", "policy", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "--config" in done.stdout


def test_session_db_down_answers_503_and_public_decisions_go_on(stack: Stack) -> None:
    url = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    down = stack.start_policy({"session_db": url})
    health = down.request("GET", "/internal/v1/health")
    assert health.status == 503
    assert health.json()["error"] == "unavailable"
    assert down.decision(None, "pub")["decision"] == "allow"
    assert down.decision(None, "app")["decision"] == "authenticate"
    session = down.decide("S" * 43)
    assert session.status == 503
    assert session.json()["error"] == "unavailable"
    browser = Browser(down)
    reply = browser.login("alice")
    assert reply.status == 503
    assert "Signing in is not possible right now." in reply.body
    assert down.admin("GET", "/internal/v1/sessions").status == 503
    assert "Traceback" not in down.service.output()


# --- the event hub, in-process ---------------------------------------------------------------


def test_hub_fans_out_revocations_and_pings() -> None:
    async def go() -> None:
        hub = EventHub("i1", ping_interval=0.2)
        first, second = hub.stream(), hub.stream()
        for stream in (first, second):
            assert json.loads(await anext(stream)) == {"type": "hello", "instance": "i1"}
        assert hub.listeners == 2
        hub.revoked(["a" * 32, "b" * 32])
        for stream in (first, second):
            assert json.loads(await anext(stream)) == {"type": "revoke", "session": "a" * 32}
            assert json.loads(await anext(stream)) == {"type": "revoke", "session": "b" * 32}
        started = time.monotonic()
        assert json.loads(await anext(first)) == {"type": "ping"}
        assert 0.1 < time.monotonic() - started < 1
        hub.close_all()
        for stream in (first, second):
            with pytest.raises(StopAsyncIteration):
                await anext(stream)
        assert hub.listeners == 0

    asyncio.run(go())


def test_hub_holds_hello_back_while_revocations_could_be_missed() -> None:
    async def go() -> None:
        hub = EventHub("i2", live=False)
        waiting = asyncio.ensure_future(anext(hub.stream()))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        hub.set_live(True)
        assert json.loads(await waiting)["type"] == "hello"

        stream = hub.stream()
        await anext(stream)
        hub.set_live(False)  # listening connection lost: streams end, APs flush
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        held = asyncio.ensure_future(anext(hub.stream()))
        await asyncio.sleep(0.05)
        hub.shutdown()
        with pytest.raises(StopAsyncIteration):
            await held

    asyncio.run(go())


def test_notify_payloads_round_trip_and_skip_our_own() -> None:
    hashes = [f"{i:032x}" for i in range(250)]
    payloads = notify_payloads("me", hashes)
    assert len(payloads) == 3
    assert all(len(p.encode()) < 8000 for p in payloads)
    assert [h for p in payloads for h in parse_payload("other", p)] == hashes
    assert parse_payload("me", payloads[0]) == []
    assert parse_payload("other", "not json") == []
    assert parse_payload("other", '{"from": "x", "sessions": "nope"}') == []


def test_the_bridge_connects_like_the_engine_to_every_host_of_a_url() -> None:
    hub = EventHub("me")
    one = PostgresBridge("postgresql+asyncpg://u:p%40w@h1:5432/db", hub)
    assert one._connect_args["host"] == "h1"
    assert one._connect_args["password"] == "p@w"
    assert one._connect_args["timeout"] == 5
    two = PostgresBridge("postgresql+asyncpg://u@/db?host=h1,h2&port=5432,5433", hub)
    assert two._connect_args["host"] == ["h1", "h2"]
    assert two._connect_args["port"] == [5432, 5433]
    assert two._connect_args["target_session_attrs"] == "read-write"


def test_instances_resync_after_the_database_restarts(
    stack: Stack, postgres_cluster: PostgresCluster, postgres_url: str
) -> None:
    ps1 = stack.start_policy({"session_db": postgres_url})
    ps2 = stack.start_policy({"session_db": postgres_url})
    with ps2.events() as events:
        postgres_cluster.stop()
        try:
            # Revocations could be missed now: the stream ends, so APs flush their caches.
            deadline = time.monotonic() + 5
            while (event := events.next(max(0.1, deadline - time.monotonic()))) is not None:
                assert event["type"] == "ping"
        finally:
            postgres_cluster.start()
    browser = Browser(ps1)
    deadline = time.monotonic() + 10
    while browser.login("alice").status != 303:  # the pool notices the restart
        assert time.monotonic() < deadline
        time.sleep(0.2)
    session = browser.session
    assert session is not None
    with EventReader(ps2.host, ps2.port) as events:  # hello again once listening again
        assert ps1.admin("DELETE", f"/internal/v1/sessions/{hash_session_id(session)}").json() == {
            "revoked": 1
        }
        assert events.wait_for("revoke", 1)["session"] == hash_session_id(session)

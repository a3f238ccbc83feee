"""``gatehouse up``: the restart policy, the built-in config, and a real node."""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from gatehouse.config.access_point import AccessPointConfig
from gatehouse.config.loader import load_file, validate
from gatehouse.node import RestartPolicy, default_config, host_port
from tests.support.gateway import Browser, echoed_headers
from tests.support.node import Node, alive, child_running, children, get_json, node
from tests.support.processes import GATEHOUSE, free_port, write_config

FIXTURES = (node,)

REPO = Path(__file__).resolve().parent.parent
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


@pytest.mark.parametrize(
    ("failures", "uptime", "expected"),
    [
        (0, 0.1, (1, 0.25)),
        (1, 0.1, (2, 0.5)),
        (2, 9.9, (3, 1.0)),
        (3, 0.1, (4, 2.0)),
        (4, 0.1, (5, 4.0)),
        (5, 0.1, (6, None)),
        (4, 10.0, (1, 0.25)),  # a healthy run resets the count
        (0, 3600.0, (1, 0.25)),
    ],
)
def test_restart_policy(failures: int, uptime: float, expected: tuple[int, float | None]) -> None:
    assert RestartPolicy().after_exit(failures, uptime) == expected


def test_restart_delay_is_capped() -> None:
    policy = RestartPolicy(first_delay=1.0, max_delay=3.0, max_failures=100)
    assert [policy.after_exit(n, 0.0)[1] for n in range(5)] == [1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 80, "127.0.0.1:80"),
        ("::1", 8080, "[::1]:8080"),
        ("localhost", 1, "localhost:1"),
    ],
)
def test_host_port(host: str, port: int, expected: str) -> None:
    assert host_port(host, port) == expected


def test_built_in_config_is_the_example() -> None:
    built_in = default_config(("127.0.0.1", 8080), ("127.0.0.1", 9000))
    assert validate(AccessPointConfig, built_in) == load_file(
        AccessPointConfig, REPO / "examples" / "access-point.yaml"
    )


def test_built_in_config_reaches_a_wildcard_backend_on_loopback() -> None:
    config = validate(AccessPointConfig, default_config(("0.0.0.0", 80), ("0.0.0.0", 9001)))
    assert config.access_point.listen == "0.0.0.0:80"
    assert config.resources[0].backends == ["http://127.0.0.1:9001"]


def test_invalid_config_fails_fast(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "bad.yaml", {"resources": [{"id": "demo", "backends": ["ftp://x"]}]}
    )
    result = subprocess.run(
        [*GATEHOUSE, "up", "--config", str(path), "--listen", f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "resources[0].backends[0]" in result.stderr


# --- a real node -----------------------------------------------------------------------------


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def only_form(page: bytes, field: str | None = None) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the page's one form (the one with ``field``)."""
    text = page.decode()
    for match in re.finditer(r"<form([^>]*)>(.*?)</form>", text, re.S):
        inner = match.group(2)
        if field is not None and f'name="{field}"' not in inner:
            continue
        action = re.search(r'action="([^"]*)"', match.group(1))
        assert action, match.group(0)[:300]
        hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', inner)
        return html.unescape(action.group(1)), {k: html.unescape(v) for k, v in hidden}
    raise AssertionError(f"no form with {field!r}: {text[:500]}")


def encode(fields: dict[str, str]) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def get_json_list(port: int, path: str) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body
    found: list[dict[str, Any]] = json.loads(body)
    return found


@LINUX_PROC
def test_node_serves_restarts_and_stops(node: Node) -> None:
    node.wait_for(f"Gatehouse is up: open http://127.0.0.1:{node.port}/\n")
    password = re.search(r"Demo user: demo  password: (\S+)", node.output())
    assert password, node.output()
    document = get_json(node.port, "/public/hello?x=1")
    assert (document["path"], document["query"]) == ("/public/hello", "x=1")
    assert ["host", f"127.0.0.1:{node.backend_port}"] in document["headers"]
    # Everything else is the demo protected resource: sign in as the demo user.
    browser = Browser("127.0.0.1", node.port)
    assert browser.get("/hello").status == 303
    assert browser.login("demo", password.group(1), rd="/hello").status == 303
    signed_in = browser.get("/hello")
    assert signed_in.status == 200
    assert echoed_headers(signed_in)["remote-user"] == "demo"
    assert browser.get("/hello").status == 200  # a cached decision now
    # /secure-email/ needs a code by e-mail: the node's Distribution service delivers it to
    # the demo mail server, whose inbox is /public/mail.json.
    step_up = browser.get(browser.get("/secure-email/").headers["location"])
    assert step_up.status == 200, step_up.body[:300]
    action, fields = only_form(step_up.body)
    sent = browser.request("POST", action, encode(fields), FORM)
    assert sent.status == 303, sent.body[:500]
    code_page = browser.get(sent.headers["location"])
    assert b"We sent a code to d***@example.org." in code_page.body, code_page.body[:2000]
    mails = get_json_list(node.port, "/public/mail.json")
    assert [m["recipient"] for m in mails] == ["demo@example.org"]
    code = re.search(r"\b(\d{6})\b", mails[0]["text"])
    assert code, mails[0]
    action, fields = only_form(code_page.body, "code")
    done = browser.request("POST", action, encode({**fields, "code": code.group(1)}), FORM)
    assert done.status == 303, done.body[:500]
    secure = browser.get("/secure-email/")
    assert secure.status == 200, secure.body[:300]
    assert echoed_headers(secure)["remote-auth-methods"] == "password,email_otp"
    # Disabling a user ends their sessions at once, cached decisions included.
    disabled = subprocess.run(
        [*GATEHOUSE, "users", "disable", "demo", "--home", str(node.home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert disabled.returncode == 0, disabled.stderr
    assert "ended 1 session(s) of 'demo'; every Access Point was told" in disabled.stdout
    deadline = time.monotonic() + 1.0
    while browser.get("/hello").status != 303:
        assert time.monotonic() < deadline, "the disabled user's session still works"
        time.sleep(0.02)

    backend = child_running(node.proc.pid, "demo-backend")
    access_point = child_running(node.proc.pid, "access-point")
    assert backend is not None
    assert access_point is not None
    os.kill(backend, signal.SIGKILL)

    deadline = time.monotonic() + 10
    while True:
        restarted = child_running(node.proc.pid, "demo-backend")
        if restarted not in (None, backend):
            try:
                assert get_json(node.port, "/public/again")["path"] == "/public/again"
                break
            except (OSError, AssertionError, http.client.HTTPException):
                pass
        assert time.monotonic() < deadline, f"backend not back after 10s:\n{node.output()}"
        time.sleep(0.1)
    assert "demo backend was killed by SIGKILL; restarting it" in node.output()
    assert child_running(node.proc.pid, "access-point") == access_point

    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(30) == 0
    assert not alive(access_point)
    assert restarted is not None
    assert not alive(restarted)


@LINUX_PROC
def test_node_stops_on_ctrl_c(node: Node) -> None:
    node.wait_for("Gatehouse is up")
    started = children(node.proc.pid)
    # backend, administration, distribution, authentication, policy, access point
    assert len(started) == 6, started
    # A terminal's Ctrl-C reaches the whole foreground process group, children included.
    os.killpg(node.proc.pid, signal.SIGINT)
    assert node.proc.wait(30) == 0
    assert not any(alive(pid) for pid in started)
    assert "restarting" not in node.output()


@pytest.mark.slow
def test_node_gives_up_when_a_child_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = f"127.0.0.1:{free_port()}"
        result = subprocess.run(
            [
                *GATEHOUSE,
                "up",
                "--backend-listen",
                f"127.0.0.1:{port}",
                "--listen",
                listen,
                "--policy-listen",
                f"127.0.0.1:{free_port()}",
                "--auth-listen",
                f"127.0.0.1:{free_port()}",
                "--distribution-listen",
                f"127.0.0.1:{free_port()}",
                "--smtp-listen",
                f"127.0.0.1:{free_port()}",
                "--home",
                str(tmp_path / "var"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert "address already in use" in result.stderr
    assert re.search(
        r"demo backend exited with code \d+, 6 times in a row; giving up", result.stderr
    )

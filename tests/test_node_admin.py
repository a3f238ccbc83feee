"""The single node follows its Administration service: every change goes through Admin, and
production traffic never depends on it. Real processes (``gatehouse up``: Admin, the
Authentication and Policy services, an Access Point, the demo backend) and the real CLI."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gateway import Browser
from tests.support.node import Node, child_running, node

FIXTURES = (node,)
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
pytestmark = [LINUX_PROC, pytest.mark.slow]


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def status_versions(node: Node) -> dict[str, str]:
    """``gatehouse config status``: service id → the version it runs."""
    result = node.cli("config", "status")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:] if line and line[0] != " "]
    return {row[0]: row[3] for row in rows if len(row) >= 6}


def publish(node: Node, tmp_path: Path, config: dict[str, Any], name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    applied = node.cli("config", "apply", str(path))
    assert applied.returncode == 0, applied.stderr
    published = node.cli("config", "publish", "--comment", name)
    assert published.returncode == 0, published.stdout + published.stderr
    return published.stdout


def signed_in(node: Node) -> Browser:
    password = re.search(r"Demo user: demo  password: (\S+)", node.output())
    assert password, node.output()
    browser = Browser("127.0.0.1", node.port)
    assert browser.login("demo", password.group(1), rd="/hello").status == 303
    return browser


def test_the_node_publishes_through_admin_and_keeps_serving_without_it(
    node: Node, tmp_path: Path
) -> None:
    node.wait_for("Gatehouse is up")
    eventually(
        lambda: status_versions(node) == {"ap1": "1", "ps1": "1", "auth1": "1", "dist1": "1"},
        "every service runs version 1",
    )
    browser = signed_in(node)
    assert browser.get("/hello").status == 200
    assert Browser("127.0.0.1", node.port).get("/docs/").status == 303  # the demo resource

    # A change goes through Admin and reaches every service without a restart: a new public
    # resource on the Access Point, a stricter rule on the Policy service.
    exported = node.cli("config", "export")
    assert exported.returncode == 0, exported.stderr
    first = yaml.safe_load(exported.stdout)
    second = {
        **first,
        "resources": [
            *first["resources"],
            {**first["resources"][0], "id": "docs", "path_prefix": "/docs"},
        ],
        "rules": {"alice-only": {"users": ["alice"]}},
        "resource_rules": {
            **first["resource_rules"],
            "docs": "public",
            "demo": {"rule": "alice-only"},
        },
    }
    out = publish(node, tmp_path, second, "docs and alice")
    assert "published version 2" in out
    assert "4 of 4 services run version 2" in out
    # Acknowledged means applied: the AP's workers reload on the signal the acknowledging
    # supervisor sent them, and the Policy service told the AP to drop cached decisions
    # (made under the old rules, with a 30 s TTL).
    eventually(lambda: Browser("127.0.0.1", node.port).get("/docs/").status == 200, "docs", 2)
    eventually(lambda: browser.get("/hello").status == 403, "the stricter rule", 2)
    assert status_versions(node) == {"ap1": "2", "ps1": "2", "auth1": "2", "dist1": "2"}

    # An invalid configuration is refused with its field path; nothing changes anywhere.
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({**second, "resources": [{**second["resources"][0], "backends": ["x"]}]})
    )
    refused = node.cli("config", "apply", str(bad))
    assert refused.returncode == 2
    assert "resources[0].backends[0]" in refused.stderr
    assert status_versions(node) == {"ap1": "2", "ps1": "2", "auth1": "2", "dist1": "2"}
    assert browser.get("/hello").status == 403

    # Admin gone (stopped, not answering): every service keeps serving, and a Policy
    # service restarted meanwhile starts from its last-known-good configuration.
    found = re.search(r"Demo user: demo  password: (\S+)", node.output())
    assert found
    password = found.group(1)
    admin = child_running(node.proc.pid, "administration")
    policy = child_running(node.proc.pid, " policy ")
    assert admin is not None
    assert policy is not None
    os.kill(admin, signal.SIGSTOP)
    try:
        assert Browser("127.0.0.1", node.port).get("/docs/").status == 200
        assert browser.get("/hello").status == 403
        os.kill(policy, signal.SIGKILL)

        def policy_back() -> bool:
            restarted = child_running(node.proc.pid, " policy ")
            if restarted in (None, policy):
                return False
            again = Browser("127.0.0.1", node.port)
            if again.get("/_gatehouse/login?rd=%2Fhello").status != 200:
                return False  # 502 from the portal relay while the only PS starts
            assert again.login("demo", password, rd="/hello").status == 303
            return again.get("/hello").status == 403  # version 2's rule, from the LKG

        eventually(policy_back, "the Policy service back from its last-known-good", 30)
    finally:
        os.kill(admin, signal.SIGCONT)

    # Admin answers again: a rollback to version 1 (published as version 3) converges.
    rolled = node.cli("config", "rollback", "1")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert "published version 3" in rolled.stdout
    assert "4 of 4 services run version 3" in rolled.stdout
    eventually(lambda: browser.get("/hello").status == 200, "version 1's rule again", 2)
    eventually(lambda: Browser("127.0.0.1", node.port).get("/docs/").status == 303, "no docs", 2)

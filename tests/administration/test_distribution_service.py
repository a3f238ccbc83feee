"""A Distribution service joins the Administration service and follows its view
(``gatehouse distribution --state``), as real processes on loopback: it registers with a join
token for its role, delivers over the channels of Admin's version to a real SMTP server,
applies a new version's channels without a restart, and shows in ``gatehouse config status``.

Channel credentials are file names (on the Distribution node): the secret in such a file is
in no version, no view, no file of Admin's home (its DB) and not in the service's
last-known-good file.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gatehouse.distribution.calls import SUBMIT
from tests.distribution.support import MailSink, call, sms_channel, smtp_channel, submit
from tests.support.admin import RealAdmin, real_admin
from tests.support.processes import GATEHOUSE, free_port
from tests.support.processes import Service as Process

FIXTURES = (real_admin,)
T = TypeVar("T")
#: What the SMS gateway's token file holds: it must never leave the Distribution node's file.
SECRET = "sms-gw-T0ken-4f9c1e7a2b"


def sync(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def installation(port: int, channels: list[dict[str, Any]], workers: int = 2) -> dict[str, Any]:
    return {
        "services": [
            {
                "id": "auth1",
                "role": "authentication",
                "endpoint": f"http://127.0.0.1:{free_port()}",
                "node": "n1",
            },
            {
                "id": "dist1",
                "role": "distribution",
                "endpoint": f"http://127.0.0.1:{port}",
                "node": "n1",
            },
        ],
        "distribution": {"channels": channels, "delivery": {"workers": workers}},
    }


@pytest.fixture
def sink() -> Iterator[MailSink]:
    server = MailSink().start()
    try:
        yield server
    finally:
        server.stop()


def health(dist: Process, base: str, context: Any) -> dict[str, Any]:
    status, answer = call(base, "GET", "/internal/v1/health", context=context)
    assert status == 200, answer
    return answer


def wait_health(
    dist: Process, base: str, context: Any, check: Any, what: str, timeout: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = health(dist, base, context)
        if check(answer):
            return answer
        assert time.monotonic() < deadline, f"not {what}: {answer}\n{dist.output()}"
        time.sleep(0.05)


def test_a_distribution_service_joins_follows_its_view_and_keeps_secrets_in_files(
    real_admin: RealAdmin, tmp_path: Path, sink: MailSink
) -> None:
    home = tmp_path / "dist-home"
    home.mkdir(mode=0o700)
    (home / "sms-token").write_text(SECRET + "\n")
    (home / "sms-token").chmod(0o600)
    port = free_port()
    gateway = "http://127.0.0.1:9/send"  # never reached: the mail channel works
    channels = [
        smtp_channel(sink.port),
        sms_channel(gateway, auth="bearer", token_file="sms-token"),
    ]
    first = sync(real_admin.publish(installation(port, channels)))
    token = sync(real_admin.join_token("distribution", "dist1"))
    state = tmp_path / "dist-state"
    args = ["distribution", "--state", str(state), "--home", str(home)]
    args += ["--join", real_admin.url, "--token", token, "--id", "dist1"]
    args += ["--endpoint", f"http://127.0.0.1:{port}", "--node", "n1"]
    dist = Process(args, tmp_path / "dist.log", "127.0.0.1", port)
    try:
        dist.wait_ready(30)
        sync(real_admin.reported(first, service_id="dist1"))
        # Enrolled: mutual TLS, and only the callers SUBMIT names may submit.
        base = f"https://127.0.0.1:{port}"
        auth = real_admin.client_context("authentication", "auth1")
        answer = health(dist, base, auth)
        assert answer["config"]["version"] == first
        assert answer["channels"] == ["mail", "sms"]
        sent = submit(base, auth, email="alice@example.org", text="Your code is 424242")
        assert [m.recipients for m in sink.wait_for(1)] == [("alice@example.org",)]
        assert "424242" in sink.mails()[0].text
        assert sent["id"]
        access_point = real_admin.client_context("access_point", "ap1")
        assert "access_point" not in SUBMIT.roles
        status, refused = call(base, "POST", "/internal/v1/messages", {}, access_point)
        assert status == 403, refused

        # A new version: the mail channel alone, applied live (same process).
        second = sync(real_admin.publish(installation(port, [smtp_channel(sink.port, "mail2")])))
        sync(real_admin.reported(second, service_id="dist1"))
        wait_health(dist, base, auth, lambda a: a["channels"] == ["mail2"], "on mail2")
        assert dist.proc.poll() is None
        submit(base, auth, email="bob@example.org")
        assert sink.wait_for(2)[1].recipients == ("bob@example.org",)

        # gatehouse config status lists it with its role and certificate.
        admin = real_admin.url
        shown = subprocess.run(
            [*GATEHOUSE, "config", "status", "--home", str(real_admin.home), "--admin", admin],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        row = next(line for line in shown.stdout.splitlines() if line.startswith("dist1 "))
        assert row.split()[1:4] == ["distribution", "n1", str(second)], row
        assert "expires" in row
        service = sync(real_admin.service("dist1"))
        assert (service["role"], service["running_version"]) == ("distribution", second)
    finally:
        dist.stop()

    # The token file's secret is nowhere but in its file.
    texts = [str(sync(real_admin.call("GET", f"/api/v1/versions/{v}"))) for v in (first, second)]
    assert "sms-token" in texts[0]  # the file's name: the view says where, never what
    assert not [t for t in texts if SECRET in t]
    stored = [p for p in real_admin.home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in stored), stored
    assert [p for p in stored if SECRET.encode() in p.read_bytes()] == []
    lkg = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name == "lkg.json" for p in lkg), lkg
    assert [p for p in lkg if SECRET.encode() in p.read_bytes()] == []
    assert SECRET not in dist.log_path.read_text(errors="replace")

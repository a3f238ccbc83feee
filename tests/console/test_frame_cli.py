"""``gatehouse admins ...``, personal tokens on the command line and ``gatehouse status``
against the console tests' real node: the token chosen from $GATEHOUSE_TOKEN or
$GATEHOUSE_TOKEN_FILE, the person named in the audit log, plain columns when the output is
not a terminal."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gatehouse.cli import main
from tests.console.conftest import ConsoleNode


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def gatehouse(
    console_node: ConsoleNode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Ran]:
    """``gatehouse ARGS --home HOME`` in this process (what the command prints, its exit
    code), with the environment variables given."""

    def run(*args: str, **env: str) -> Ran:
        with monkeypatch.context() as patch:
            for name in ("GATEHOUSE_TOKEN", "GATEHOUSE_TOKEN_FILE"):
                patch.delenv(name, raising=False)
            for name, value in env.items():
                patch.setenv(name, value)
            capsys.readouterr()
            code = main([*args, "--home", str(console_node.node.home)])
            out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def test_admins_and_personal_tokens_on_the_command_line(
    console_node: ConsoleNode, gatehouse: Callable[..., Ran], tmp_path: Path
) -> None:
    name = f"carol{os.getpid()}"
    added = gatehouse("admins", "add", name, "--role", "operator")
    assert added.returncode == 0, added.stderr
    assert re.search(rf"Administrator: {name} \(operator\)\n  password: +\S+", added.stdout)
    assert re.search(r"OTP secret: +[A-Z2-7]{32}", added.stdout)
    assert "otpauth://totp/" in added.stdout

    made = gatehouse("admins", "tokens", "create", "--for", name, "--ttl", "1d")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("gha1_")
    assert "shown once" in made.stderr

    me = gatehouse("admins", "whoami", GATEHOUSE_TOKEN=token)
    assert me.stdout.strip() == f"{name} (operator)", me.stderr
    glass = gatehouse("admins", "whoami")
    assert glass.stdout.strip() == "admin-token (superadmin) (the home's admin token: break-glass)"

    # Not a terminal: the same plain columns as ever, with the operator's token.
    status = gatehouse("status", GATEHOUSE_TOKEN=token)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split() == [
        "SERVICE",
        "ROLE",
        "NODE",
        "VERSION",
        "LAST",
        "SEEN",
        "HEALTHY",
        "CERTIFICATE",
    ]
    assert {line.split()[0] for line in lines[1:5]} == {"ap1", "ps1", "auth1", "dist1"}
    assert "\x1b[" not in status.stdout
    assert lines[-1].startswith("newest version: ")

    # What the operator may not do is refused, naming the permission.
    refused = gatehouse("admins", "list", GATEHOUSE_TOKEN=token)
    assert refused.returncode != 0
    assert "admins.read" in refused.stderr

    # The token from a file; what it does is audited under the person's name.
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    exported = gatehouse("config", "export", GATEHOUSE_TOKEN_FILE=str(token_file))
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "config.yaml").write_text(exported.stdout)
    applied = gatehouse(
        "config",
        "apply",
        str(tmp_path / "config.yaml"),
        GATEHOUSE_TOKEN_FILE=str(token_file),
    )
    assert applied.returncode == 0, applied.stderr
    audit = console_node.admin_api().call("GET", "/api/v1/audit?limit=50")
    assert any(e["who"] == name and e["action"] == "draft.save" for e in audit), audit[:5]

    listed = gatehouse("admins", "tokens", "list", GATEHOUSE_TOKEN=token)
    token_id = token.split("_")[1]
    assert re.search(rf"^{token_id}\s+{name}\s+active\s", listed.stdout, re.MULTILINE)
    revoked = gatehouse("admins", "tokens", "revoke", token_id, GATEHOUSE_TOKEN=token)
    assert revoked.returncode == 0, revoked.stderr
    after = gatehouse("admins", "whoami", GATEHOUSE_TOKEN=token)
    assert after.returncode != 0
    assert "refused the personal token" in after.stderr

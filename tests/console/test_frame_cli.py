"""``gatehouse admins ...``, personal tokens on the command line and ``gatehouse status``
against the console tests' real node: the token chosen from $GATEHOUSE_TOKEN or
$GATEHOUSE_TOKEN_FILE, the person named in the audit log, plain columns when the output is
not a terminal."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.console.conftest import ConsoleNode
from tests.support.processes import GATEHOUSE


def gatehouse(node: ConsoleNode, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("GATEHOUSE_TOKEN", "GATEHOUSE_TOKEN_FILE")
    }
    return subprocess.run(
        [*GATEHOUSE, *args, "--home", str(node.node.home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**environment, **env},
    )


def test_admins_and_personal_tokens_on_the_command_line(
    console_node: ConsoleNode, tmp_path: Path
) -> None:
    name = f"carol{os.getpid()}"
    added = gatehouse(console_node, "admins", "add", name, "--role", "operator")
    assert added.returncode == 0, added.stderr
    assert re.search(rf"Administrator: {name} \(operator\)\n  password: +\S+", added.stdout)
    assert re.search(r"OTP secret: +[A-Z2-7]{32}", added.stdout)
    assert "otpauth://totp/" in added.stdout

    made = gatehouse(console_node, "admins", "tokens", "create", "--for", name, "--ttl", "1d")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("gha1_")
    assert "shown once" in made.stderr

    me = gatehouse(console_node, "admins", "whoami", GATEHOUSE_TOKEN=token)
    assert me.stdout.strip() == f"{name} (operator)", me.stderr
    glass = gatehouse(console_node, "admins", "whoami")
    assert glass.stdout.strip() == "admin-token (superadmin) (the home's admin token: break-glass)"

    # Not a terminal: the same plain columns as ever, with the operator's token.
    status = gatehouse(console_node, "status", GATEHOUSE_TOKEN=token)
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
    refused = gatehouse(console_node, "admins", "list", GATEHOUSE_TOKEN=token)
    assert refused.returncode != 0
    assert "admins.read" in refused.stderr

    # The token from a file; what it does is audited under the person's name.
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    exported = gatehouse(console_node, "config", "export", GATEHOUSE_TOKEN_FILE=str(token_file))
    assert exported.returncode == 0, exported.stderr
    (tmp_path / "config.yaml").write_text(exported.stdout)
    applied = gatehouse(
        console_node,
        "config",
        "apply",
        str(tmp_path / "config.yaml"),
        GATEHOUSE_TOKEN_FILE=str(token_file),
    )
    assert applied.returncode == 0, applied.stderr
    audit = console_node.admin_api().call("GET", "/api/v1/audit?limit=50")
    assert any(e["who"] == name and e["action"] == "draft.save" for e in audit), audit[:5]

    listed = gatehouse(console_node, "admins", "tokens", "list", GATEHOUSE_TOKEN=token)
    token_id = token.split("_")[1]
    assert re.search(rf"^{token_id}\s+{name}\s+active\s", listed.stdout, re.MULTILINE)
    revoked = gatehouse(console_node, "admins", "tokens", "revoke", token_id, GATEHOUSE_TOKEN=token)
    assert revoked.returncode == 0, revoked.stderr
    after = gatehouse(console_node, "admins", "whoami", GATEHOUSE_TOKEN=token)
    assert after.returncode != 0
    assert "refused the personal token" in after.stderr

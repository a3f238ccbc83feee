"""``gatehouse config ...`` and ``gatehouse nodes token|revoke`` against a real Administration
service (over HTTPS, with the operator's certificate).

The commands run in-process through the CLI's ``main`` (same parsing, same error rendering,
much faster); a few run as real commands to check exit codes and the absence of tracebacks.
Services are played by threads that long-poll and acknowledge like a service's agent would.
"""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from gatehouse.cli import main
from gatehouse.trust.ca import renew_at
from tests.administration.test_api import (
    Admin,
    admin,
    as_yaml,
    join,
    register_body,
    single_node,
)
from tests.support.processes import GATEHOUSE, free_port

FIXTURES = (admin,)


class CLI:
    def __init__(self, admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
        self.admin = admin
        self.capsys = capsys

    def __call__(self, *args: str, home: Path | None = None) -> tuple[int, str, str]:
        code = main([*args, "--home", str(home or self.admin.home)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert (code, err) == (0, ""), err
        return out

    def fails(self, *args: str, home: Path | None = None) -> str:
        """The one error line of a command that failed."""
        code, out, err = self(*args, home=home)
        assert (code, out) == (2, "")
        assert err.count("\n") == 1, err
        return err


@pytest.fixture
def cli(admin: Admin, capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(admin, capsys)


def config_file(tmp_path: Path, config: dict[str, object], name: str = "install.yaml") -> str:
    path = tmp_path / name
    path.write_text(as_yaml(config))
    return str(path)


class Agent(threading.Thread):
    """One long poll and one acknowledgement, as a service's config agent does them."""

    def __init__(
        self, admin: Admin, cert: ssl.SSLContext, service_id: str, error: str | None = None
    ):
        super().__init__()
        self.admin, self.cert, self.service_id, self.error = admin, cert, service_id, error

    def run(self) -> None:
        path = f"/api/v1/config/{self.service_id}"
        after = self.admin.ok("GET", "/api/v1/health")["version"]
        status, envelope = self.admin.call(
            "GET", f"{path}?after={after}&wait=20", None, None, 30, self.cert
        )
        assert status == 200
        body = {"version": envelope["version"], "error": self.error}
        self.admin.ok("POST", f"{path}/ack", body, token=None, cert=self.cert)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for agent in started:
        agent.join(30)


# --- apply, diff, publish ------------------------------------------------------------------


def test_apply_refuses_an_invalid_file_with_one_line_per_problem(cli: CLI, tmp_path: Path) -> None:
    broken = single_node()
    broken["resources"][1]["backends"] = ["http://127.0.0.1:9000", "nope"]
    broken["services"][2]["node"] = "Not A Node"
    file = config_file(tmp_path, broken)
    code, out, err = cli("config", "apply", file)
    assert (code, out) == (2, "")
    assert err == (
        f"gatehouse: {file}: services[2].node: not an id: 'Not A Node' (lowercase letters, "
        "digits, '.', '_', '-')\n"
        f"gatehouse: {file}: resources[1].backends[1]: not a URL: 'nope' (expected "
        "http://host[:port][/path])\n"
    )
    path = tmp_path / "broken.yaml"
    path.write_text("services: [\n")
    assert cli.fails("config", "apply", str(path)).startswith(
        f"gatehouse: {path}: line 2, column 1: invalid YAML:"
    )
    assert cli.fails("config", "apply", str(tmp_path / "missing.yaml")) == (
        f"gatehouse: cannot read {tmp_path / 'missing.yaml'}: No such file or directory\n"
    )
    assert cli.fails("config", "diff") == (
        "gatehouse: there is no draft yet; apply a configuration first\n"
    )


def test_apply_diff_publish_without_registered_services(cli: CLI, tmp_path: Path) -> None:
    out = cli.ok("config", "apply", config_file(tmp_path, single_node()))
    assert out.startswith("draft saved from ")
    assert cli.ok("config", "diff").startswith("--- (nothing published)\n+++ draft\n")
    assert cli.ok("config", "publish", "--comment", "first") == (
        "published version 1\n"
        "ap1: not registered yet (it joins with 'gatehouse nodes token')\n"
        "ps1: not registered yet (it joins with 'gatehouse nodes token')\n"
        "auth1: not registered yet (it joins with 'gatehouse nodes token')\n"
        "0 of 3 services run version 1\n"
    )
    assert cli.ok("config", "diff") == "no changes\n"
    assert cli.fails("config", "publish") == (
        "gatehouse: version 1 already says this; nothing to publish\n"
    )
    cli.ok("config", "apply", config_file(tmp_path, single_node("http://127.0.0.1:9001")))
    assert "+  - http://127.0.0.1:9001\n" in cli.ok("config", "diff", "--from", "1")
    assert cli.ok("config", "publish", "--wait", "0") == "published version 2\n"
    versions = cli.admin.ok("GET", "/api/v1/versions")
    assert [(v["version"], v["comment"]) for v in versions] == [(2, ""), (1, "first")]


def test_publish_prints_each_services_acknowledgement(
    cli: CLI, tmp_path: Path, agents: list[Agent]
) -> None:
    secrets = {
        sid: join(cli.admin, sid, role).context
        for sid, role in (("ap1", "access_point"), ("ps1", "policy"), ("auth1", "authentication"))
    }
    cli.ok("config", "apply", config_file(tmp_path, single_node()))
    agents += [
        Agent(cli.admin, secrets["ap1"], "ap1"),
        Agent(cli.admin, secrets["ps1"], "ps1", "resources.demo: no such rule"),
    ]
    for agent in agents:
        agent.start()
    code, out, err = cli("config", "publish", "--wait", "1.5")  # auth1 never answers
    assert (code, err) == (1, "gatehouse: not every service runs version 1: auth1, ps1\n")
    lines = out.splitlines()
    assert lines[0] == "published version 1"
    assert sorted(lines[1:3]) == [
        "ap1: running version 1",
        "ps1: failed to apply version 1: resources.demo: no such rule",
    ]
    assert lines[3:] == [
        "auth1: no acknowledgement within 1.5s (runs version none)",
        "1 of 3 services run version 1",
    ]

    status = cli.ok("config", "status")
    rows = status.splitlines()
    assert re.fullmatch(
        r"SERVICE  ROLE +NODE   VERSION  LAST SEEN  HEALTHY  CERTIFICATE", rows[0]
    ), rows[0]
    expires = r"expires \d{4}-\d\d-\d\d \d\d:\d\dZ \(in 6d 23h\)"
    assert re.fullmatch(rf"ap1 +access_point +local  1 +\ds ago +yes +{expires}", rows[1])
    assert re.fullmatch(rf"auth1 +authentication +local  - +never +no +{expires}", rows[2])
    assert re.fullmatch(rf"ps1 +policy +local  - +\ds ago +no +{expires}", rows[3])
    assert rows[4:] == [
        "ps1: last error: resources.demo: no such rule",
        "newest version: 1",
    ]
    column = rows[0].index("VERSION")  # aligned
    assert [row[column] for row in rows[1:4]] == ["1", "-", "-"]


def test_rollback_and_export(cli: CLI, tmp_path: Path, agents: list[Agent]) -> None:
    assert cli.fails("config", "export") == "gatehouse: nothing has been published yet\n"
    first = config_file(tmp_path, single_node(), "first.yaml")
    cli.ok("config", "apply", first)
    cli.ok("config", "publish", "--wait", "0")
    cli.ok("config", "apply", config_file(tmp_path, single_node("http://127.0.0.1:9001")))
    cli.ok("config", "publish", "--wait", "0")

    secret = join(cli.admin, "ap1").context
    agents.append(Agent(cli.admin, secret, "ap1"))
    agents[0].start()
    assert cli.ok("config", "rollback", "1", "--comment", "back", "--wait", "5") == (
        "published version 3: the configuration of version 1\n"
        "ap1: running version 3\n"
        "ps1: not registered yet (it joins with 'gatehouse nodes token')\n"
        "auth1: not registered yet (it joins with 'gatehouse nodes token')\n"
        "1 of 3 services run version 3\n"
    )
    exported = cli.ok("config", "export")
    # The text as published, then every list or mapping section it leaves out, empty.
    written = Path(first).read_text()
    assert exported.startswith(written)
    added = exported[len(written) :]
    assert added.startswith("# Not set in this version (empty); add to them here:\n")
    assert "rules: {}\n" in added.splitlines(keepends=True)
    assert yaml.safe_load(exported) == {**yaml.safe_load(written), **yaml.safe_load(added)}
    assert not set(yaml.safe_load(written)) & set(yaml.safe_load(added))
    assert yaml.safe_load(cli.ok("config", "export", "--version", "2"))["resources"][0][
        "backends"
    ] == ["http://127.0.0.1:9001"]
    assert cli.fails("config", "rollback", "7", "--wait", "0") == (
        "gatehouse: there is no version 7\n"
    )
    assert cli.fails("config", "export", "--version", "9") == "gatehouse: there is no version 9\n"


# --- nodes token, nodes revoke -----------------------------------------------------------


def test_nodes_token_makes_a_one_time_token_for_one_service(cli: CLI) -> None:
    code, out, err = cli("nodes", "token", "--role", "policy", "--id", "ps1", "--ttl", "10m")
    assert code == 0
    token = out.strip()
    assert token.startswith("ghj1.")
    assert out == token + "\n"
    assert re.fullmatch(
        r"one-time join token for policy service 'ps1', valid until \S+Z \(CA sha256:\S{43}\)\n",
        err,
    ), err
    body, _ = register_body(token, "ps1", "policy")
    assert cli.admin.call("POST", "/api/v1/register", body, token=None)[0] == 200
    assert cli.admin.call("POST", "/api/v1/register", body, token=None)[0] == 401
    assert cli.fails("nodes", "token", "--role", "policy", "--id", "ps1", "--ttl", "soon") == (
        "gatehouse: ttl: not a duration: 'soon' (use e.g. 30, 30s, 250ms, 5m)\n"
    )
    assert cli.fails("nodes", "token", "--role", "policy", "--id", "ps1", "--ttl", "0") == (
        "gatehouse: ttl: must be at least 1, got '0'\n"
    )
    assert cli.fails("nodes", "token", "--role", "policy", "--id", "ps1", "--ttl", "25h") == (
        "gatehouse: ttl: a join token lives at most 24h, not 90000 seconds\n"
    )
    # ps1 is enrolled: enrolling it again takes a token made with --replace.
    again, _ = register_body(out.strip(), "ps1", "policy")
    token = cli("nodes", "token", "--role", "policy", "--id", "ps1")[1].strip()
    status, answer = cli.admin.call("POST", "/api/v1/register", {**again, "token": token})
    assert status == 409
    assert "gatehouse nodes token --role policy --id ps1 --replace" in answer["message"]

    code, out, err = cli("nodes", "token", "--role", "policy", "--id", "ps1", "--replace")
    assert code == 0
    assert "replacing its enrolment" in err
    assert cli.admin.call("POST", "/api/v1/register", {**again, "token": out.strip()})[0] == 200


def test_a_distribution_service_gets_a_token_for_its_role_only(cli: CLI) -> None:
    code, out, err = cli("nodes", "token", "--role", "distribution", "--id", "dist1")
    assert code == 0
    assert err.startswith("one-time join token for distribution service 'dist1', valid until")
    # Made for a distribution service: it cannot enrol an Authentication service.
    wrong, _ = register_body(out.strip(), "dist1", "authentication")
    status, answer = cli.admin.call("POST", "/api/v1/register", wrong, token=None)
    assert status == 401, answer
    assert "made for a distribution service 'dist1', not an authentication service" in str(answer)
    body, _ = register_body(out.strip(), "dist1", "distribution")
    assert cli.admin.call("POST", "/api/v1/register", body, token=None)[0] == 200


def test_nodes_revoke_refuses_the_service_at_once(cli: CLI, tmp_path: Path) -> None:
    cli.ok("config", "apply", config_file(tmp_path, single_node()))
    cli.ok("config", "publish", "--wait", "0")
    ps = join(cli.admin, "ps1", "policy")
    serial = f"{ps.credentials.info.serial:x}"
    assert cli.ok("nodes", "revoke", "ps1", "--reason", "laptop stolen") == (
        f"revoked the certificates of ps1: {serial}\n"
        "published version 2: every service refuses them from now on; ps1 can join again "
        "only with a new join token\n"
    )
    assert cli.admin.call("GET", "/api/v1/config/ps1", None, None, cert=ps.context)[0] == 403
    audit = cli.admin.ok("GET", "/api/v1/audit?limit=2")
    assert audit[1]["what"] == f"revoked the certificates of 'ps1': {serial} (laptop stolen)"
    assert cli.fails("nodes", "revoke", "nope") == (
        "gatehouse: no certificate was issued to 'nope'\n"
    )
    rows = cli.ok("config", "status").splitlines()
    assert re.fullmatch(r"ps1 +policy +local +- +never +no +revoked", rows[1]), rows


def wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def test_status_warns_about_certificates_not_renewed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A certificate with less than a third of its life left, or expired, is named."""
    admin = Admin(tmp_path / "home", certificate_lifetime=6).start()
    try:
        cli = CLI(admin, capsys)
        info = join(admin, "ap1").credentials.info
        code, out, err = cli("config", "status")
        assert (code, err) == (0, "")  # plenty of life left
        # Past two thirds: it should have been renewed.
        wait_until(renew_at(info.not_before, info.not_after) + timedelta(seconds=0.1))
        code, out, err = cli("config", "status")
        assert code == 0
        assert re.fullmatch(
            r"gatehouse: warning: the certificate of ap1 expires at \S+Z \(in \ds, less than a "
            r"third of its life\): it has not renewed it; is it running and able to reach the "
            r"Administration service\?\n",
            err,
        ), err
        wait_until(info.not_after + timedelta(seconds=0.1))
        code, out, err = cli("config", "status")
        assert re.fullmatch(r"ap1 .* expired \S+ \S+Z", out.splitlines()[1]), out
        assert err.startswith("gatehouse: warning: the certificate of ap1 expired at ")
        assert "--id ap1 --replace" in err
    finally:
        admin.stop()


# --- finding the Administration service ----------------------------------------------------


def test_errors_finding_the_service_are_one_line(cli: CLI, tmp_path: Path) -> None:
    port = free_port()
    assert cli.fails("config", "status", "--admin", f"https://127.0.0.1:{port}") == (
        f"gatehouse: cannot reach the Administration service at https://127.0.0.1:{port}: "
        "connection refused\n"
    )
    assert cli.fails("config", "status", "--admin", "127.0.0.1:1") == (
        "gatehouse: --admin: not an https URL: '127.0.0.1:1'\n"
    )
    assert cli.fails("config", "status", "--admin", "http://127.0.0.1:1") == (
        "gatehouse: --admin: the Administration service speaks HTTPS only: "
        "'https://127.0.0.1:1', not 'http://127.0.0.1:1'\n"
    )
    other = tmp_path / "other"
    other.mkdir()
    assert cli.fails("config", "status", home=other) == (
        f"gatehouse: no admin token at {other / 'admin.token'}: the Administration service "
        "writes it when it first starts (is --home right?)\n"
    )
    (other / "admin.token").write_text("w" * 43 + "\n")
    assert cli.fails("config", "status", "--admin", cli.admin.url, home=other) == (
        f"gatehouse: no internal CA in {other / 'ca'}: the Administration service makes it "
        "when it first starts (is --home the Administration service's home?)\n"
    )
    shutil.copytree(cli.admin.home / "ca", other / "ca")
    assert cli.fails("config", "status", "--admin", cli.admin.url, home=other) == (
        f"gatehouse: the Administration service at {cli.admin.url} refused the admin token in "
        f"{other / 'admin.token'}\n"
    )
    # Without --admin, the listen address comes from HOME/administration.yaml (default 8001).
    (other / "administration.yaml").write_text(f"administration: {{listen: '127.0.0.1:{port}'}}")
    assert f"at https://127.0.0.1:{port}: connection refused" in cli.fails(
        "config", "status", home=other
    )
    assert cli.ok("config", "status") == (
        "SERVICE  ROLE  NODE  VERSION  LAST SEEN  HEALTHY  CERTIFICATE\n"
        "newest version: none published\n"
    )


def test_real_commands_exit_2_with_one_line_per_problem_and_no_traceback(
    admin: Admin, tmp_path: Path
) -> None:
    broken = single_node()
    broken["resources"][0]["backends"] = ["ftp://files"]
    home = ["--home", str(admin.home)]
    done = subprocess.run(
        [*GATEHOUSE, "config", "apply", config_file(tmp_path, broken), *home],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"gatehouse: {tmp_path / 'install.yaml'}: resources[0].backends[0]: not a URL: "
        "'ftp://files' (expected http://host[:port][/path])\n"
    )
    admin.stop()
    done = subprocess.run(
        [*GATEHOUSE, "config", "publish", *home],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"gatehouse: cannot reach the Administration service at {admin.url}: connection refused\n"
    )

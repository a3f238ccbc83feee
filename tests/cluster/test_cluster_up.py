"""``gatehouse cluster up|status|kill|start|down``: the example topology as real processes on
loopback (a PostgreSQL primary and its synchronous standby, Admin, two Authentication, two
Policy services, two Access Points, HAProxy and the demo backend), and the pieces of the
runner that need no processes."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import yaml

from gatehouse.cli import build_parser
from gatehouse.cluster.errors import ClusterError
from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.processes import PidFile, alive, group_members, start_time
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.status import ClusterStatus
from gatehouse.cluster.topology import Topology, load_topology
from gatehouse.oath.otp import totp
from tests.support.cluster import cluster_home, free_topology
from tests.support.gateway import Browser, add_user
from tests.support.postgres import missing, require_bindir
from tests.support.processes import GATEHOUSE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ha-cluster.yaml"
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
SERVICES = ["admin", "dist1", "dist2", "auth1", "auth2", "ps1", "ps2", "ap1", "ap2"]
EVERYTHING = ["pg1", "pg2", "demo-backend", *SERVICES, "haproxy"]


@pytest.fixture
def home() -> Iterator[Path]:
    with cluster_home("gh-cluster-") as path:
        yield path


def cluster_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEHOUSE, "cluster", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def processes_of(cluster: Cluster) -> set[int]:
    """Every live process of the cluster: each member's process group (an Access Point's
    workers, PostgreSQL's backends)."""
    found: set[int] = set()
    for name in cluster.names():
        pid = cluster.pid(name)
        if pid is not None:
            found |= {pid, *group_members(os.getpgid(pid))}
    return found


def lb_browser(cluster: Cluster) -> Browser:
    host, _, port = cluster.url.removeprefix("http://").rstrip("/").rpartition(":")
    return Browser(host, int(port))


def console_sign_in(cluster: Cluster, home: Path, name: str, password: str, secret: str) -> int:
    """Sign in at the cluster's console with a password and a TOTP code; the status of the
    overview page that follows."""
    tls = ssl.create_default_context(cafile=str(home / "ca" / "ca.pem"))
    with httpx.Client(verify=tls, timeout=30) as client:
        form = client.get(f"{cluster.console_url}login")
        assert form.status_code == 200, form.text[:300]
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf, form.text[:300]
        code = totp(base64.b32decode(secret), time.time(), 30, 6, "sha1")
        fields = {"username": name, "password": password, "otp": code, "csrf": csrf[1]}
        signed = client.post(f"{cluster.console_url}login", data=fields)
        assert signed.status_code == 303, signed.text[:500]
        return client.get(cluster.console_url).status_code


def wait_status(cluster: Cluster, check: Any, what: str, timeout: float = 20.0) -> ClusterStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.status()
        if check(status):
            return status
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}\n{status}"
        time.sleep(0.2)


# --- the whole topology ----------------------------------------------------------------------


@LINUX_PROC
@pytest.mark.slow
def test_the_example_topology_survives_a_killed_policy_service(home: Path) -> None:
    if find_haproxy() is None:
        missing("HAProxy is not installed (apt-get install haproxy)")
    require_bindir()
    topology = free_topology(home.parent / "topology.yaml")

    began = time.monotonic()
    up = cluster_cli(home, "up", str(topology), "--no-fsync", "--no-demo-user")
    startup = time.monotonic() - began
    assert up.returncode == 0, up.stdout + up.stderr
    cluster = Cluster.open(home)
    assert up.stdout.splitlines()[0] == f"Gatehouse cluster is up: open {cluster.url}"
    # The final block, as 'gatehouse up' ends: the console and its first administrator's
    # one-time credentials, which sign in (Admin checks them with the Authentication services).
    assert f"  Console: {cluster.console_url} " in up.stdout, up.stdout
    first = re.search(
        r"^  Console administrator: (\S+)  password: (\S+)  OTP secret: ([A-Z2-7]+) \(shown only",
        up.stdout,
        re.MULTILINE,
    )
    assert first, up.stdout + up.stderr  # stderr: why no administrator was made
    assert console_sign_in(cluster, home, first[1], first[2], first[3]) == 200
    print(f"gatehouse cluster up: {startup:.1f}s")  # shown with -s / -rP
    # Detached: every process outlived the command that started it.
    assert cluster.running() == EVERYTHING

    # A user made with the users CLI against the cluster's databases signs in through HAProxy.
    add_user(home, "alice", "correct horse battery")
    alice = lb_browser(cluster)
    assert alice.login("alice", "correct horse battery", rd="/private").status == 303
    page = alice.get("/private")
    assert page.status == 200, page.body[:300]
    assert page.json()["path"] == "/private"
    assert lb_browser(cluster).get("/private").status == 303  # protected: to the login page
    # Every service reaches PostgreSQL over TLS as its own role (the query's psql: superuser;
    # gatehouse_cli: the Administration service's administrator and token routes, which made
    # the console's first administrator, see cluster.db_access).
    assert cluster.databases is not None
    connected = cluster.databases.primary().sql(
        "SELECT DISTINCT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
        " WHERE a.datname = 'gatehouse'",
        "gatehouse",
    )
    assert {ssl for _, ssl in connected} == {"t"}
    assert {user for user, _ in connected} == {
        "gatehouse",
        "gatehouse_admin",
        "gatehouse_cli",
        "gatehouse_auth",
        "gatehouse_policy",
    }

    shown = cluster_cli(home, "status", "--json")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = {row["name"]: row for row in json.loads(shown.stdout)["services"]}
    assert list(rows) == EVERYTHING
    assert [name for name, row in rows.items() if not row["healthy"]] == []
    assert {rows[name]["config_version"] for name in SERVICES if name != "admin"} == {1}
    assert rows["pg1"]["state"] == "primary"
    assert rows["pg2"]["state"] == "standby"
    assert rows["ap1"]["prefers"] == "ps1"
    assert rows["ap2"]["prefers"] == "ps2"
    # "uses": read from each AP's status listener (mutual TLS, the operator's certificate);
    # the public health answer says only up or down.
    assert rows["ap1"]["detail"] == "uses ps1 of ps1, ps2; HAProxy: UP", rows["ap1"]
    assert rows["ap2"]["detail"] == "uses ps2 of ps2, ps1; HAProxy: UP", rows["ap2"]
    # Two Distribution services, each an Authentication service's first choice on its node,
    # delivering over the demo mail server; they share the outbox DB, as their own role.
    assert rows["auth1"]["detail"] == "codes via dist1 of dist1, dist2", rows["auth1"]
    assert rows["auth2"]["detail"] == "codes via dist2 of dist2, dist1", rows["auth2"]
    for dist in ("dist1", "dist2"):
        assert rows[dist]["role"] == "Distribution"
        assert rows[dist]["detail"].startswith("channels demo-mail"), rows[dist]
    sessions = cluster.databases.primary().sql(
        "SELECT DISTINCT datname FROM pg_stat_activity WHERE usename = 'gatehouse_dist'"
    )
    assert {row[0] for row in sessions} <= {"gatehouse_outbox"}
    # The Authentication services use the OAuth2 DB as their own role; nobody else does.
    oauth2 = cluster.databases.primary().sql(
        "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = 'gatehouse_oauth2'"
    )
    assert {row[0] for row in oauth2} == {"gatehouse_auth"}
    listed = subprocess.run(
        [*GATEHOUSE, "outbox", "list", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr  # the CLI role reads the outbox
    text = cluster_cli(home, "status")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "all healthy" in text.stdout
    assert all(line.split()[0] in rows for line in text.stdout.splitlines()[1:12])

    # ps1 is killed: requests with the session, and a new sign-in, still succeed through both
    # APs (ap1 prefers ps1 and fails over to ps2 within the same request).
    old = cluster.pid("ps1")
    killed = cluster_cli(home, "kill", "ps1")
    assert killed.returncode == 0, killed.stderr
    assert old is not None
    assert not alive(old)
    failed = [r.status for r in (alice.get(f"/private/{i}") for i in range(20)) if r.status != 200]
    assert failed == []
    bob = lb_browser(cluster)
    add_user(home, "bob", "another good passphrase")
    assert bob.login("bob", "another good passphrase", rd="/b").status == 303
    assert bob.get("/b").status == 200
    status = cluster.status()
    assert status["ps1"].state == "stopped"
    assert not status["ps1"].healthy
    assert status["ap1"].prefers == "ps2"
    assert status["ap1"].detail.startswith("uses ps2 of ps1, ps2"), status["ap1"]

    started = cluster_cli(home, "start", "ps1")
    assert started.returncode == 0, started.stdout + started.stderr
    # Fail-back: ap1's decisions return to ps1 once it passed `rise` probes in a row.
    status = wait_status(
        cluster,
        lambda s: s.healthy and s["ap1"].prefers == "ps1",
        "every service healthy again, ap1 using ps1",
    )
    assert status["ps1"].config_version == 1
    assert alice.get("/private").status == 200

    before = processes_of(cluster)
    assert len(before) > len(EVERYTHING)  # AP workers and PostgreSQL backends included
    down = cluster_cli(home, "down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in before if alive(pid)] == []
    assert cluster.running() == []
    assert list((home / "run").glob("*.pid")) == []


# --- without processes ---------------------------------------------------------------------------


def example(home: Path) -> Cluster:
    return Cluster(home, load_topology(EXAMPLE))


@pytest.mark.parametrize(
    "argv",
    [
        ["up"],
        ["up", "topology.yaml", "--no-fsync"],
        ["status", "--json"],
        ["down"],
        ["kill", "ps1"],
        ["stop", "ap2"],
        ["start", "ps1", "--no-wait"],
        ["failover-db", "--graceful"],
        ["rejoin-db"],
    ],
)
def test_the_commands_are_registered(argv: list[str]) -> None:
    args = build_parser().parse_args(["cluster", *argv, "--home", "h"])
    assert args.action == argv[0]
    assert args.home == Path("h")


def test_members_are_named_as_in_the_topology(tmp_path: Path) -> None:
    cluster = example(tmp_path)
    assert cluster.names() == EVERYTHING
    assert cluster.names("policy") == ["ps1", "ps2"]
    assert cluster.url == "http://127.0.0.1:8080/"
    with pytest.raises(ClusterError, match=r"no service 'ps3'.*ps1, ps2"):
        cluster.kill("ps3")
    with pytest.raises(ClusterError, match="ps1 is not running"):
        cluster.kill("ps1")


def test_policy_services_get_the_homes_session_admin_token(tmp_path: Path) -> None:
    document = example(tmp_path).installation_document()
    token = str(tmp_path.absolute() / "policy-admin.token")
    assert [ps["admin_token_file"] for ps in document["policy_services"]] == [token, token]


def test_open_needs_a_cluster_in_the_home(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"no cluster in .*gatehouse cluster up"):
        Cluster.open(tmp_path)


def test_a_home_keeps_its_topology(tmp_path: Path) -> None:
    (tmp_path / "topology.yaml").write_text(EXAMPLE.read_text())
    other = yaml.safe_load(EXAMPLE.read_text())
    other["demo_backend"]["listen"] = "127.0.0.1:9009"
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    with pytest.raises(ClusterError, match="another topology"):
        Cluster.prepare(tmp_path, path)
    assert Cluster.prepare(tmp_path).topology == load_topology(EXAMPLE)


def listening_outside_example() -> socket.socket:
    """A listening socket on a free port the example topology does not name itself.

    An ephemeral port can be one of the example's own (55432-55441): the topology would then
    refuse the clash before `up` is reached, and the test would not test `up`."""
    named = {int(port) for port in re.findall(r"\b(\d{4,5})\b", EXAMPLE.read_text())}
    while True:
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        if taken.getsockname()[1] not in named:
            taken.listen()
            return taken
        taken.close()


def test_up_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    with listening_outside_example() as taken:
        port = taken.getsockname()[1]
        data["access_points"][0]["listen"] = f"127.0.0.1:{port}"
        cluster = Cluster(tmp_path / "home", Topology.model_validate(data))
        if cluster.running():
            pytest.skip("something runs on the example's PostgreSQL ports")
        with pytest.raises(
            ClusterError, match=rf"another process listens .*ap1 \(127.0.0.1:{port}\)"
        ):
            cluster.up()
    assert not (tmp_path / "home").exists()


def test_up_refuses_a_taken_demo_mail_port(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    with listening_outside_example() as taken:
        port = taken.getsockname()[1]
        data["demo_backend"]["smtp"] = f"127.0.0.1:{port}"
        cluster = Cluster(tmp_path / "home", Topology.model_validate(data))
        if cluster.running():
            pytest.skip("something runs on the example's PostgreSQL ports")
        with pytest.raises(
            ClusterError, match=rf"another process listens .*demo-backend \(127.0.0.1:{port}\)"
        ):
            cluster.up()
    assert not (tmp_path / "home").exists()


def test_a_pid_file_does_not_name_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path / "x.pid")
    pid_file.write(os.getpid())
    assert pid_file.running() == os.getpid()
    own = start_time(os.getpid())
    assert own is not None
    pid_file.path.write_text(f"{os.getpid()} {own + 1}\n")
    assert pid_file.running() is None
    assert pid_file.recorded() == os.getpid()

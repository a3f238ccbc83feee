"""The ``gatehouse administration`` process: its files, restarts, and exactly one per database
(SQLite and PostgreSQL), shown with real processes."""

from __future__ import annotations

import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatehouse.administration.lock import PG_ADMIN_LOCK, lock_file_path
from gatehouse.administration.signing import verify
from tests.administration.test_api import Admin, join, single_node
from tests.support.postgres import PostgresCluster, postgres_cluster, postgres_url
from tests.support.processes import GATEHOUSE, free_port, write_config

FIXTURES = (postgres_cluster, postgres_url)
HOST = socket.gethostname()


@pytest.fixture
def admins() -> Iterator[list[Admin]]:
    started: list[Admin] = []
    yield started
    for admin in started:
        admin.stop()


def start(admins: list[Admin], home: Path, **settings: object) -> Admin:
    admin = Admin(home, **settings)  # type: ignore[arg-type]
    admins.append(admin)
    return admin.start()


def run_admin(home: Path, database: str | None = None) -> subprocess.CompletedProcess[str]:
    """Start another Administration service and wait for it to give up."""
    settings = {"listen": f"127.0.0.1:{free_port()}"}
    if database is not None:
        settings["database"] = database
    home.mkdir(mode=0o700, parents=True, exist_ok=True)  # as a home should be
    config = write_config(home / "administration.yaml", {"administration": settings})
    return subprocess.run(
        [*GATEHOUSE, "administration", "--config", str(config), "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def exits_within(admin: Admin, seconds: float) -> int:
    code = admin.process.proc.wait(seconds)
    assert isinstance(code, int)
    return code


def test_first_start_writes_the_token_and_key_and_a_restart_keeps_them(
    tmp_path: Path, admins: list[Admin]
) -> None:
    home = tmp_path / "home"
    first = start(admins, home)
    token_file = home / "admin.token"
    assert f"admin token written to {token_file} (mode 0600)" in first.process.output()
    assert mode(token_file) == 0o600
    assert mode(home / "admin-signing.pem") == 0o600
    assert mode(home / "ca" / "ca.key") == 0o600
    assert mode(home / "ca") == 0o700
    assert mode(home / "tls" / "administration" / "key.pem") == 0o600
    assert len(first.token) >= 40
    ca_pem = (home / "ca" / "ca.pem").read_bytes()
    served = (home / "tls" / "administration" / "cert.pem").read_bytes()
    registered = join(first, "ap1")
    assert first.publish(single_node()) == 1
    assert first.stop() == 0

    again = start(admins, home, name="again")
    assert "admin token written" not in again.process.output()
    assert again.token == first.token
    # The same CA, and its own certificate kept (it has most of its life left).
    assert (home / "ca" / "ca.pem").read_bytes() == ca_pem
    assert (home / "tls" / "administration" / "cert.pem").read_bytes() == served
    assert again.ok("GET", "/api/v1/health")["version"] == 1
    # The same signing key and CA: the service's certificate works, it needs no new join.
    status, envelope = again.call(
        "GET", "/api/v1/config/ap1?after=0", token=None, cert=registered.context
    )
    assert status == 200
    assert verify(registered.public_key, envelope, service="ap1").version == 1
    assert again.publish(single_node("http://127.0.0.1:9001")) == 2


def test_a_second_admin_on_the_same_sqlite_database_exits_with_one_line(
    tmp_path: Path, admins: list[Admin]
) -> None:
    first = start(admins, tmp_path / "home")
    database = f"sqlite+aiosqlite:///{tmp_path / 'home' / 'gatehouse.db'}"
    second = run_admin(tmp_path / "elsewhere", database)
    assert second.returncode == 2
    running = f"pid {first.process.pid} on {HOST}"
    expected = f"gatehouse: another Administration service is running ({running})\n"
    assert (second.stdout, second.stderr) == ("", expected)
    assert not (tmp_path / "elsewhere" / "admin.token").exists()  # it stopped before anything
    assert first.ok("GET", "/api/v1/health")["status"] == "ok"


def test_an_admin_whose_lock_file_is_replaced_stops(tmp_path: Path, admins: list[Admin]) -> None:
    home = tmp_path / "home"
    admin = start(admins, home, lock_check_interval=0.2)
    lock_file_path(home / "gatehouse.db").unlink()
    assert exits_within(admin, 5) == 2
    assert "gatehouse: lost the Administration lock (lock file " in admin.process.output()
    assert "Traceback" not in admin.process.output()
    start(admins, home, name="next")  # another one may take over now


def test_a_bad_settings_file_is_refused_with_its_field_paths(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "administration.yaml",
        {"administration": {"listen": "nope", "colour": "blue"}},
    )
    done = subprocess.run(
        [*GATEHOUSE, "administration", "--config", str(config), "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"gatehouse: {config}: administration.listen: not HOST:PORT: 'nope'\n"
        f"{config}: administration.colour: unknown field\n"
    )


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://gatehouse@127.0.0.1:{free_port()}/none"
    done = run_admin(tmp_path / "home", url)
    assert done.returncode == 2
    assert done.stderr.startswith("gatehouse: database unavailable")
    assert done.stderr.count("\n") == 1


def test_on_postgresql_exactly_one_admin_runs_and_takes_its_lock_again_after_a_reconnect(
    tmp_path: Path, admins: list[Admin], postgres_url: str, postgres_cluster: PostgresCluster
) -> None:
    """One Admin per database; a lost connection (a database failover or restart) does not
    stop it: it takes the lock again. Only another Admin holding the lock by then stops it."""
    first = start(admins, tmp_path / "one", database=postgres_url, lock_check_interval=0.2)
    assert first.publish(single_node()) == 1
    second = run_admin(tmp_path / "two", postgres_url)
    # PostgreSQL keeps 63 bytes of the application name the holder is known by.
    host = f"gatehouse-admin pid={first.process.pid} host={HOST}"[:63].split(" host=")[1]
    refused = (
        2,
        "gatehouse: another Administration service is running "
        f"(pid {first.process.pid} on {host})\n",
    )
    assert (second.returncode, second.stderr) == refused
    admin_backends = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name LIKE 'gatehouse-admin%'"
    )

    # The lock's connection ends (as in a failover): the same Admin takes the lock again.
    postgres_cluster.sql(admin_backends)
    deadline = time.monotonic() + 10
    while "took the Administration lock again" not in first.process.output():
        assert first.process.proc.poll() is None, first.process.output()
        assert time.monotonic() < deadline, first.process.output()
        time.sleep(0.1)
    assert first.ok("GET", "/api/v1/health")["version"] == 1
    again = run_admin(tmp_path / "two", postgres_url)
    assert (again.returncode, again.stderr) == refused

    # Another session ends it and takes the lock itself before the Admin can: the Admin stops.
    holder = subprocess.Popen(
        postgres_cluster.psql(postgres_url.rsplit("/", 1)[1]),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert holder.stdin is not None
    try:  # psql runs each statement as it reads it, and holds the session until its input ends
        holder.stdin.write(
            f"{admin_backends};\nSELECT pg_advisory_lock({PG_ADMIN_LOCK});\n".encode()
        )
        holder.stdin.flush()
        assert exits_within(first, 10) == 2
        output = first.process.output()
        assert "the Administration lock was taken by another service" in output
        assert "gatehouse: lost the Administration lock (PostgreSQL advisory lock" in output
    finally:
        holder.stdin.close()
        holder.wait(10)
    # Another one takes over, on another node's home, with the versions in the database.
    third = start(admins, tmp_path / "two", database=postgres_url, name="third")
    assert third.ok("GET", "/api/v1/health")["version"] == 1


def test_no_plaintext_listener_and_the_ca_key_is_never_served(
    tmp_path: Path, admins: list[Admin]
) -> None:
    import http.client

    admin = start(admins, tmp_path / "home")
    conn = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=5)

    def plaintext() -> None:
        conn.request("GET", "/api/v1/health")
        conn.getresponse().read()

    try:
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            plaintext()
    finally:
        conn.close()
    key = (tmp_path / "home" / "ca" / "ca.key").read_text()
    secret_line = key.splitlines()[1]
    served = http.client.HTTPSConnection(
        "127.0.0.1", admin.port, timeout=5, context=admin.anonymous
    )
    served.request("GET", "/api/v1/ca")
    answer = served.getresponse()
    assert (answer.status, answer.read()) == (
        200,
        (tmp_path / "home" / "ca" / "ca.pem").read_bytes(),
    )
    served.close()
    # Every answer about the installation: no part of the CA key in any of them.
    admin.publish(single_node())
    join(admin, "ap1")
    for path in ("/api/v1/versions/1", "/api/v1/services", "/api/v1/audit", "/api/v1/draft"):
        assert secret_line not in str(admin.ok("GET", path))


def _served_serial(admin: Admin) -> int:
    """The serial of the certificate a new handshake with Admin shows."""
    import http.client

    from cryptography import x509

    conn = http.client.HTTPSConnection("127.0.0.1", admin.port, timeout=5, context=admin.anonymous)
    try:
        conn.connect()
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    finally:
        conn.close()
    return x509.load_der_x509_certificate(der).serial_number


def test_admins_own_certificate_is_renewed_at_start_and_while_running(
    tmp_path: Path, admins: list[Admin]
) -> None:
    home = tmp_path / "home"
    admin = start(admins, home, certificate_lifetime=3)
    first = _served_serial(admin)
    assert admin.stop() == 0
    time.sleep(2.2)  # less than a third of its life left: a new one at the next start
    again = start(admins, home, name="again", certificate_lifetime=3)
    second = _served_serial(again)
    assert second != first
    deadline = time.monotonic() + 6
    while _served_serial(again) == second:  # renewed while serving, no restart
        assert time.monotonic() < deadline, "not renewed while running"
        time.sleep(0.2)
    assert again.ok("GET", "/api/v1/health")["status"] == "ok"

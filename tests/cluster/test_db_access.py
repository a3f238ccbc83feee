"""The cluster's PostgreSQL: TLS with full verification against the installation's CA, no
plain text, and one role per service with only the grants it needs (a real primary and
standby made by :class:`ClusterDatabases`, as ``cluster up`` makes them)."""

from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text

from gatehouse.administration.model import InstallationConfig
from gatehouse.authentication import audit
from gatehouse.cluster import db_access
from gatehouse.cluster.commands import member_argv
from gatehouse.cluster.databases import ClusterDatabases
from gatehouse.cluster.db_access import ADMIN_ROLE, AUTH_ROLE, CLI_ROLE, POLICY_ROLE, role_url
from gatehouse.cluster.home import POLICY_HOME, write_home
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.topology import LocalDatabases, load_topology
from gatehouse.config.loader import validate
from gatehouse.storage.engine import Database
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.home import database_urls
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.postgres_ha.errors import ReplicationError
from gatehouse.storage.postgres_ha.node import SERVER_CERT, SERVER_KEY, SUPERUSER
from gatehouse.trust.ca import CertificateAuthority
from gatehouse.trust.identity import DATABASE, Identity
from tests.support.cluster import EXAMPLE, free_local_databases
from tests.support.postgres import require_bindir
from tests.support.processes import GATEHOUSE, free_port

ADMIN_TABLES = [
    "admin_drafts",
    "admin_versions",
    "admin_services",
    "admin_join_tokens",
    "admin_certificates",
    "admin_audit",
]


@dataclass
class Secured:
    home: Path
    local: LocalDatabases
    databases: ClusterDatabases
    said: list[str]

    def url(self, role: str) -> str:
        return role_url(self.home, self.local, role)


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    """A TLS pair with the services' roles, the user and session tables migrated by their
    owners and the admin tables by Admin's role (as the Administration service does)."""
    require_bindir()
    root = Path(tempfile.mkdtemp(prefix="gh-dba-"))
    root.chmod(0o755)  # the postgres user runs the servers when we are root
    home = root / "home"
    home.mkdir()
    home.chmod(0o755)
    local, etcd = free_local_databases()
    said: list[str] = []
    databases = ClusterDatabases(
        home / "postgres", local, fsync=False, progress=said.append, etcd=etcd
    )
    try:
        databases.start_all()
        asyncio.run(upgrade(role_url(home, local, ADMIN_ROLE), "admin"))
        yield Secured(home, local, databases, said)
    finally:
        databases.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def run_sql(url: str, statement: str) -> list[tuple[object, ...]]:
    async def query() -> list[tuple[object, ...]]:
        database = Database(url)
        try:
            async with database.connect() as conn:
                result = await conn.execute(text(statement))
                return [tuple(row) for row in result.all()] if result.returns_rows else []
        finally:
            await database.dispose()

    try:
        return asyncio.run(query())
    except DatabaseUnavailable as exc:
        refused = str(exc)
    # A connection refused during its TLS or password exchange is closed by asyncpg, but the
    # TLS shutdown may still be under way when asyncio.run closes the loop: its socket is left
    # to the garbage collector, whose ResourceWarning is expected here. It is collected here,
    # after the except block: until then the exception's traceback keeps the socket alive
    # (collected in the block, it was not; CI reported it at the end of this file).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    raise DatabaseUnavailable(refused)


def denied(url: str, statement: str) -> str:
    """The error of a statement the role may not run (permission denied: a sentence, as the
    database being unavailable to this role)."""
    with pytest.raises(DatabaseUnavailable) as raised:
        run_sql(url, statement)
    message = str(raised.value)
    assert "permission denied for" in message, message
    return message


def single_host(secured: Secured, role: str, port: int, **query: str) -> str:
    """A URL of one node, as ``role``, with the query overriding the role URL's TLS."""
    params = {
        "sslmode": "verify-full",
        "sslrootcert": str(db_access.ca_file(secured.home)),
        "passfile": str(db_access.passfile(secured.home, role)),
        **query,
    }
    rendered = "&".join(f"{key}={value}" for key, value in params.items() if value)
    return f"postgresql+asyncpg://{role}@127.0.0.1:{port}/{secured.local.database}?{rendered}"


# --- TLS ---------------------------------------------------------------------------------------


def test_every_role_connects_over_tls_1_3_with_full_verification(secured: Secured) -> None:
    for role in db_access.SERVICE_ROLES:
        url = secured.url(role)
        assert "sslmode=verify-full" in url
        assert "sslrootcert=" in url
        assert "passfile=" in url
        assert "password" not in url.split("?")[0]
        rows = run_sql(
            url,
            "SELECT ssl, version, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        assert rows == [(True, "TLSv1.3", role)]
    primary = secured.databases.primary()
    assert primary.sql("SHOW ssl_min_protocol_version") == [["TLSv1.3"]]
    # Replication to the synchronous standby is TLS as well.
    assert primary.sql(
        "SELECT r.application_name, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"
    ) == [["pg2", "t"]]


def test_plain_text_is_refused_by_the_server(secured: Secured) -> None:
    passfile = db_access.passfile(secured.home, CLI_ROLE)
    base = f"postgresql+asyncpg://{CLI_ROLE}@127.0.0.1:{secured.local.primary_port}/gatehouse"
    for mode in ("ssl=disable", "sslmode=disable"):
        url = f"{base}?{mode}&passfile={passfile}"
        with pytest.raises(DatabaseUnavailable, match=r"pg_hba.conf rejects .* no encryption"):
            run_sql(url, "SELECT 1")


def test_a_client_refuses_a_server_whose_certificate_is_from_another_ca(
    secured: Secured, tmp_path: Path
) -> None:
    other = CertificateAuthority.create("another CA")
    standby = secured.databases.standby()
    url = single_host(secured, CLI_ROLE, standby.port)
    assert run_sql(url, "SELECT 1") == [(1,)]

    # The client trusts another CA than the one that signed the servers' certificates.
    (tmp_path / "other.pem").write_bytes(other.certificate_pem)
    elsewhere = single_host(
        secured, CLI_ROLE, standby.port, sslrootcert=str(tmp_path / "other.pem")
    )
    with pytest.raises(DatabaseUnavailable, match="certificate verify failed"):
        run_sql(elsewhere, "SELECT 1")

    # The server shows a certificate from another CA: refused; the next start (or up) of the
    # node issues it one from the installation's CA again.
    key_pem, cert_pem = other.issue_key_pair(
        Identity(DATABASE, standby.name), hosts=["127.0.0.1", "localhost"]
    )
    standby._write_bytes(standby.tls_dir / SERVER_KEY, key_pem)
    standby._write_bytes(standby.tls_dir / SERVER_CERT, cert_pem)
    standby.reload()
    with pytest.raises(DatabaseUnavailable, match="certificate verify failed"):
        run_sql(url, "SELECT 1")
    del secured.said[:]
    secured.databases._certificates((standby,))
    assert secured.said == [
        "issuing pg2's server certificate (the certificate is not from the installation's CA)"
    ]
    assert run_sql(url, "SELECT 1") == [(1,)]


def test_a_certificate_is_renewed_when_less_than_30_days_are_left(secured: Secured) -> None:
    ca = db_access.load_ca(secured.home)
    path = secured.databases.primary().tls_dir / SERVER_CERT
    now = datetime.now(UTC)
    assert db_access.renewal_reason(path, ca, now) is None
    assert db_access.renewal_reason(path, ca, now + timedelta(days=59)) is None
    assert db_access.renewal_reason(path, ca, now + timedelta(days=61)) == (
        "the certificate expires in 28 days"
    )
    assert db_access.renewal_reason(path.with_name("missing"), ca) == "no certificate yet"


def test_the_superuser_needs_its_password_over_tls(secured: Secured) -> None:
    url = single_host(secured, SUPERUSER, secured.local.primary_port, passfile="")
    with pytest.raises(DatabaseUnavailable, match="password"):
        run_sql(url, "SELECT 1")


# --- roles -------------------------------------------------------------------------------------


def test_the_policy_role_reads_no_password_hash_and_no_admin_table(secured: Secured) -> None:
    url = secured.url(POLICY_ROLE)
    denied(url, "SELECT password_hash FROM users")
    denied(url, "SELECT username FROM users")
    denied(url, "SELECT * FROM login_failures")
    denied(url, "SELECT event, username FROM audit_events")
    denied(url, "UPDATE users SET password_hash = 'x'")
    for table in ADMIN_TABLES:
        denied(url, f"SELECT * FROM {table}")
    denied(url, "CREATE TABLE IF NOT EXISTS users_copy AS SELECT * FROM users")
    # What it needs: its sessions, and adding audit events (as the Policy service does).
    assert run_sql(url, "SELECT count(*) FROM sessions") == [(0,)]

    async def record() -> None:
        database = Database(url)
        try:
            await audit.record(database, "logout", "alice", "127.0.0.1", {"by": "test"})
        finally:
            await database.dispose()

    asyncio.run(record())
    assert run_sql(secured.url(CLI_ROLE), "SELECT event FROM audit_events") == [("logout",)]


def test_the_authentication_and_cli_roles_read_no_admin_table(secured: Secured) -> None:
    for role in (AUTH_ROLE, CLI_ROLE):
        for table in ADMIN_TABLES:
            denied(secured.url(role), f"SELECT * FROM {table}")
    denied(secured.url(AUTH_ROLE), "SELECT * FROM sessions")
    denied(secured.url(CLI_ROLE), "CREATE TABLE cli_table (id int)")
    assert run_sql(secured.url(CLI_ROLE), "SELECT count(*) FROM users") == [(0,)]
    assert run_sql(secured.url(AUTH_ROLE), "SELECT count(*) FROM users") == [(0,)]
    assert run_sql(secured.url(ADMIN_ROLE), "SELECT count(*) FROM admin_versions") == [(0,)]
    denied(secured.url(ADMIN_ROLE), "SELECT password_hash FROM users")


def test_each_service_owns_the_tables_it_migrates(secured: Secured) -> None:
    rows = secured.databases.primary().sql(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'",
        secured.local.database,
    )
    owners: dict[str, str] = {row[0]: row[1] for row in rows}
    assert owners["users"] == owners["audit_events"] == AUTH_ROLE
    assert owners["sessions"] == POLICY_ROLE
    assert {owners[table] for table in ADMIN_TABLES} == {ADMIN_ROLE}
    assert owners["alembic_version"] == SUPERUSER


def test_an_owner_writes_only_its_own_branchs_migration_rows(secured: Secured) -> None:
    policy = secured.url(POLICY_ROLE)
    everything = run_sql(policy, "SELECT version_num FROM alembic_version ORDER BY 1")
    heads = [row[0] for row in everything]
    assert [h.split("_")[0] for h in heads] == ["admin", "session", "user"]
    run_sql(policy, "DELETE FROM alembic_version WHERE version_num LIKE 'user%'")
    run_sql(
        policy, "UPDATE alembic_version SET version_num = 'session_9' WHERE version_num LIKE 'a%'"
    )
    with pytest.raises(DatabaseUnavailable, match="violates row-level security policy"):
        run_sql(policy, "INSERT INTO alembic_version VALUES ('user_9999')")
    assert run_sql(policy, "SELECT version_num FROM alembic_version ORDER BY 1") == everything
    denied(secured.url(CLI_ROLE), "DELETE FROM alembic_version")


def test_role_passwords_are_private_files_in_the_home(secured: Secured) -> None:
    for role in (*db_access.SERVICE_ROLES, SUPERUSER):
        path = db_access.passfile(secured.home, role)
        assert path.stat().st_mode & 0o777 == 0o600
        password = db_access.read_password(path, role)
        assert len(password) >= 32
        assert password not in secured.url(role)
    assert (secured.home / "pgpass").stat().st_mode & 0o777 == 0o700


def test_the_users_cli_with_a_role_that_may_not_read_users_says_so(
    secured: Secured, tmp_path: Path
) -> None:
    (tmp_path / "databases.yaml").write_text(f"user_db: '{secured.url(POLICY_ROLE)}'\n")
    done = subprocess.run(
        [*GATEHOUSE, "users", "list", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "permission denied for table users" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_role_password_is_rotated_by_removing_its_file(secured: Secured, tmp_path: Path) -> None:
    path = db_access.passfile(secured.home, CLI_ROLE)
    old = tmp_path / "old-pgpass"
    old.write_bytes(path.read_bytes())
    old.chmod(0o600)
    path.unlink()
    db_access.secure_database(
        secured.databases.primary(), secured.home, secured.local, secured.said.append
    )
    assert path.read_bytes() != old.read_bytes()
    assert run_sql(secured.url(CLI_ROLE), "SELECT current_user") == [(CLI_ROLE,)]
    stale = secured.url(CLI_ROLE).replace(str(path), str(old))
    with pytest.raises(DatabaseUnavailable, match="password authentication failed"):
        run_sql(stale, "SELECT 1")


def test_the_superusers_password_file_is_taken_back_from_the_nodes(secured: Secured) -> None:
    path = db_access.passfile(secured.home, SUPERUSER)
    kept = path.read_bytes()
    path.unlink()
    secured.databases._certificates(secured.databases.nodes)
    assert path.read_bytes() == kept
    assert path.stat().st_mode & 0o777 == 0o600


def test_failover_and_rewind_over_tls(secured: Secured) -> None:
    """Last in this file: the old primary comes back (pg_rewind over TLS as the superuser)."""
    databases = secured.databases
    old = databases.primary()
    promoted = databases.failover(kill=True)
    assert promoted is not old
    assert run_sql(secured.url(AUTH_ROLE), "SELECT count(*) FROM users") == [(0,)]
    assert databases.rejoin() == "rewound"
    assert promoted.sql(
        "SELECT r.application_name, r.sync_state, s.ssl FROM pg_stat_replication r "
        "JOIN pg_stat_ssl s USING (pid)"
    ) == [[old.name, "sync", "t"]]


# --- without PostgreSQL ------------------------------------------------------------------------


def test_each_service_is_handed_the_url_of_its_own_role(tmp_path: Path) -> None:
    home = tmp_path.absolute()
    cluster = Cluster(home, load_topology(EXAMPLE))
    local = cluster.topology.databases.local
    assert local is not None
    document = cluster.installation_document()
    config = validate(InstallationConfig, document, "test")
    assert config.database_of("auth1") == role_url(home, local, AUTH_ROLE)
    assert config.database_of("ps1") == role_url(home, local, POLICY_ROLE)
    assert config.database_of("ps2") == role_url(home, local, POLICY_ROLE)
    assert str(db_access.ca_file(home)) in role_url(home, local, AUTH_ROLE)

    write_home(home, cluster.topology, stats_socket=home / "s.sock", source="test")
    assert database_urls(home).user_db == role_url(home, local, CLI_ROLE)
    assert database_urls(home / POLICY_HOME).user_db == role_url(home, local, POLICY_ROLE)
    admin = yaml.safe_load((home / "administration.yaml").read_text())["administration"]
    assert admin["database"] == role_url(home, local, ADMIN_ROLE)
    argv = member_argv(cluster.member("ps1"), cluster.topology, home, cluster.admin_url)
    assert argv[argv.index("--home") + 1] == str(home / POLICY_HOME)
    argv = member_argv(cluster.member("auth1"), cluster.topology, home, cluster.admin_url)
    assert argv[argv.index("--home") + 1] == str(home)


def test_a_pair_made_before_tls_is_refused_with_a_sentence(tmp_path: Path) -> None:
    local = LocalDatabases(primary_port=free_port(), standby_port=free_port())
    databases = ClusterDatabases(tmp_path / "postgres", local)
    for node in databases.nodes:
        node.datadir.mkdir(parents=True)
        (node.datadir / "PG_VERSION").write_text("15\n")
    with pytest.raises(ReplicationError, match=r"before .* TLS .* bring one up in a new --home"):
        databases.start_all()

"""Who may reach the cluster's PostgreSQL, and how: TLS from the installation's internal CA,
and one role per service with the grants it needs.

Certificates: each node gets a server certificate from the CA in ``HOME/ca``
(:class:`~gatehouse.trust.ca.CertificateAuthority`, the one the Administration service uses)
naming ``127.0.0.1`` and ``localhost``, valid :data:`CERT_LIFETIME`; ``cluster up`` (and
``cluster start pgN``) issues a new one when fewer than :data:`RENEW_BEFORE` are left, or
when it was not issued by this CA. The nodes take only TLS (1.3) with passwords
(:class:`~gatehouse.storage.postgres_ha.node.PgNode` with ``tls``).

Roles (each with its own random password in ``HOME/pgpass/ROLE``, a libpq password file,
0600; the URLs name that file with ``passfile=``, never the password):

===================  ========================================================================
``gatehouse_admin``  the Administration service: owns the ``admin_*`` tables (its migrations)
``gatehouse_auth``   the Authentication services: owns the user tables (users, groups,
                     memberships, login counters, audit events)
``gatehouse_policy`` the Policy services: owns the session tables; may only add audit events
                     (INSERT) to the user tables; reads no user row, no password hash, no
                     admin table
``gatehouse_cli``    ``gatehouse users|groups|tokens|outbox --home`` on the admin machine (and
                     the Administration service's token routes): reads and writes the user
                     tables and the OATH tokens, reads and deletes sessions (ending them when
                     no Policy service answers), reads the outbox and retries a message
                     (SELECT, UPDATE); no admin table; cannot create tables
``gatehouse_dist``   the Distribution services: owns the outbox (its migrations); connects to
                     the outbox DB only, never to the user, session, admin or OATH tables
===================  ========================================================================

The OATH DB is a database of its own on the same servers (``<database>_oath``): only
``gatehouse_auth`` (its owner: it migrates the ``oath`` branch) and ``gatehouse_cli`` may
connect to it; the Policy and Administration roles may not. The outbox DB
(``<database>_outbox``) likewise: only ``gatehouse_dist`` (its owner: the ``outbox`` branch)
and ``gatehouse_cli``; the Distribution role may connect to no other database. The OAuth2
DB (``<database>_oauth2``: authorization codes, tokens, consents) likewise: ``gatehouse_auth``
owns it (the ``oauth2`` branch); ``gatehouse_cli`` may read, revoke and prune (SELECT, UPDATE,
DELETE), never add a row; the Policy, Administration and Distribution roles may not connect.

The owners' migrations run at ``cluster up`` (as the owners) before any service starts, so the
grants between roles can be given on tables that exist; services migrate again at start, as
their own role.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gatehouse.cluster.errors import ClusterError
from gatehouse.cluster.topology import LocalDatabases
from gatehouse.distribution.models import OutboxBase
from gatehouse.internal.lkg import atomic_write
from gatehouse.oath.models import OathBase
from gatehouse.oauth2.models import OAuth2Base
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.models import SessionBase, UserBase
from gatehouse.storage.permissions import private_directory
from gatehouse.storage.postgres_ha.node import SERVER_CERT, PgNode, pgpass_line
from gatehouse.trust.ca import CA_CERT_FILE, CA_DIR, MAX_LIFETIME, CertificateAuthority
from gatehouse.trust.identity import DATABASE, Identity

PGPASS_DIR = "pgpass"
ADMIN_ROLE = "gatehouse_admin"
AUTH_ROLE = "gatehouse_auth"
POLICY_ROLE = "gatehouse_policy"
CLI_ROLE = "gatehouse_cli"
DIST_ROLE = "gatehouse_dist"
#: The roles that connect to the cluster's main database (users, sessions, admin).
SERVICE_ROLES = (ADMIN_ROLE, AUTH_ROLE, POLICY_ROLE, CLI_ROLE)
#: Every role, the Distribution services' too (whose database is the outbox DB only).
ALL_ROLES = (*SERVICE_ROLES, DIST_ROLE)
#: The roles whose services migrate their own tables (CREATE on the schema).
OWNER_ROLES = (ADMIN_ROLE, AUTH_ROLE, POLICY_ROLE)

CERT_LIFETIME = MAX_LIFETIME
RENEW_BEFORE = timedelta(days=30)
#: What a node's certificate names: clients check the host they dialled against it.
CERT_HOSTS = ("127.0.0.1", "localhost")
#: The table every Alembic branch records its revision in (shared by the owners).
VERSION_TABLE = "alembic_version"
#: The start of the revision ids of each owner's migration branches (``admin_0003``,
#: ``admin_secrets_0001``, ``user_0002``, ``session_0002``).
BRANCH_PREFIXES = {ADMIN_ROLE: "admin_", AUTH_ROLE: "user_", POLICY_ROLE: "session_"}
SCRAM_ITERATIONS = 4096
#: The OATH DB's name is the cluster database's with this suffix.
OATH_SUFFIX = "_oath"
#: The roles that may connect to the OATH DB: its owner and the operator's command line.
OATH_ROLES = (AUTH_ROLE, CLI_ROLE)
#: The outbox DB's name is the cluster database's with this suffix.
OUTBOX_SUFFIX = "_outbox"
#: The roles that may connect to the outbox DB: its owner and the operator's command line.
OUTBOX_ROLES = (DIST_ROLE, CLI_ROLE)
#: The OAuth2 DB's name is the cluster database's with this suffix.
OAUTH2_SUFFIX = "_oauth2"
#: The roles that may connect to the OAuth2 DB: its owner and the operator's command line.
OAUTH2_ROLES = (AUTH_ROLE, CLI_ROLE)


# --- files in HOME -----------------------------------------------------------------------------


def ca_file(home: Path) -> Path:
    """The CA certificate clients check the servers' certificates with."""
    return home / CA_DIR / CA_CERT_FILE


def passfile(home: Path, role: str) -> Path:
    return home / PGPASS_DIR / role


def ensure_password(home: Path, role: str) -> str:
    """The role's password, made (random) and written to its password file the first time.

    Raises:
        ClusterError: the file exists but holds no password line for the role.
    """
    path = passfile(home, role)
    if path.exists():
        return read_password(path, role)
    password = secrets.token_urlsafe(32)
    write_password(home, role, password)
    return password


def write_password(home: Path, role: str, password: str) -> None:
    """Write the role's password file (0600, in a 0700 directory)."""
    path = passfile(home, role)
    private_directory(path.parent)
    atomic_write(path, pgpass_line(role, password).encode(), 0o600)


def read_password(path: Path, role: str) -> str:
    """The password of ``role`` in a password file written by :func:`ensure_password`."""
    try:
        fields = path.read_text().strip().split(":")
    except OSError as exc:
        raise ClusterError(f"cannot read {path}: {exc.strerror}") from None
    if len(fields) != 5 or fields[3] != role or not fields[4]:
        raise ClusterError(
            f"{path}: not a password file of {role} (expected '*:*:*:{role}:PASSWORD'); "
            "remove it and the cluster's PostgreSQL to start over"
        )
    return fields[4]


def oath_database(local: LocalDatabases) -> str:
    """The name of the cluster's OATH DB (next to the user DB, on the same servers)."""
    return local.database[: 63 - len(OATH_SUFFIX)] + OATH_SUFFIX


def outbox_database(local: LocalDatabases) -> str:
    """The name of the cluster's outbox DB (next to the user DB, on the same servers)."""
    return local.database[: 63 - len(OUTBOX_SUFFIX)] + OUTBOX_SUFFIX


def oauth2_database(local: LocalDatabases) -> str:
    """The name of the cluster's OAuth2 DB (next to the user DB, on the same servers)."""
    return local.database[: 63 - len(OAUTH2_SUFFIX)] + OAUTH2_SUFFIX


def role_url(home: Path, local: LocalDatabases, role: str, database: str | None = None) -> str:
    """The multi-host URL a service connects with as ``role`` (to ``database``, by default
    the cluster's): TLS with full verification against the home's CA, the password from the
    role's password file."""
    hosts = ",".join(local.HOST for _ in local.ports())
    ports = ",".join(str(port) for port in local.ports())
    return (
        f"postgresql+asyncpg://{role}@/{database or local.database}"
        f"?host={hosts}&port={ports}&target_session_attrs=read-write"
        f"&sslmode=verify-full&sslrootcert={quote(str(ca_file(home)))}"
        f"&passfile={quote(str(passfile(home, role)))}"
    )


def scram_verifier(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password: ``ALTER ROLE ... PASSWORD`` with it
    keeps the password itself out of psql's command line and the server's logs."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# --- certificates ------------------------------------------------------------------------------


def load_ca(home: Path) -> CertificateAuthority:
    """The installation's CA (made in ``HOME/ca`` the first time)."""
    ca, _created = CertificateAuthority.load_or_create(home / CA_DIR)
    return ca


def renewal_reason(path: Path, ca: CertificateAuthority, now: datetime | None = None) -> str | None:
    """Why the certificate at ``path`` must be issued again; None while it is good."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError:
        return "no certificate yet"
    except ValueError:
        return "the certificate cannot be read"
    try:
        certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return "the certificate is not from the installation's CA"
    left = certificate.not_valid_after_utc - (now or datetime.now(UTC))
    if left < RENEW_BEFORE:
        return f"the certificate expires in {max(left.days, 0)} days"
    return None


def ensure_certificates(
    nodes: Iterable[PgNode],
    ca: CertificateAuthority,
    superuser_password: str,
    say: Callable[[str], None],
) -> None:
    """Give every node a current certificate, the CA certificate and the superuser's password
    file (see :meth:`PgNode.install_tls`); a running node reloads a new certificate."""
    for node in nodes:
        reason = renewal_reason(node.tls_dir / SERVER_CERT, ca)
        if reason is None:
            continue
        say(f"issuing {node.name}'s server certificate ({reason})")
        key_pem, cert_pem = ca.issue_key_pair(
            Identity(DATABASE, node.name), hosts=CERT_HOSTS, lifetime=CERT_LIFETIME
        )
        node.install_tls(
            key_pem=key_pem,
            cert_pem=cert_pem,
            ca_pem=ca.certificate_pem,
            superuser_password=superuser_password,
        )
        if node.exists and node.running():
            node.reload()


# --- roles and grants --------------------------------------------------------------------------


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _roles(names: Sequence[str]) -> str:
    return ", ".join(_ident(name) for name in names)


def role_statements(home: Path, database: str) -> str:
    """The roles with their passwords, what each may do in ``database`` before any table
    exists, and the shared migration version table (SQL, one batch)."""
    statements: list[str] = []
    for role in ALL_ROLES:
        verifier = scram_verifier(ensure_password(home, role))
        statements.append(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
            f"{_literal(role)}) THEN CREATE ROLE {_ident(role)} LOGIN; END IF; END $$"
        )
        statements.append(
            f"ALTER ROLE {_ident(role)} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"NOREPLICATION NOBYPASSRLS PASSWORD {_literal(verifier)}"
        )
    owners, everyone = _roles(OWNER_ROLES), _roles(SERVICE_ROLES)
    auth, cli = _ident(AUTH_ROLE), _ident(CLI_ROLE)
    statements += [
        f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {_ident(database)} TO {everyone}",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {owners}",
        f"GRANT USAGE ON SCHEMA public TO {cli}",
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
        f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))",
        f"REVOKE ALL ON {VERSION_TABLE} FROM PUBLIC",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {VERSION_TABLE} TO {owners}",
        f"GRANT SELECT ON {VERSION_TABLE} TO {cli}",
        *_version_row_policies(),
        # Tables a later migration of the Authentication service adds are the CLI's too.
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {auth} IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {cli}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {auth} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {cli}",
    ]
    return ";\n".join(statements)


def _service_database_statements(
    database: str, roles: tuple[str, ...], owner_role: str, later_tables: str, *, sequences: bool
) -> str:
    """What each role may do in a database of one service before its tables exist (SQL, one
    batch, run in that database): connect only as one of ``roles``; ``owner_role`` creates
    and migrates the tables, the CLI role reads the version table and gets ``later_tables``
    (e.g. ``"SELECT, UPDATE"``) on every table the owner adds later, and use of its sequences
    with ``sequences``."""
    owner, cli = _ident(owner_role), _ident(CLI_ROLE)
    statements = [
        f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {_ident(database)} TO {_roles(roles)}",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE, CREATE ON SCHEMA public TO {owner}",
        f"GRANT USAGE ON SCHEMA public TO {cli}",
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
        f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))",
        f"REVOKE ALL ON {VERSION_TABLE} FROM PUBLIC",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {VERSION_TABLE} TO {owner}",
        f"GRANT SELECT ON {VERSION_TABLE} TO {cli}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
        f"GRANT {later_tables} ON TABLES TO {cli}",
    ]
    if sequences:
        statements.append(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA public "
            f"GRANT USAGE, SELECT ON SEQUENCES TO {cli}"
        )
    return ";\n".join(statements)


def _ensure_database(primary: PgNode, local: LocalDatabases, name: str) -> str:
    """Create database ``name`` on the primary if it is missing (a cluster made before it
    had one); its name."""
    exists = primary.sql(f"SELECT 1 FROM pg_database WHERE datname = {_literal(name)}")
    if not exists:
        primary.sql(f"CREATE DATABASE {_ident(name)} OWNER {_ident(local.user)}")
    return name


def oath_role_statements(database: str) -> str:
    """The OATH DB ``database``: the Authentication role creates and migrates its tables, the
    CLI role reads and writes the tokens (every table a later migration adds too)."""
    return _service_database_statements(
        database, OATH_ROLES, AUTH_ROLE, "SELECT, INSERT, UPDATE, DELETE", sequences=True
    )


def outbox_role_statements(database: str) -> str:
    """The outbox DB ``database``: the Distribution role creates and migrates the outbox, the
    CLI role (``gatehouse outbox``) reads and retries messages."""
    return _service_database_statements(
        database, OUTBOX_ROLES, DIST_ROLE, "SELECT, UPDATE", sequences=False
    )


def outbox_grant_statements(primary: PgNode, database: str) -> str:
    """The CLI role's grants on the outbox tables that exist (SQL; empty when none do)."""
    tables = _present(primary, database, OutboxBase.metadata.tables)
    if not tables:
        return ""
    return f"GRANT SELECT, UPDATE ON {_roles(tables)} TO {_ident(CLI_ROLE)}"


def ensure_outbox_database(primary: PgNode, local: LocalDatabases) -> str:
    """Create the outbox DB on the primary if it is missing; its name."""
    return _ensure_database(primary, local, outbox_database(local))


def oath_grant_statements(primary: PgNode, database: str) -> str:
    """The CLI role's grants on the OATH tables that exist (SQL; empty when none do)."""
    tables = _present(primary, database, OathBase.metadata.tables)
    if not tables:
        return ""
    cli = _ident(CLI_ROLE)
    statements = [f"GRANT SELECT, INSERT, UPDATE, DELETE ON {_roles(tables)} TO {cli}"]
    for sequence in _sequences_of(primary, database, tables):
        statements.append(f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {cli}")
    return ";\n".join(statements)


def ensure_oath_database(primary: PgNode, local: LocalDatabases) -> str:
    """Create the OATH DB on the primary if it is missing; its name."""
    return _ensure_database(primary, local, oath_database(local))


def oauth2_role_statements(database: str) -> str:
    """The OAuth2 DB ``database``: the Authentication role creates and migrates its tables,
    the CLI role reads, revokes and prunes."""
    return _service_database_statements(
        database, OAUTH2_ROLES, AUTH_ROLE, "SELECT, UPDATE, DELETE", sequences=False
    )


def oauth2_grant_statements(primary: PgNode, database: str) -> str:
    """The CLI role's grants on the OAuth2 tables that exist (SQL; empty when none do)."""
    tables = _present(primary, database, OAuth2Base.metadata.tables)
    if not tables:
        return ""
    return f"GRANT SELECT, UPDATE, DELETE ON {_roles(tables)} TO {_ident(CLI_ROLE)}"


def ensure_oauth2_database(primary: PgNode, local: LocalDatabases) -> str:
    """Create the OAuth2 DB on the primary if it is missing; its name."""
    return _ensure_database(primary, local, oauth2_database(local))


def _version_row_policies() -> list[str]:
    """Row security on the shared version table: everyone reads every branch's revision
    (Alembic looks at all heads), an owner writes only its own branch's rows (revision ids
    start with the branch name), so no service can make another one migrate again."""
    statements = [f"ALTER TABLE {VERSION_TABLE} ENABLE ROW LEVEL SECURITY"]
    readers = _roles(SERVICE_ROLES)
    policies: list[tuple[str, str]] = [("gatehouse_read", f"FOR SELECT TO {readers} USING (true)")]
    for role, prefix in BRANCH_PREFIXES.items():
        pattern = prefix.replace("_", "\\_") + "%"  # LIKE: the underscore itself
        own = f"version_num LIKE {_literal(pattern)}"
        policies.append(
            (f"{role}_writes", f"FOR ALL TO {_ident(role)} USING ({own}) WITH CHECK ({own})")
        )
    for name, rule in policies:
        statements.append(f"DROP POLICY IF EXISTS {_ident(name)} ON {VERSION_TABLE}")
        statements.append(f"CREATE POLICY {_ident(name)} ON {VERSION_TABLE} {rule}")
    return statements


def _present(primary: PgNode, database: str, tables: Iterable[str]) -> list[str]:
    wanted = sorted(tables)
    listed = ", ".join(_literal(name) for name in wanted)
    rows = primary.sql(
        f"SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename IN ({listed})",
        database,
    )
    found = {row[0] for row in rows}
    return [name for name in wanted if name in found]


def _sequences_of(primary: PgNode, database: str, tables: Sequence[str]) -> list[str]:
    """The sequences of the tables' serial columns (``public.audit_events_id_seq``)."""
    if not tables:
        return []
    listed = ", ".join(_literal(name) for name in tables)
    rows = primary.sql(
        "SELECT DISTINCT pg_get_serial_sequence(c.table_name, c.column_name) "
        "FROM information_schema.columns c WHERE c.table_schema = 'public' "
        f"AND c.table_name IN ({listed}) "
        "AND pg_get_serial_sequence(c.table_name, c.column_name) IS NOT NULL",
        database,
    )
    return sorted(row[0] for row in rows)


def grant_statements(primary: PgNode, database: str) -> str:
    """The grants between roles on the tables the migrations made (SQL, one batch; empty when
    there is nothing to grant)."""
    user_tables = _present(primary, database, UserBase.metadata.tables)
    session_tables = _present(primary, database, SessionBase.metadata.tables)
    cli, policy = _ident(CLI_ROLE), _ident(POLICY_ROLE)
    statements: list[str] = []
    if user_tables:
        statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {_roles(user_tables)} TO {cli}")
    for sequence in _sequences_of(primary, database, user_tables):
        statements.append(f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {cli}")
    if "audit_events" in user_tables:
        # Audit events only: INSERT, and the new row's id back (RETURNING id).
        statements.append(f"GRANT INSERT, SELECT (id) ON audit_events TO {policy}")
        for sequence in _sequences_of(primary, database, ["audit_events"]):
            statements.append(f"GRANT USAGE ON SEQUENCE {sequence} TO {policy}")
    if "sessions" in session_tables:
        statements.append(f"GRANT SELECT, DELETE ON sessions TO {cli}")
    return ";\n".join(statements)


async def _migrate_owners(home: Path, local: LocalDatabases) -> None:
    from gatehouse.storage.migrate import upgrade

    await upgrade(role_url(home, local, AUTH_ROLE), "user")
    await upgrade(role_url(home, local, POLICY_ROLE), "session")
    await upgrade(role_url(home, local, AUTH_ROLE, oath_database(local)), "oath")
    await upgrade(role_url(home, local, DIST_ROLE, outbox_database(local)), "outbox")
    await upgrade(role_url(home, local, AUTH_ROLE, oauth2_database(local)), "oauth2")


def secure_database(
    primary: PgNode, home: Path, local: LocalDatabases, say: Callable[[str], None]
) -> None:
    """Roles, passwords and grants on the running primary; the OATH, outbox and OAuth2 DBs
    made if missing; the user, session, OATH, outbox and OAuth2 tables migrated by their
    owners (over TLS, with the URLs the services get).

    Raises:
        ClusterError: a role's connection failed (the reason is in the message).
        ReplicationError: a statement failed.
    """
    database = local.database
    primary.sql(role_statements(home, database), database)
    oath = ensure_oath_database(primary, local)
    primary.sql(oath_role_statements(oath), oath)
    outbox = ensure_outbox_database(primary, local)
    primary.sql(outbox_role_statements(outbox), outbox)
    oauth2 = ensure_oauth2_database(primary, local)
    primary.sql(oauth2_role_statements(oauth2), oauth2)
    say("migrating the user, session, OATH, outbox and OAuth2 tables as their owners")
    try:
        asyncio.run(_migrate_owners(home, local))
    except DatabaseUnavailable as exc:
        raise ClusterError(f"the cluster's PostgreSQL refused a service role: {exc}") from None
    grants = grant_statements(primary, database)
    if grants:
        primary.sql(grants, database)
    oath_grants = oath_grant_statements(primary, oath)
    if oath_grants:
        primary.sql(oath_grants, oath)
    outbox_grants = outbox_grant_statements(primary, outbox)
    if outbox_grants:
        primary.sql(outbox_grants, outbox)
    oauth2_grants = oauth2_grant_statements(primary, oauth2)
    if oauth2_grants:
        primary.sql(oauth2_grants, oauth2)

"""One PostgreSQL server of the local pair: initdb, start, stop, kill, promote, status.

Node settings live in ``gatehouse.conf`` in the data directory (included from
``postgresql.conf``, rewritten by :meth:`PgNode.write_config` for the node's role); ``ALTER
SYSTEM`` is not used, so ``postgresql.auto.conf`` never overrides them.

With ``tls`` a node takes only TLS connections (``hostssl``, TLS 1.3 at least) with passwords
(SCRAM): its certificate and key, the CA certificate it and its clients check servers with, and
the superuser's libpq password file are in ``directory/tls`` (beside the data directory, so a
base backup or ``pg_rewind`` never copies one node's certificate to the other), written with
:meth:`PgNode.install_tls` before the node is created or started. The node's own connections
(psql, replication, ``pg_basebackup``, ``pg_rewind``) use ``sslmode=verify-full`` too.

Never :meth:`PgNode.start` an old primary after a failover: it would come back as a second
primary. :func:`~gatehouse.storage.postgres_ha.pair.rejoin` turns it into a standby of the
new one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gatehouse.storage.postgres_ha.binaries import require_bindir
from gatehouse.storage.postgres_ha.errors import ReplicationError

SERVER_USER = "postgres"
SUPERUSER = "gatehouse"
HOST = "127.0.0.1"
CONF_FILE = "gatehouse.conf"
TLS_DIR = "tls"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
ROOT_CERT = "root.crt"
PASSFILE = "pgpass"
TLS_MIN_VERSION = "TLSv1.3"
LOG_TAIL_LINES = 25
START_TIMEOUT = 60

StopMode = Literal["smart", "fast", "immediate"]
SynchronousCommit = Literal["on", "remote_apply"]


def _quote(value: str) -> str:
    """A postgresql.conf / conninfo string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conninfo_value(value: str) -> str:
    return value if re.fullmatch(r"[\w.,:/-]+", value) else _quote(value)


def pgpass_line(user: str, password: str) -> str:
    """A libpq password file line for ``user`` on any host, port and database."""

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{escape(user)}:{escape(password)}\n"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _process_state(pid: int) -> str | None:
    """The state letter of a process (``Z`` for a zombie), None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@dataclass(frozen=True, slots=True)
class Replica:
    """A standby as its primary sees it (one row of ``pg_stat_replication``)."""

    application_name: str
    state: str  # startup, catchup, streaming, backup, stopping
    sync_state: str  # async, potential, sync, quorum
    lag_bytes: int | None  # WAL written by the primary not yet replayed by the standby


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What a node is doing now."""

    name: str
    port: int
    running: bool
    in_recovery: bool | None  # None when the node is not running
    replicas: tuple[Replica, ...] = ()
    upstream_port: int | None = None  # the primary a standby streams from, when it does

    @property
    def role(self) -> Literal["primary", "standby", "stopped"]:
        if not self.running:
            return "stopped"
        return "standby" if self.in_recovery else "primary"


@dataclass
class PgNode:
    """One PostgreSQL server of the pair: ``directory/data`` and ``directory/postgres.log``.

    ``name`` is also the node's ``application_name`` and the name of its replication slot on
    the primary. ``fsync=False`` is for throwaway clusters (tests): nothing is flushed to disk.
    ``settings`` are extra postgresql.conf settings, applied last. ``tls``: TLS and passwords
    only (see the module's documentation).
    """

    name: str
    directory: Path
    port: int
    bindir: Path | None = None
    superuser: str = SUPERUSER
    fsync: bool = True
    synchronous_commit: SynchronousCommit = "remote_apply"
    settings: Mapping[str, str] = field(default_factory=dict)
    host: str = HOST
    tls: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", self.name):
            raise ReplicationError(
                f"node name {self.name!r}: use lower-case letters, digits and _ "
                "(it names a replication slot)"
            )
        self.directory = Path(self.directory)

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    @property
    def logfile(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def tls_dir(self) -> Path:
        return self.directory / TLS_DIR

    @property
    def exists(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    @property
    def standby_on_disk(self) -> bool:
        """Whether the node starts as a standby (its data directory has ``standby.signal``)."""
        return (self.datadir / "standby.signal").exists()

    def conninfo(self, database: str = "postgres", **extra: str) -> str:
        """A libpq connection string for this node."""
        params = {
            "host": self.host,
            "port": str(self.port),
            "user": self.superuser,
            "dbname": database,
            **self._client_tls(),
            **extra,
        }
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in params.items())

    def url(self, database: str) -> str:
        """A single-host SQLAlchemy URL of a database on this node (as the superuser)."""
        url = f"postgresql+asyncpg://{self.superuser}@{self.host}:{self.port}/{database}"
        query = "&".join(f"{key}={value}" for key, value in self._client_tls().items())
        return f"{url}?{query}" if query else url

    def _client_tls(self) -> dict[str, str]:
        """The libpq parameters of a connection to a TLS node as the superuser."""
        if not self.tls:
            return {}
        return {
            "sslmode": "verify-full",
            "sslrootcert": str(self.tls_dir / ROOT_CERT),
            "passfile": str(self.tls_dir / PASSFILE),
        }

    def install_tls(
        self, *, key_pem: bytes, cert_pem: bytes, ca_pem: bytes, superuser_password: str
    ) -> None:
        """Write the node's certificate and key, the CA certificate and the superuser's
        password file into ``directory/tls`` (0600, the server's); a running node takes a new
        certificate at :meth:`reload`."""
        self._prepare_directory()
        self.tls_dir.mkdir(mode=0o700, exist_ok=True)
        self.tls_dir.chmod(0o700)
        if os.geteuid() == 0:
            shutil.chown(self.tls_dir, SERVER_USER, SERVER_USER)
        self._write_bytes(self.tls_dir / SERVER_KEY, key_pem)
        self._write_bytes(self.tls_dir / SERVER_CERT, cert_pem)
        self._write_bytes(self.tls_dir / ROOT_CERT, ca_pem)
        self._write_file(self.tls_dir / PASSFILE, pgpass_line(self.superuser, superuser_password))

    def superuser_password(self) -> str:
        """The superuser's password in the node's password file.

        Raises:
            ReplicationError: there is none (:meth:`install_tls` writes it).
        """
        try:
            line = (self.tls_dir / PASSFILE).read_text().splitlines()[0]
        except (OSError, IndexError):
            raise ReplicationError(
                f"{self.tls_dir / PASSFILE}: no password file (install_tls first)"
            ) from None
        password = re.split(r"(?<!\\):", line, maxsplit=4)[4]
        return re.sub(r"\\(.)", r"\1", password)

    # -- running the binaries -------------------------------------------------------------

    def _binary(self, tool: str) -> Path:
        bindir = self.bindir or require_bindir()
        path = bindir / tool
        if not path.exists():
            raise ReplicationError(f"{tool} not found in {bindir} (install the PostgreSQL server)")
        return path

    def _run(
        self, tool: str, *args: str, timeout: float = 120, as_server: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [str(self._binary(tool)), *args]
        if as_server and os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        try:
            return subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise self._failure(f"{tool} did not finish within {timeout:.0f} s") from None

    def _check(self, tool: str, *args: str, timeout: float = 120, what: str = "") -> str:
        done = self._run(tool, *args, timeout=timeout)
        if done.returncode != 0:
            output = "\n".join(s.strip() for s in (done.stdout, done.stderr) if s.strip())
            raise self._failure(f"{what or tool} failed (exit {done.returncode}):\n{output}")
        return done.stdout

    def _failure(self, message: str) -> ReplicationError:
        tail = _tail(self.logfile)
        log = f"\n--- last lines of {self.logfile} ---\n{tail}" if tail else ""
        return ReplicationError(f"PostgreSQL node {self.name!r} (port {self.port}): {message}{log}")

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise ReplicationError(
                    f"PostgreSQL refuses to run as root and there is no {SERVER_USER!r} user "
                    "to run it as"
                ) from None
            shutil.chown(self.directory, SERVER_USER, SERVER_USER)
            probe = subprocess.run(
                ["runuser", "-u", SERVER_USER, "--", "test", "-w", str(self.directory)],
                check=False,
            )
            if probe.returncode != 0:
                raise ReplicationError(
                    f"the {SERVER_USER!r} user cannot write to {self.directory}: every parent "
                    "directory must be searchable by it"
                )

    def _write_file(self, path: Path, content: str) -> None:
        self._write_bytes(path, content.encode())

    def _write_bytes(self, path: Path, content: bytes) -> None:
        # Created 0600 before anything is written: keys and passwords are never readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(content)
        path.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(path, SERVER_USER, SERVER_USER)

    def write_config(
        self,
        *,
        synchronous_standby: str | None = None,
        upstream: PgNode | None = None,
    ) -> None:
        """(Re)write ``gatehouse.conf`` for the node's role; ``upstream`` makes it a standby.

        Takes effect at the next start or :meth:`reload`. A standby also gets
        ``standby.signal``; a primary loses it.
        """
        settings: dict[str, str] = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": "",
            "cluster_name": self.name,
            "wal_level": "replica",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            # A standby that stays away must not fill the primary's disk through its slot.
            "max_slot_wal_keep_size": "1GB",
            # pg_rewind reads the old primary's WAL back to its last checkpoint before the
            # failover; without this the checkpoint ending its crash recovery recycles it.
            "wal_keep_size": "1GB",
            "wal_log_hints": "on",
            "full_page_writes": "on",  # pg_rewind needs it
            "hot_standby": "on",
            "hot_standby_feedback": "on",
            "synchronous_commit": self.synchronous_commit,
            "synchronous_standby_names": synchronous_standby or "",
            "fsync": "on" if self.fsync else "off",
        }
        if self.tls:
            settings |= {
                "ssl": "on",
                "ssl_cert_file": str(self.tls_dir / SERVER_CERT),
                "ssl_key_file": str(self.tls_dir / SERVER_KEY),
                "ssl_min_protocol_version": TLS_MIN_VERSION,
                "password_encryption": "scram-sha-256",
            }
        if upstream is not None:
            settings["primary_conninfo"] = upstream.conninfo(application_name=self.name)
            settings["primary_slot_name"] = self.name
            settings["recovery_target_timeline"] = "latest"
        settings.update(self.settings)
        lines = [
            "# Written by gatehouse.storage.postgres_ha: this node's role and replication.",
            *(f"{key} = {_quote(value)}" for key, value in settings.items()),
        ]
        self._write_file(self.datadir / CONF_FILE, "\n".join(lines) + "\n")
        signal_file = self.datadir / "standby.signal"
        if upstream is not None:
            self._write_file(signal_file, "")
        else:
            signal_file.unlink(missing_ok=True)

    def _write_hba(self) -> None:
        if self.tls:
            text = (
                "# Gatehouse local cluster: loopback only, TLS and passwords (SCRAM) only.\n"
                f"hostssl all all {HOST}/32 scram-sha-256\n"
                f"hostssl replication {self.superuser} {HOST}/32 scram-sha-256\n"
                "hostnossl all all 0.0.0.0/0 reject\n"
                "hostnossl all all ::/0 reject\n"
            )
        else:
            text = (
                "# Gatehouse local cluster: loopback only, no passwords.\n"
                f"host all all {HOST}/32 trust\n"
                f"host replication all {HOST}/32 trust\n"
            )
        self._write_file(self.datadir / "pg_hba.conf", text)

    def _include_config(self) -> None:
        conf = self.datadir / "postgresql.conf"
        text = conf.read_text()
        line = f"include_if_exists = {_quote(CONF_FILE)}"
        if line not in text:
            self._write_file(conf, text.rstrip("\n") + f"\n\n{line}\n")

    # -- life cycle ---------------------------------------------------------------------------

    def initdb(self) -> None:
        """Create an empty cluster (data checksums on, so ``pg_rewind`` works later)."""
        if self.exists:
            raise ReplicationError(f"{self.datadir} already holds a PostgreSQL cluster")
        self._binary("initdb")
        self._prepare_directory()
        args = ["-D", str(self.datadir), "-U", self.superuser, "--auth=trust"]
        args += ["-E", "UTF8", "--no-locale", "--data-checksums"]
        if not self.fsync:
            args.append("--no-sync")
        pwfile = self.tls_dir / "initdb.pw"
        if self.tls:
            self._write_file(pwfile, self.superuser_password() + "\n")
            args.append(f"--pwfile={pwfile}")
        try:
            self._check("initdb", *args, what="initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        self._write_hba()
        self._include_config()

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server and wait until it accepts connections."""
        if not self.exists:
            raise ReplicationError(f"{self.datadir} holds no PostgreSQL cluster")
        self.clear_stale_pid_file()
        self._check(
            "pg_ctl",
            *("-D", str(self.datadir), "-l", str(self.logfile)),
            *("-w", "-t", str(int(timeout)), "start"),
            timeout=timeout + 10,
            what="start",
        )

    def stop(self, mode: StopMode = "fast", timeout: float = START_TIMEOUT) -> None:
        """Stop the server; ``immediate`` skips the shutdown checkpoint (like a crash)."""
        if not self.running():
            return
        self._check(
            "pg_ctl",
            *("-D", str(self.datadir), "-m", mode, "-w", "-t", str(int(timeout)), "stop"),
            timeout=timeout + 10,
            what=f"stop ({mode})",
        )

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and every backend at once: the node is lost, as in a crash."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            return
        # pg_ctl starts the postmaster in its own session: its group is the whole server.
        with contextlib.suppress(ProcessLookupError):
            if group == pid:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _process_state(pid) not in (None, "Z") or (group == pid and _group_members(group)):
            if time.monotonic() > deadline:
                raise self._failure(f"postmaster {pid} still alive {timeout:.0f} s after SIGKILL")
            time.sleep(0.02)

    def promote(self, timeout: float = START_TIMEOUT) -> None:
        """Turn this standby into a primary that needs no synchronous standby (yet)."""
        self._check(
            "pg_ctl",
            *("-D", str(self.datadir), "-w", "-t", str(int(timeout)), "promote"),
            timeout=timeout + 10,
            what="promote",
        )
        self.write_config()
        self.reload()

    def reload(self) -> None:
        self._check("pg_ctl", "-D", str(self.datadir), "reload", what="reload")

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid``, if the process is alive."""
        try:
            first = (self.datadir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        return pid if _process_state(pid) not in (None, "Z") else None

    def clear_stale_pid_file(self) -> None:
        """Remove ``postmaster.pid`` left by a killed postmaster that is not reaped yet.

        PostgreSQL treats a zombie's pid as a live postmaster and refuses to start; a
        zombie holds no shared memory, so its lock file is stale.
        """
        pid_file = self.datadir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if _process_state(pid) == "Z":
            pid_file.unlink(missing_ok=True)

    def running(self) -> bool:
        return self.postmaster_pid() is not None

    # -- SQL ---------------------------------------------------------------------------------

    def sql(
        self, statement: str, database: str = "postgres", timeout: float = 30
    ) -> list[list[str]]:
        """Run one statement with psql (autocommit); rows of text fields."""
        done = self._run(
            "psql",
            *("-d", self.conninfo(database), "-X", "-A", "-t", "-F", "\x1f"),
            *("-v", "ON_ERROR_STOP=1", "-c", statement),
            timeout=timeout,
            as_server=False,
        )
        if done.returncode != 0:
            raise ReplicationError(
                f"PostgreSQL node {self.name!r} (port {self.port}): {statement.split()[0]} "
                f"failed: {done.stderr.strip()}"
            )
        return [line.split("\x1f") for line in done.stdout.splitlines() if line]

    def status(self) -> NodeStatus:
        """Running or not, primary or standby, and the standbys streaming from it."""
        if not self.running():
            return NodeStatus(self.name, self.port, running=False, in_recovery=None)
        try:
            in_recovery = self.sql("SELECT pg_is_in_recovery()")[0][0] == "t"
            replicas = tuple(
                Replica(name, state, sync, int(lag) if lag else None)
                for name, state, sync, lag in self.sql(
                    "SELECT application_name, state, sync_state,"
                    " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint"
                    " FROM pg_stat_replication ORDER BY application_name"
                    if not in_recovery
                    else "SELECT application_name, state, sync_state, NULL"
                    " FROM pg_stat_replication ORDER BY application_name"
                )
            )
            upstream = self.sql("SELECT sender_port FROM pg_stat_wal_receiver")
        except ReplicationError:
            # Started but not (yet, or no longer) answering: starting up or shutting down.
            return NodeStatus(self.name, self.port, running=True, in_recovery=None)
        port = int(upstream[0][0]) if upstream and upstream[0][0] else None
        return NodeStatus(self.name, self.port, True, in_recovery, replicas, port)

    def ensure_slot(self, slot: str) -> None:
        """A physical replication slot named ``slot`` (for a standby of this node)."""
        exists = self.sql(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = {_quote(slot)}")
        if not exists:
            # Reserve WAL now: the standby may take a while to first connect.
            self.sql(f"SELECT pg_create_physical_replication_slot({_quote(slot)}, true)")

    def drop_stale_slots(self) -> None:
        """Drop inactive slots, e.g. the one an old primary kept for its former standby."""
        for (slot,) in self.sql("SELECT slot_name FROM pg_replication_slots WHERE NOT active"):
            self.sql(f"SELECT pg_drop_replication_slot({_quote(slot)})")

"""A local PostgreSQL pair: a primary and a synchronous streaming standby on loopback.

``gatehouse cluster`` uses this to run the databases of a one-machine HA cluster. Each node is
a data directory with its own port; the server binaries run as the ``postgres`` user when we
are root. Nodes listen on 127.0.0.1 only, without Unix sockets, and trust every loopback
connection (no passwords): a development and test cluster, not a production one.

Replication: the primary keeps a physical replication slot per standby and names the standby in
``synchronous_standby_names``, so a commit returns only once the standby has its WAL on disk
(``synchronous_commit = on``) and, by default, has applied it (``remote_apply``): an
acknowledged write survives the loss of the primary and is already visible on the standby
that will be promoted. ``remote_apply`` costs a replay on loopback (well under a millisecond
per commit); ``synchronous_commit="on"`` gives the same durability without it. The price of
either: while the sync standby is down, commits on the primary wait (see
:func:`set_synchronous_standby` to trade that durability for availability). A promoted
standby runs alone, asynchronously, until the old primary is brought back with :func:`rejoin`
(``pg_rewind``, possible because clusters are created with data checksums; a fresh base backup
when rewinding fails).

Node settings live in ``gatehouse.conf`` in the data directory (included from
``postgresql.conf``, rewritten by this module for the node's role); ``ALTER SYSTEM`` is not
used, so ``postgresql.auto.conf`` never overrides them.

Never :meth:`PgNode.start` an old primary after a failover: it would come back as a second
primary. :func:`rejoin` turns it into a standby of the new one.

GatehouseError
 └── ReplicationError   a PostgreSQL binary is missing or a step failed (the server log's
                        tail is in the message)
"""

from __future__ import annotations

import contextlib
import logging
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

from gatehouse.errors import GatehouseError

#: Where Debian and Ubuntu install the server binaries (``N/bin``); the newest version wins.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
BINDIR_ENV = "GATEHOUSE_PG_BINDIR"
SERVER_USER = "postgres"
SUPERUSER = "gatehouse"
HOST = "127.0.0.1"
CONF_FILE = "gatehouse.conf"
LOG_TAIL_LINES = 25
START_TIMEOUT = 60

log = logging.getLogger(__name__)

StopMode = Literal["smart", "fast", "immediate"]
SynchronousCommit = Literal["on", "remote_apply"]


class ReplicationError(GatehouseError):
    """A PostgreSQL binary is missing or a step of running the local pair failed."""


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed.

    ``$GATEHOUSE_PG_BINDIR`` first, then the newest ``/usr/lib/postgresql/N/bin``, then PATH.
    """
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    if DEBIAN_ROOT.is_dir():
        versions = [p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    return None


def require_bindir() -> Path:
    """Like :func:`find_bindir`, but a missing installation is a :class:`ReplicationError`."""
    bindir = find_bindir()
    if bindir is None:
        raise ReplicationError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL "
            f"(apt install postgresql) or set {BINDIR_ENV} to the directory holding them"
        )
    return bindir


def _quote(value: str) -> str:
    """A postgresql.conf / conninfo string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _conninfo_value(value: str) -> str:
    return value if re.fullmatch(r"[\w.,:/-]+", value) else _quote(value)


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
    ``settings`` are extra postgresql.conf settings, applied last.
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
            **extra,
        }
        return " ".join(f"{key}={_conninfo_value(value)}" for key, value in params.items())

    def url(self, database: str) -> str:
        """A single-host SQLAlchemy URL of a database on this node."""
        return f"postgresql+asyncpg://{self.superuser}@{self.host}:{self.port}/{database}"

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
        path.write_text(content)
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
        if upstream is not None:
            settings["primary_conninfo"] = upstream.conninfo(application_name=self.name)
            settings["primary_slot_name"] = self.name
            settings["recovery_target_timeline"] = "latest"
        settings.update(self.settings)
        lines = [
            "# Written by gatehouse.storage.replication: this node's role and replication.",
            *(f"{key} = {_quote(value)}" for key, value in settings.items()),
        ]
        self._write_file(self.datadir / CONF_FILE, "\n".join(lines) + "\n")
        signal_file = self.datadir / "standby.signal"
        if upstream is not None:
            self._write_file(signal_file, "")
        else:
            signal_file.unlink(missing_ok=True)

    def _write_hba(self) -> None:
        self._write_file(
            self.datadir / "pg_hba.conf",
            "# Gatehouse local cluster: loopback only, no passwords.\n"
            f"host all all {HOST}/32 trust\n"
            f"host replication all {HOST}/32 trust\n",
        )

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
        self._check("initdb", *args, what="initdb")
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


# -- the pair -----------------------------------------------------------------------------------


def create_primary(node: PgNode) -> None:
    """initdb and start a node as a primary, ready to take a standby."""
    node.initdb()
    node.write_config()
    node.start()


def create_standby(
    standby: PgNode, primary: PgNode, *, synchronous: bool = True, timeout: float = 60
) -> None:
    """A streaming standby of ``primary`` from a base backup; started.

    With ``synchronous`` the primary then waits for this standby on every commit (and this
    returns once the standby is the sync one).
    """
    if standby.exists:
        raise ReplicationError(f"{standby.datadir} already holds a PostgreSQL cluster")
    standby._prepare_directory()
    primary.ensure_slot(standby.name)
    _base_backup(standby, primary)
    _start_as_standby(standby, primary, synchronous=synchronous, timeout=timeout)


def _base_backup(standby: PgNode, primary: PgNode) -> None:
    args = ["-D", str(standby.datadir), "-d", primary.conninfo(application_name="pg_basebackup")]
    args += ["-X", "stream", "-c", "fast", "-S", standby.name]
    if not standby.fsync:
        args.append("--no-sync")
    standby._check("pg_basebackup", *args, timeout=600, what="base backup")


def _start_as_standby(
    standby: PgNode, primary: PgNode, *, synchronous: bool, timeout: float
) -> None:
    standby.write_config(upstream=primary)
    standby.start()
    if synchronous:
        set_synchronous_standby(primary, standby.name)
        wait_for_sync(primary, standby.name, timeout)


def set_synchronous_standby(primary: PgNode, standby: str | None) -> None:
    """Make commits on ``primary`` wait for ``standby`` (None: for no one, asynchronous)."""
    primary.write_config(synchronous_standby=standby)
    primary.reload()


def wait_for_sync(primary: PgNode, standby: str, timeout: float = 60) -> None:
    """Wait until ``standby`` streams from ``primary`` as its synchronous standby."""
    deadline = time.monotonic() + timeout
    while True:
        replicas = {r.application_name: r for r in primary.status().replicas}
        seen = replicas.get(standby)
        if seen is not None and seen.state == "streaming" and seen.sync_state == "sync":
            return
        if time.monotonic() > deadline:
            state = f"{seen.state}/{seen.sync_state}" if seen else "not connected"
            raise primary._failure(
                f"standby {standby!r} is not the synchronous standby after {timeout:.0f} s "
                f"({state})"
            )
        time.sleep(0.1)


def rejoin(
    old_primary: PgNode, new_primary: PgNode, *, synchronous: bool = True, timeout: float = 60
) -> Literal["rewound", "rebuilt"]:
    """Bring a failed primary back as a standby of the promoted one.

    ``pg_rewind`` first (it undoes what the old primary wrote after the standby stopped
    following, which was never acknowledged when replication was synchronous); when that
    fails, the data directory is replaced by a fresh base backup. Returns which happened.
    """
    if old_primary.running():
        old_primary.stop("fast")
    old_primary.clear_stale_pid_file()
    new_primary.ensure_slot(old_primary.name)
    # pg_rewind reads the source's timeline from its control file, which a fresh promotion
    # updates only at its first checkpoint.
    new_primary.sql("CHECKPOINT")
    args = ["--target-pgdata", str(old_primary.datadir)]
    args += ["--source-server", new_primary.conninfo()]
    if not old_primary.fsync:
        args.append("--no-sync")
    done = old_primary._run("pg_rewind", *args, timeout=600)
    if done.returncode == 0:
        try:
            # pg_rewind copied the new primary's configuration; _start_as_standby rewrites
            # this node's.
            _start_as_standby(old_primary, new_primary, synchronous=synchronous, timeout=timeout)
        except ReplicationError as error:
            log.warning("%s: rewound but not streaming, rebuilding: %s", old_primary.name, error)
            old_primary.stop("immediate")
        else:
            old_primary.drop_stale_slots()
            return "rewound"
    else:
        output = "\n".join(s.strip() for s in (done.stdout, done.stderr) if s.strip())
        log.warning("%s: pg_rewind failed, rebuilding:\n%s", old_primary.name, output)
    shutil.rmtree(old_primary.datadir)
    _base_backup(old_primary, new_primary)
    _start_as_standby(old_primary, new_primary, synchronous=synchronous, timeout=timeout)
    return "rebuilt"


@dataclass
class Pair:
    """Two nodes under one directory that take turns as primary and standby."""

    directory: Path
    ports: tuple[int, int]
    names: tuple[str, str] = ("pg1", "pg2")
    bindir: Path | None = None
    fsync: bool = True
    synchronous_commit: SynchronousCommit = "remote_apply"
    settings: Mapping[str, str] = field(default_factory=dict)
    nodes: tuple[PgNode, PgNode] = field(init=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        first, second = (
            PgNode(
                name,
                self.directory / name,
                port,
                bindir=self.bindir,
                fsync=self.fsync,
                synchronous_commit=self.synchronous_commit,
                settings=self.settings,
            )
            for name, port in zip(self.names, self.ports, strict=True)
        )
        self.nodes = (first, second)

    def create(self) -> None:
        """initdb the first node as primary, base-backup the second as its sync standby."""
        create_primary(self.nodes[0])
        create_standby(self.nodes[1], self.nodes[0])

    def start(self) -> None:
        """Start both nodes of an existing pair: the primary first, then its standby."""
        primaries = [n for n in self.nodes if n.exists and not n.standby_on_disk]
        standbys = [n for n in self.nodes if n.exists and n.standby_on_disk]
        if len(primaries) != 1:
            raise ReplicationError(
                f"expected one primary in {self.directory}, found "
                f"{', '.join(n.name for n in primaries) or 'none'} "
                "(after a failover, start the promoted node and rejoin the other)"
            )
        primary = primaries[0]
        if not primary.running():
            primary.start()
        for standby in standbys:
            if not standby.running():
                standby.start()

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop both nodes, the primary first: its clean shutdown waits until the standby has
        all of its WAL, and no commit is left waiting for a stopped standby."""
        for node in sorted(self.nodes, key=lambda n: n.standby_on_disk):
            node.stop(mode)

    def node_with_role(self, role: Literal["primary", "standby"]) -> PgNode | None:
        for node in self.nodes:
            if node.status().role == role:
                return node
        return None

    def other(self, node: PgNode) -> PgNode:
        return self.nodes[1] if node is self.nodes[0] else self.nodes[0]

    def failover(self) -> PgNode:
        """Promote the standby; a primary still running is stopped first (no two primaries).

        Returns the new primary. The old one stays down until :meth:`rejoin`.
        """
        standby = next((n for n in self.nodes if n.standby_on_disk and n.running()), None)
        if standby is None:
            raise ReplicationError(f"no running standby in {self.directory} to promote")
        old = self.other(standby)
        if old.running():
            # A clean stop hands the standby every last WAL record; a hung primary is killed.
            try:
                old.stop("fast", timeout=10)
            except ReplicationError:
                old.kill()
        standby.promote()
        return standby

    def rejoin(self) -> Literal["rewound", "rebuilt"]:
        """Bring the node that is not the running primary back as its sync standby."""
        primary = self.node_with_role("primary")
        if primary is None:
            raise ReplicationError(f"no running primary in {self.directory}")
        return rejoin(self.other(primary), primary)

    def url(self, database: str) -> str:
        """A multi-host URL of ``database`` that follows the writable node."""
        hosts = ",".join(n.host for n in self.nodes)
        ports = ",".join(str(n.port) for n in self.nodes)
        return (
            f"postgresql+asyncpg://{SUPERUSER}@/{database}"
            f"?host={hosts}&port={ports}&target_session_attrs=read-write"
        )

    def sql(self, statement: str, database: str = "postgres") -> list[list[str]]:
        """Run a statement on the current primary."""
        primary = self.node_with_role("primary")
        if primary is None:
            raise ReplicationError(f"no running primary in {self.directory}")
        return primary.sql(statement, database)

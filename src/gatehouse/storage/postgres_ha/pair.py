"""The local pair: a primary and its synchronous streaming standby, failover and rejoin.

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
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gatehouse.storage.postgres_ha.errors import ReplicationError
from gatehouse.storage.postgres_ha.node import SUPERUSER, PgNode, StopMode, SynchronousCommit

log = logging.getLogger(__name__)


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
    #: TLS and passwords only (:class:`PgNode`); each node's ``install_tls`` comes first.
    tls: bool = False
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
                tls=self.tls,
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
        url = (
            f"postgresql+asyncpg://{SUPERUSER}@/{database}"
            f"?host={hosts}&port={ports}&target_session_attrs=read-write"
        )
        tls = self.nodes[0]._client_tls()
        return url + "".join(f"&{key}={value}" for key, value in tls.items())

    def sql(self, statement: str, database: str = "postgres") -> list[list[str]]:
        """Run a statement on the current primary."""
        primary = self.node_with_role("primary")
        if primary is None:
            raise ReplicationError(f"no running primary in {self.directory}")
        return primary.sql(statement, database)

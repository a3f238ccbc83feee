"""The cluster's PostgreSQL: a :class:`~gatehouse.storage.postgres_ha.pair.Pair` in HOME/postgres
and the record of which node is the primary.

After a failover both data directories look like primaries (neither has ``standby.signal``)
until the old one rejoins, so the promoted node's name is written to ``postgres/primary``:
the next start starts that one and brings the other back as its standby (``pg_rewind``, else a
fresh base backup) rather than starting a second primary.

The nodes take TLS connections only, with passwords; each start gives them current
certificates from the installation's CA and the services' roles their grants
(:mod:`.db_access`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from gatehouse.cluster import db_access
from gatehouse.cluster.topology import LocalDatabases
from gatehouse.internal.lkg import atomic_write
from gatehouse.storage.postgres_ha.errors import ReplicationError
from gatehouse.storage.postgres_ha.node import PASSFILE, SUPERUSER, PgNode
from gatehouse.storage.postgres_ha.pair import Pair

NAMES = ("pg1", "pg2")
PRIMARY_FILE = "primary"


class ClusterDatabases:
    """The PostgreSQL pair of one cluster home (``directory`` is ``HOME/postgres``).

    Args:
        fsync: ``False`` for throwaway clusters (tests): nothing is flushed to disk.
        progress: called with a line for each step.
    """

    def __init__(
        self,
        directory: Path,
        local: LocalDatabases,
        *,
        fsync: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = directory
        self.home = directory.parent
        self.local = local
        self.pair = Pair(directory, local.ports(), names=NAMES, fsync=fsync, tls=True)
        self._say = progress or (lambda _message: None)

    @property
    def nodes(self) -> tuple[PgNode, PgNode]:
        return self.pair.nodes

    def node(self, name: str) -> PgNode:
        for node in self.pair.nodes:
            if node.name == name:
                return node
        raise ReplicationError(f"no PostgreSQL node {name!r}")

    def primary(self) -> PgNode:
        """The node that is (or, stopped, was last) the primary."""
        try:
            name = (self.directory / PRIMARY_FILE).read_text().strip()
        except OSError:
            name = ""
        if name in NAMES:
            return self.node(name)
        primaries = [n for n in self.pair.nodes if n.exists and not n.standby_on_disk]
        return primaries[0] if len(primaries) == 1 else self.pair.nodes[0]

    def standby(self) -> PgNode:
        return self.pair.other(self.primary())

    def _record_primary(self, node: PgNode) -> None:
        atomic_write(self.directory / PRIMARY_FILE, (node.name + "\n").encode(), 0o644)

    def _certificates(self, nodes: tuple[PgNode, ...]) -> None:
        """Current certificates and the superuser's password file for ``nodes`` (made before
        they are created, renewed before they start)."""
        ca = db_access.load_ca(self.home)
        made = [node for node in self.pair.nodes if (node.tls_dir / PASSFILE).exists()]
        if made and not db_access.passfile(self.home, SUPERUSER).exists():
            # The servers keep the superuser's password they were made with: take it back.
            db_access.write_password(self.home, SUPERUSER, made[0].superuser_password())
        password = db_access.ensure_password(self.home, SUPERUSER)
        db_access.ensure_certificates(nodes, ca, password, self._say)

    def start_all(self) -> None:
        """Create the pair the first time (and the database of the multi-host URL); else start
        the primary, then its standby, rejoining an old primary left by a failover. Then the
        services' roles and grants (:func:`.db_access.secure_database`).

        Raises:
            ReplicationError: a step failed; the nodes were made before TLS.
            ClusterError: a service's role cannot connect.
        """
        self._start_all()
        db_access.secure_database(self.primary(), self.home, self.local, self._say)

    def _start_all(self) -> None:
        pair = self.pair
        existing = [node for node in pair.nodes if node.exists]
        for node in existing:
            if not (node.tls_dir / PASSFILE).exists():
                raise ReplicationError(
                    f"{node.datadir} was created before the cluster's PostgreSQL took TLS "
                    "connections only, with a role per service: stop this cluster "
                    "('gatehouse cluster down') and bring one up in a new --home"
                )
        self._certificates(pair.nodes)
        if not existing:
            primary, standby = pair.nodes
            self._say(
                f"creating PostgreSQL: primary {primary.name} (port {primary.port}) and its "
                f"synchronous standby {standby.name} (port {standby.port})"
            )
            self.directory.mkdir(parents=True, exist_ok=True)
            pair.create()
            self._record_primary(primary)
            user, database = self.local.user, self.local.database
            if user != SUPERUSER:
                primary.sql(f'CREATE ROLE "{user}" LOGIN SUPERUSER')
            primary.sql(f'CREATE DATABASE "{database}" OWNER "{user}"')
            return
        if len(existing) != len(pair.nodes):
            raise ReplicationError(
                f"{self.directory} holds only {existing[0].name}: its creation was "
                "interrupted; remove the directory to create both nodes again"
            )
        primary = self.primary()
        standby = pair.other(primary)
        self._say(f"starting PostgreSQL: primary {primary.name}, standby {standby.name}")
        if not primary.running():
            primary.start()
        if not standby.standby_on_disk:
            self._say(
                f"{standby.name} was the primary before the failover to {primary.name}: "
                "rejoining it as its standby"
            )
            pair.rejoin()
        elif not standby.running():
            standby.start()

    def start(self, name: str) -> int:
        """Start one node; return its postmaster's pid.

        Raises:
            ReplicationError: it is the old primary of a failover (it would be a second
                primary: :meth:`rejoin` it), or it did not start.
        """
        node = self.node(name)
        self._certificates((node,))
        primary = self.primary()
        if node is not primary and not node.standby_on_disk:
            raise ReplicationError(
                f"{name} was the primary before the failover to {primary.name}: started, it "
                "would be a second primary; 'gatehouse cluster rejoin-db' brings it back as "
                f"{primary.name}'s standby"
            )
        node.start()
        pid = node.postmaster_pid()
        if pid is None:
            raise ReplicationError(f"PostgreSQL node {name!r} exited right after starting")
        return pid

    def running(self) -> list[str]:
        return [node.name for node in self.pair.nodes if node.running()]

    def stop_all(self) -> None:
        """Stop both nodes, the primary first (see :meth:`Pair.stop`); kill them if that
        fails."""
        try:
            self.pair.stop("fast")
        except ReplicationError as exc:
            self._say(f"PostgreSQL did not stop cleanly, killing it: {exc}")
            for node in self.pair.nodes:
                node.kill()

    def failover(self, *, kill: bool = True) -> PgNode:
        """Lose the primary (SIGKILL with ``kill``, else a fast shutdown) and promote the
        standby; return the new primary. The old one stays down until :meth:`rejoin`.

        Raises:
            ReplicationError: the standby is not running.
        """
        primary = self.primary()
        standby = self.pair.other(primary)
        if not standby.running() or not standby.standby_on_disk:
            raise ReplicationError(f"the standby {standby.name} is not running: nothing to promote")
        if kill and primary.running():
            self._say(f"killing the primary {primary.name}")
            primary.kill()
        self._say(f"promoting {standby.name}")
        promoted = self.pair.failover()
        self._record_primary(promoted)
        return promoted

    def rejoin(self) -> Literal["rewound", "rebuilt"]:
        """Bring the node that is not the primary back as its synchronous standby.

        Raises:
            ReplicationError: the primary is not running.
        """
        primary = self.primary()
        if not primary.running():
            raise ReplicationError(f"the primary {primary.name} is not running")
        self._say(f"rejoining {self.pair.other(primary).name} as the standby of {primary.name}")
        return self.pair.rejoin()

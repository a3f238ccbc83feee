"""The cluster's PostgreSQL: two nodes under Patroni (Debian ``patroni``) with three etcd
members (:mod:`.etcd`), in ``HOME/postgres``.

Patroni does what the home-made pair used to do by hand: it creates the primary (``initdb``)
and its synchronous standby (a base backup), promotes the synchronous standby when the
primary is lost (a killed postmaster, a frozen or unreachable node), and brings a failed
primary back as a standby (``pg_rewind``). This module writes each node's Patroni
configuration (:mod:`.patroni`, with the passwords of ``HOME/pgpass``), runs the etcd members
and the two Patroni daemons as detached processes (Patroni as the ``postgres`` user when we
are root), reads who leads through Patroni's REST API (:mod:`.patroni_rest`) and asks it for
planned switchovers.

Files: ``postgres/pgN/patroni.yml`` (0600, the server's: it holds the passwords),
``postgres/pgN/data``, ``postgres/pgN/tls`` (certificate, key, CA, the superuser's password
file), ``postgres/pgN/postgres.log``; ``postgres/primary`` names the last leader (started
first next time); ``logs/patroni-pgN.log``, ``run/patroni-pgN.pid``. Passwords are generated
at the first ``up``: ``pgpass/gatehouse`` (superuser), ``pgpass/replicator`` (replication),
``pgpass/patroni`` (the REST API's unsafe endpoints), all 0600.

The nodes take TLS connections only, with passwords; each start gives them current
certificates from the installation's CA and the services' roles their grants
(:mod:`.db_access`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import yaml

from gatehouse.cluster import db_access, processes
from gatehouse.cluster.etcd import Etcd
from gatehouse.cluster.patroni import (
    REPLICATION_USER,
    REST_USER,
    Layout,
    NodeFiles,
    PgMember,
    Secrets,
    node_config,
)
from gatehouse.cluster.patroni_rest import PatroniView, read_cluster, switchover
from gatehouse.cluster.topology import LocalDatabases
from gatehouse.cluster.topology_patroni import EtcdMember, PatroniSettings
from gatehouse.errors import GatehouseError
from gatehouse.internal.lkg import atomic_write
from gatehouse.storage.postgres_ha.binaries import require_bindir
from gatehouse.storage.postgres_ha.errors import ReplicationError
from gatehouse.storage.postgres_ha.node import (
    PASSFILE,
    ROOT_CERT,
    SERVER_CERT,
    SERVER_KEY,
    SERVER_USER,
    SUPERUSER,
    PgNode,
)

NAMES = ("pg1", "pg2")
PRIMARY_FILE = "primary"
PATRONI_CONFIG = "patroni.yml"
PATRONI_BINARIES = ("/usr/bin/patroni",)
#: How long a first bootstrap (initdb, base backup) or a restart may take.
START_TIMEOUT = 120.0
#: How long a failover or a switchover may take before we give up waiting.
FAILOVER_TIMEOUT = 60.0
_POLL = 0.1


def find_patroni() -> str | None:
    found = shutil.which("patroni")
    if found:
        return found
    return next((b for b in PATRONI_BINARIES if os.access(b, os.X_OK)), None)


def require_patroni() -> str:
    binary = find_patroni()
    if binary is None:
        raise ReplicationError("Patroni is not installed (apt-get install patroni)")
    return binary


class ClusterDatabases:
    """The PostgreSQL nodes of one cluster home (``directory`` is ``HOME/postgres``) under
    Patroni, and the etcd members Patroni keeps its leader key in.

    Args:
        fsync: ``False`` for throwaway clusters (tests): nothing is flushed to disk.
        progress: called with a line for each step.
        etcd: the etcd members (default: ``local``'s default ones).
        settings: Patroni's timing (default: the tuned defaults).
    """

    def __init__(
        self,
        directory: Path,
        local: LocalDatabases,
        *,
        fsync: bool = True,
        progress: Callable[[str], None] | None = None,
        etcd: Sequence[EtcdMember] | None = None,
        settings: PatroniSettings | None = None,
    ) -> None:
        self.directory = directory
        self.home = directory.parent
        self.local = local
        self.fsync = fsync
        self.settings = settings or PatroniSettings()
        self.etcd = Etcd(self.home, etcd if etcd is not None else local.default_etcd())
        first, second = (
            PgNode(name, directory / name, port, fsync=fsync, tls=True)
            for name, port in zip(NAMES, local.ports(), strict=True)
        )
        self._nodes = (first, second)
        self.rest_ports = dict(zip(NAMES, local.patroni_ports(), strict=True))
        self._say = progress or (lambda _message: None)

    # -- nodes ----------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[PgNode, PgNode]:
        return self._nodes

    def node(self, name: str) -> PgNode:
        for node in self._nodes:
            if node.name == name:
                return node
        raise ReplicationError(f"no PostgreSQL node {name!r}")

    def other(self, node: PgNode) -> PgNode:
        return self._nodes[1] if node is self._nodes[0] else self._nodes[0]

    def rest_address(self, name: str) -> tuple[str, int]:
        return (self.local.HOST, self.rest_ports[name])

    def view(self, timeout: float = 1.0) -> PatroniView | None:
        """Patroni's view of the cluster (leader, synchronous standby, lag); None when no
        Patroni answers."""
        return read_cluster([self.rest_address(name) for name in NAMES], timeout)

    def primary(self) -> PgNode:
        """The node Patroni says leads; else the one that led last (recorded)."""
        view = self.view()
        if view is not None and view.leader in NAMES:
            return self.node(view.leader)
        try:
            name = (self.directory / PRIMARY_FILE).read_text().strip()
        except OSError:
            name = ""
        return self.node(name) if name in NAMES else self._nodes[0]

    def standby(self) -> PgNode:
        return self.other(self.primary())

    def _record_primary(self, name: str) -> None:
        atomic_write(self.directory / PRIMARY_FILE, (name + "\n").encode(), 0o644)

    # -- files ----------------------------------------------------------------------------

    def _certificates(self, nodes: tuple[PgNode, ...]) -> None:
        """Current certificates and the superuser's password file for ``nodes`` (made before
        they are created, renewed before they start)."""
        ca = db_access.load_ca(self.home)
        made = [node for node in self._nodes if (node.tls_dir / PASSFILE).exists()]
        if made and not db_access.passfile(self.home, SUPERUSER).exists():
            # The servers keep the superuser's password they were made with: take it back.
            db_access.write_password(self.home, SUPERUSER, made[0].superuser_password())
        password = db_access.ensure_password(self.home, SUPERUSER)
        db_access.ensure_certificates(nodes, ca, password, self._say)

    def _secrets(self) -> Secrets:
        return Secrets(
            superuser=db_access.ensure_password(self.home, SUPERUSER),
            replication=db_access.ensure_password(self.home, REPLICATION_USER),
            rest=db_access.ensure_password(self.home, REST_USER),
        )

    def rest_auth(self) -> tuple[str, str]:
        """The REST API's user and password (its unsafe endpoints: switchover...)."""
        return REST_USER, db_access.ensure_password(self.home, REST_USER)

    def members(self) -> list[PgMember]:
        return [
            PgMember(node.name, node.host, node.port, self.rest_ports[node.name], str(node.datadir))
            for node in self._nodes
        ]

    def config_path(self, name: str) -> Path:
        return self.node(name).directory / PATRONI_CONFIG

    def write_config(self, node: PgNode) -> Path:
        """Write the node's Patroni configuration (0600, the server's); its path."""
        node._prepare_directory()
        layout = Layout(
            self.settings,
            self.etcd.members,
            self.members(),
            str(require_bindir()),
            fsync=self.fsync,
            # Loopback TCP only: no Unix socket for another local user to reach.
            extra_parameters={"unix_socket_directories": ""},
        )
        files = NodeFiles(
            cert=str(node.tls_dir / SERVER_CERT),
            key=str(node.tls_dir / SERVER_KEY),
            ca=str(node.tls_dir / ROOT_CERT),
            pgpass=str(node.directory / "patroni.pgpass"),
            log_dir=str(node.directory),
        )
        member = next(m for m in self.members() if m.name == node.name)
        document = node_config(layout, member, files, self._secrets())
        text = "# Written by 'gatehouse cluster up' at every start; holds passwords (0600).\n"
        text += yaml.safe_dump(document, sort_keys=False)
        path = self.config_path(node.name)
        node._write_file(path, text)
        return path

    # -- Patroni processes ----------------------------------------------------------------

    def _pid_file(self, name: str) -> processes.PidFile:
        return processes.PidFile(self.home / "run" / f"patroni-{name}.pid")

    def patroni_log(self, name: str) -> Path:
        return self.home / "logs" / f"patroni-{name}.log"

    def patroni_pid(self, name: str) -> int | None:
        return self._pid_file(name).running()

    def _spawn_patroni(self, node: PgNode) -> int:
        binary = require_patroni()
        config = self.write_config(node)
        argv = [binary, str(config)]
        env = {**os.environ, "HOME": str(node.directory), "PYTHONUNBUFFERED": "1"}
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
            argv = [
                setpriv,
                f"--reuid={SERVER_USER}",
                f"--regid={SERVER_USER}",
                "--init-groups",
                "--",
                *argv,
            ]
        try:
            pid = processes.spawn(argv, self.patroni_log(node.name), env)
        except GatehouseError as exc:
            raise ReplicationError(str(exc)) from None
        self._pid_file(node.name).write(pid)
        return pid

    def _failure(self, name: str, what: str) -> ReplicationError:
        log = self.patroni_log(name)
        try:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            tail = ""
        shown = f"\n--- last lines of {log} ---\n{tail}" if tail else ""
        return ReplicationError(f"PostgreSQL node {name}: {what}{shown}")

    def wait_leader(self, timeout: float = START_TIMEOUT, *, not_: str | None = None) -> str:
        """Wait until a node (other than ``not_``) leads and runs read-write; its name."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.view()
            if view is not None and view.leader is not None and view.leader != not_:
                leader = view.member(view.leader)
                if leader is not None and leader.state == "running":
                    node = self.node(view.leader)
                    with contextlib.suppress(ReplicationError):
                        if node.sql("SELECT pg_is_in_recovery()", timeout=5)[0][0] == "f":
                            return view.leader
            if time.monotonic() > deadline:
                name = not_ or NAMES[0]
                raise self._failure(
                    name, f"no leader after {timeout:g}s ({view and view.to_json()})"
                )
            time.sleep(_POLL)

    def wait_sync(self, standby: str, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``standby`` streams as the synchronous standby: Patroni says so, and
        the leader's ``pg_stat_replication`` too (right after a failover Patroni's view of
        the old primary can still be the one from before)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.view()
            leader = view.leader if view is not None else None
            member = view.member(standby) if view is not None else None
            in_sync = view is not None and view.sync_standby == standby and leader in NAMES
            if in_sync and member is not None and member.state in ("running", "streaming"):
                assert leader is not None
                if self._streams_sync(self.node(leader), standby):
                    return
            if time.monotonic() > deadline:
                raise self._failure(
                    standby,
                    f"not the synchronous standby after {timeout:g}s ({view and view.to_json()})",
                )
            time.sleep(_POLL)

    @staticmethod
    def _streams_sync(leader: PgNode, standby: str) -> bool:
        try:
            rows = leader.sql(
                "SELECT state, sync_state FROM pg_stat_replication "
                f"WHERE application_name = '{standby}'",
                timeout=5,
            )
        except ReplicationError:
            return False
        return ["streaming", "sync"] in rows

    # -- the whole ------------------------------------------------------------------------

    def start_all(self) -> None:
        """Start etcd, then Patroni on the node that led last (it creates the cluster the
        first time), then on the other (a base backup the first time) and wait until it is
        the synchronous standby; then the cluster's database, the services' roles and grants
        (:func:`.db_access.secure_database`).

        Raises:
            ReplicationError: a step failed (Patroni's log's tail is in the message); the
                nodes were made before TLS or before Patroni.
            ClusterError: a service's role cannot connect.
        """
        for node in self._nodes:
            if node.exists and not (node.tls_dir / PASSFILE).exists():
                raise ReplicationError(
                    f"{node.datadir} was created before the cluster's PostgreSQL took TLS "
                    "connections only, with a role per service: stop this cluster "
                    "('gatehouse cluster down') and bring one up in a new --home"
                )
            if node.exists and not self.config_path(node.name).exists():
                raise ReplicationError(
                    f"{node.datadir} was created before the cluster's PostgreSQL ran under "
                    "Patroni: stop this cluster ('gatehouse cluster down') and bring one up "
                    "in a new --home"
                )
        require_patroni()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._certificates(self._nodes)
        self._say(f"starting etcd ({', '.join(m.name for m in self.etcd.members)})")
        self.etcd.start_all()
        first = self.primary()
        second = self.other(first)
        created = not first.exists
        self._say(
            f"{'creating' if created else 'starting'} PostgreSQL under Patroni: {first.name} "
            f"(port {first.port}) first, then {second.name} (port {second.port}) as its "
            "synchronous standby"
        )
        if self.patroni_pid(first.name) is None:
            self._spawn_patroni(first)
        leader = self.wait_leader()
        if self.patroni_pid(second.name) is None:
            self._spawn_patroni(second)
        standby = self.other(self.node(leader))
        self.wait_sync(standby.name)
        self._record_primary(leader)
        primary = self.node(leader)
        self._ensure_database(primary)
        db_access.secure_database(primary, self.home, self.local, self._say)

    def _ensure_database(self, primary: PgNode) -> None:
        user, database = self.local.user, self.local.database
        if user != SUPERUSER and not primary.sql(
            f"SELECT 1 FROM pg_roles WHERE rolname = '{user}'"
        ):
            primary.sql(f'CREATE ROLE "{user}" LOGIN SUPERUSER')
        if not primary.sql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):
            primary.sql(f'CREATE DATABASE "{database}" OWNER "{user}"')

    def running(self) -> list[str]:
        """The nodes whose postmaster runs."""
        return [node.name for node in self._nodes if node.running()]

    def daemons_running(self) -> list[str]:
        """The Patroni daemons (``patroni-pgN``) and etcd members that run."""
        patroni = [f"patroni-{name}" for name in NAMES if self.patroni_pid(name) is not None]
        return patroni + self.etcd.running()

    def stop_all(self) -> None:
        """Stop Patroni on the standby, then on the primary (each stops its PostgreSQL: no
        failover), then etcd; kill whatever does not stop."""
        view = self.view()
        leader = view.leader if view is not None else None
        if leader in NAMES:
            self._record_primary(leader)
        order = sorted(NAMES, key=lambda name: name == leader)
        for name in order:
            self._stop_patroni(name)
        for node in self._nodes:
            if node.running():
                self._say(f"PostgreSQL {node.name} outlived Patroni: stopping it")
                try:
                    node.stop("immediate", timeout=10)
                except ReplicationError:
                    node.kill()
        self.etcd.stop_all()

    def _stop_patroni(self, name: str) -> None:
        pid = self.patroni_pid(name)
        if pid is not None:
            # A frozen Patroni (a test's SIGSTOP) must be able to take SIGTERM.
            processes.signal_group(pid, signal.SIGCONT)
            killed = processes.stop_groups([pid], timeout=20)
            if killed:
                self._say(f"Patroni on {name} did not stop within 20s: killed")
        self._pid_file(name).remove()

    # -- one node -------------------------------------------------------------------------

    def start(self, name: str) -> int:
        """Start Patroni on one node (it starts PostgreSQL, as a standby of the leader when
        there is one); return the postmaster's pid once it runs.

        Raises:
            ReplicationError: it did not start.
        """
        node = self.node(name)
        self._certificates((node,))
        if self.patroni_pid(name) is None:
            self._spawn_patroni(node)
        deadline = time.monotonic() + START_TIMEOUT
        while (pid := node.postmaster_pid()) is None:
            if self.patroni_pid(name) is None:
                raise self._failure(name, "Patroni exited")
            if time.monotonic() > deadline:
                raise self._failure(name, f"PostgreSQL not running after {START_TIMEOUT:g}s")
            time.sleep(_POLL)
        return pid

    def stop(self, name: str) -> None:
        """Stop Patroni on one node and with it its PostgreSQL (a leader hands over first)."""
        self._stop_patroni(name)
        node = self.node(name)
        if node.running():
            node.stop("fast")

    def kill(self, name: str) -> None:
        """SIGKILL the node's postmaster, nothing else (its Patroni notices the crash)."""
        self.node(name).kill()

    def freeze(self, name: str) -> None:
        """SIGSTOP the node's Patroni and its PostgreSQL (every backend): a frozen machine."""
        self._signal_node(name, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        """SIGCONT what :meth:`freeze` stopped."""
        self._signal_node(name, signal.SIGCONT)

    def _signal_node(self, name: str, sig: signal.Signals) -> None:
        pid = self.patroni_pid(name)
        postmaster = self.node(name).postmaster_pid()
        groups = [pid] if pid is not None else []
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                groups.append(os.getpgid(postmaster))
        for group in groups:
            processes.signal_group(group, sig)

    def failover(self, *, kill: bool = True) -> PgNode:
        """Lose the primary and let Patroni promote its synchronous standby; return the new
        primary once it takes writes. ``kill``: SIGKILL of the postmaster (a crash: Patroni
        fails over by itself); else a planned :meth:`switchover`.

        Raises:
            ReplicationError: the standby is not the synchronous one, or no promotion.
        """
        if not kill:
            return self.switchover()
        primary = self.primary()
        standby = self.other(primary)
        view = self.view()
        if view is None or view.sync_standby != standby.name:
            raise ReplicationError(
                f"the standby {standby.name} is not the synchronous standby: Patroni would not "
                "promote it"
            )
        self._say(f"killing the primary {primary.name}'s postmaster")
        primary.kill()
        leader = self.wait_leader(FAILOVER_TIMEOUT, not_=primary.name)
        self._record_primary(leader)
        return self.node(leader)

    def switchover(self, candidate: str | None = None) -> PgNode:
        """A planned switch: Patroni stops the primary cleanly and promotes the synchronous
        standby (or ``candidate``); return the new primary once it takes writes.

        Raises:
            ReplicationError: Patroni refused (the standby is not in sync, no standby).
        """
        primary = self.primary()
        target = candidate or self.other(primary).name
        self._say(f"switching over from {primary.name} to {target}")
        for attempt in range(3):
            try:
                switchover(self.rest_address(primary.name), primary.name, target, self.rest_auth())
                break
            except ReplicationError as exc:
                # Patroni's etcd client moves to another member after a failed request: a
                # lost etcd member can fail the first write of the switchover key.
                if "DCS" not in str(exc) or attempt == 2:
                    raise
                time.sleep(1.0)
        leader = self.wait_leader(FAILOVER_TIMEOUT, not_=primary.name)
        self._record_primary(leader)
        return self.node(leader)

    def rejoin(self) -> Literal["rewound", "rebuilt"]:
        """Wait until the node that is not the primary streams as its synchronous standby
        again (Patroni rewinds a failed primary by itself: ``rewound``; ``rebuilt`` when
        Patroni was not running there and had to be started).

        Raises:
            ReplicationError: the primary is not running, or the standby did not come back.
        """
        primary = self.primary()
        if not primary.running():
            raise ReplicationError(f"the primary {primary.name} is not running")
        other = self.other(primary)
        how: Literal["rewound", "rebuilt"] = "rewound"
        if self.patroni_pid(other.name) is None:
            self._say(f"starting Patroni on {other.name}")
            self._spawn_patroni(other)
            how = "rebuilt"
        self._say(f"waiting for {other.name} to stream as {primary.name}'s synchronous standby")
        self.wait_sync(other.name)
        return how

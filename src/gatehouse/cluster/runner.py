"""The local HA cluster: a topology run on this machine (``gatehouse cluster``).

Every service of the topology runs as a detached process (:mod:`.processes`), next to a
PostgreSQL primary and its synchronous standby (:mod:`.databases`),
the demo backend and HAProxy in front of the Access Points. :class:`Cluster` is the API; the
CLI (:mod:`.cli`) and the chaos tests drive the same methods::

    cluster = Cluster.prepare(Path("var/cluster"), "examples/ha-cluster.yaml")
    url = cluster.up()             # every service healthy behind HAProxy
    cluster.kill("ps1")            # SIGKILL to its process group
    cluster.start("ps1")           # started again, waits until it is healthy
    cluster.status()               # a ClusterStatus (gatehouse.cluster.status)
    cluster.kill("pg1")            # SIGKILL of the primary's postmaster: Patroni promotes pg2
    cluster.switchover_db()        # a planned switch through Patroni
    cluster.rejoin_db()            # wait until the old primary streams as the sync standby
    cluster.down()                 # reverse dependency order, PostgreSQL last

``up`` starts PostgreSQL (created the first time), the demo backend and Admin; publishes the
installation from the topology through Admin the first time (from then on the configuration
is Admin's: ``gatehouse config apply|publish``) and makes the console's first superadmin, as
``gatehouse up`` does (:attr:`Cluster.first_admin`); starts the Distribution, Authentication,
Policy and Access Point services, each following Admin from its state directory; waits until
each answers its health check; then starts HAProxy.

The parts: :mod:`.members` (names, kinds, start order), :mod:`.home` (the home directory's
layout and files), :mod:`.preflight` (what ``up`` checks first), :mod:`.commands` (each
member's command line), :mod:`.bootstrap` (publishing through Admin, join tokens, the demo
user).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gatehouse.administration.config_cli import AdminClient
from gatehouse.cluster import bootstrap, processes
from gatehouse.cluster.cli import DEFAULT_TOPOLOGY
from gatehouse.cluster.commands import SERVICE_COMMANDS, member_argv
from gatehouse.cluster.databases import ClusterDatabases
from gatehouse.cluster.errors import ClusterError
from gatehouse.cluster.home import (
    HAPROXY_CONFIG,
    LOG_DIR,
    PG_DIR,
    RUN_DIR,
    STATS_SOCKET,
    TOPOLOGY_FILE,
    write_home,
)
from gatehouse.cluster.local_tls import with_local_tls
from gatehouse.cluster.members import (
    DEMO_BACKEND,
    LOAD_BALANCER,
    STOP_ORDER,
    Kind,
    Member,
    cluster_members,
)
from gatehouse.cluster.preflight import preflight
from gatehouse.cluster.topology import Topology, dialable, host_port, load_topology
from gatehouse.config.access_point import parse_listen
from gatehouse.errors import GatehouseError
from gatehouse.node import STATE_DIR
from gatehouse.storage.postgres_ha.errors import ReplicationError
from gatehouse.storage.postgres_ha.node import PgNode

if TYPE_CHECKING:
    from gatehouse.cluster.status import ClusterStatus

#: How long ``up`` and ``start`` wait for a service to answer its health check.
START_TIMEOUT = 60.0
_POLL = 0.05


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """A topology run on this machine from one home directory.

    Args:
        home: the cluster's directory (created by :meth:`up`).
        topology: what to run; :meth:`open` and :meth:`prepare` read it.
        fsync: PostgreSQL flushes to disk; ``False`` for throwaway clusters (tests).
        progress: called with a line for each step of :meth:`up` and :meth:`down`.
        source: the topology file's name, for HAProxy's configuration header.
        start_timeout: how long a service may take to answer its health check.
    """

    def __init__(
        self,
        home: Path,
        topology: Topology,
        *,
        fsync: bool = True,
        progress: Callable[[str], None] | None = None,
        source: str = "",
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.home = Path(home).absolute()
        # local_tls: the certificates made in HOME/tls and the settings naming them.
        self.topology = topology = with_local_tls(topology, self.home)
        self.source = source
        self.start_timeout = start_timeout
        #: Variables added to the environment of every service started from now on (a
        #: rolling-upgrade drill's simulated next release, :mod:`.upgrade`).
        self.environment: dict[str, str] = {}
        self._say = progress or (lambda _message: None)
        local = topology.databases.local
        self.databases = (
            ClusterDatabases(
                self.home / PG_DIR,
                local,
                fsync=fsync,
                progress=self._say,
                etcd=topology.databases.etcd_members(),
                settings=topology.databases.patroni,
            )
            if local is not None
            else None
        )
        pg_names = [n.name for n in self.databases.nodes] if self.databases is not None else []
        self.members: list[Member] = cluster_members(topology, pg_names)
        self._by_name = {m.name: m for m in self.members}
        self.startup_seconds: float | None = None
        """How long the last :meth:`up` took."""
        self.first_admin: dict[str, Any] | None = None
        """The console's first superadmin's credentials when the last :meth:`up` made them
        (the first one; shown once, kept nowhere else), else None."""

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        home: Path,
        *,
        fsync: bool = True,
        progress: Callable[[str], None] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> Cluster:
        """The cluster of ``home``, with the topology its first ``up`` saved there.

        Raises:
            ClusterError: no cluster was ever brought up in ``home``.
        """
        saved = Path(home) / TOPOLOGY_FILE
        if not saved.exists():
            raise ClusterError(
                f"no cluster in {Path(home).absolute()}: start one with "
                f"'gatehouse cluster up [TOPOLOGY] --home {home}'"
            )
        return cls(
            Path(home),
            load_topology(saved),
            fsync=fsync,
            progress=progress,
            source=str(saved),
            start_timeout=start_timeout,
        )

    @classmethod
    def prepare(
        cls,
        home: Path,
        topology_path: str | Path | None = None,
        *,
        fsync: bool = True,
        progress: Callable[[str], None] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> Cluster:
        """The cluster to bring up: ``topology_path``, else the topology saved in ``home``, else
        :data:`DEFAULT_TOPOLOGY`.

        Raises:
            ConfigError: the topology is invalid (every problem with its field path).
            ClusterError: ``home`` already runs another topology.
        """
        saved = Path(home) / TOPOLOGY_FILE
        if topology_path is None:
            if saved.exists():
                return cls.open(home, fsync=fsync, progress=progress, start_timeout=start_timeout)
            topology_path = DEFAULT_TOPOLOGY
        topology = with_local_tls(load_topology(topology_path), Path(home).absolute())
        if saved.exists() and load_topology(saved) != topology:
            raise ClusterError(
                f"{Path(home).absolute()} holds a cluster of another topology ({saved}): "
                "use that topology, or 'gatehouse cluster down' and another --home"
            )
        return cls(
            Path(home),
            topology,
            fsync=fsync,
            progress=progress,
            source=str(topology_path),
            start_timeout=start_timeout,
        )

    # -- names and paths --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The load balancer's URL: where browsers and load go."""
        lb = self.topology.load_balancer
        host, port = parse_listen(lb.listen)
        tls = lb.tls_certificate is not None or lb.access_point_tls == "passthrough"
        return f"{'https' if tls else 'http'}://{host_port(dialable(host), port)}/"

    @property
    def console_url(self) -> str:
        """The web console, on the Administration service's listener."""
        return f"{self.admin_url}/console/"

    @property
    def admin_url(self) -> str:
        admin = self.topology.administration
        return "https://" + host_port(*self._address(admin.id))

    @property
    def stats_socket(self) -> Path:
        return self.home / RUN_DIR / STATS_SOCKET

    def member(self, name: str) -> Member:
        """The member called ``name``.

        Raises:
            ClusterError: there is none (the message lists the names).
        """
        try:
            return self._by_name[name]
        except KeyError:
            names = ", ".join(m.name for m in self.members)
            raise ClusterError(
                f"no service {name!r} in this cluster (there are: {names})"
            ) from None

    def names(self, *kinds: Kind) -> list[str]:
        """Member names in start order, only of ``kinds`` when given."""
        return [m.name for m in self.members if not kinds or m.kind in kinds]

    def log_path(self, name: str) -> Path:
        """Where ``name`` writes its output (a PostgreSQL server: its data directory's log)."""
        if self.member(name).kind == "database":
            return self._pg_node(name).logfile
        return self.home / LOG_DIR / f"{name}.log"

    def _pid_file(self, name: str) -> processes.PidFile:
        return processes.PidFile(self.home / RUN_DIR / f"{name}.pid")

    def _address(self, name: str) -> tuple[str, int]:
        address = self.member(name).address
        assert address is not None
        return address

    def _state_dir(self, name: str) -> Path:
        return self.home / STATE_DIR / name

    # -- what runs --------------------------------------------------------------------------

    def pid(self, name: str) -> int | None:
        """The pid of a running member (a PostgreSQL server's postmaster), else None."""
        member = self.member(name)
        if member.kind == "database":
            return self._pg_node(name).postmaster_pid()
        return self._pid_file(name).running()

    def exited(self, name: str) -> bool:
        """Whether ``name`` ended without being stopped by the cluster (its pid file is left)."""
        pid_file = self._pid_file(name)
        return pid_file.recorded() is not None and pid_file.running() is None

    def running(self) -> list[str]:
        """The names of the members running now."""
        return [m.name for m in self.members if self.pid(m.name) is not None]

    def status(self) -> ClusterStatus:
        """Every member: process, health answer, configuration version (see :mod:`.status`)."""
        from gatehouse.cluster.status import collect

        return collect(self)

    # -- up ---------------------------------------------------------------------------------

    def up(self) -> str:
        """Start the whole topology and return the load balancer's URL once every service
        answers its health check and HAProxy listens.

        On failure everything started is stopped again before the error is raised.

        Raises:
            ClusterError: already running, a port taken, a service that did not start.
            ReplicationError: PostgreSQL could not be created or started.
        """
        began = time.monotonic()
        running = self.running()
        if running:
            raise ClusterError(
                f"the cluster in {self.home} is already running ({', '.join(running)}): "
                "'gatehouse cluster status' shows it, 'gatehouse cluster start NAME' starts a "
                "stopped service, 'gatehouse cluster down' stops it all"
            )
        preflight(self.home, self.topology, self.members, self.databases, self.stats_socket)
        write_home(self.home, self.topology, stats_socket=self.stats_socket, source=self.source)
        try:
            if self.databases is not None:
                self.databases.start_all()
            if self.topology.demo_backend is not None:
                self._spawn(DEMO_BACKEND)
            admin_id = self.topology.administration.id
            self._spawn(admin_id)
            admin = self._wait_for_admin()
            bootstrap.publish(admin, self.installation_document(), self.source, self._say)
            self.first_admin = bootstrap.first_admin(admin, self._say)
            services = self.names("distribution", "authentication", "policy", "access_point")
            for name in services:
                self._prepare_state(name, admin)
            self._say(f"starting {', '.join(services)}")
            for name in services:
                self._spawn(name)
            waited = [*services, *self.names("demo_backend")]
            self.wait_healthy(waited, self.start_timeout)
            self._spawn(LOAD_BALANCER)
            self.wait_healthy([LOAD_BALANCER], self.start_timeout)
        except BaseException:
            self._say("up failed: stopping what was started")
            self.down()
            raise
        self.startup_seconds = time.monotonic() - began
        self._say(f"up in {self.startup_seconds:.1f}s")
        return self.url

    # -- Admin ------------------------------------------------------------------------------

    def installation_document(self) -> dict[str, Any]:
        """What the first ``up`` publishes: the topology's installation, each Policy service
        with the home's session admin token (so ``gatehouse users disable --home`` ends
        sessions through a running Policy service)."""
        return bootstrap.cluster_installation(self.topology, self.home)

    def _wait_for_admin(self) -> AdminClient:
        name = self.topology.administration.id
        self._say(f"waiting for the Administration service ({name}) at {self.admin_url}")
        deadline = time.monotonic() + self.start_timeout
        while True:
            self._check_alive(name)
            client = bootstrap.answering_admin(self.home, self.admin_url)
            if client is not None:
                return client
            if time.monotonic() > deadline:
                raise self._failure(name, f"did not answer within {self.start_timeout:g}s")
            time.sleep(_POLL)

    def admin_client(self, timeout: float = 15.0) -> AdminClient:
        """A client of the cluster's Administration service with its admin token.

        Raises:
            ConfigError: no readable admin token (Admin never started in this home).
        """
        return bootstrap.admin_client(self.home, self.admin_url, timeout)

    def _prepare_state(self, name: str, admin: AdminClient | None) -> None:
        """The service's state directory, with a join token unless it registered before."""
        kind = self.member(name).kind
        bootstrap.prepare_state(
            self._state_dir(name), kind, self.admin_client if admin is None else lambda: admin
        )

    # -- processes --------------------------------------------------------------------------

    def _spawn(self, name: str) -> int:
        argv = member_argv(self.member(name), self.topology, self.home, self.admin_url)
        environment = {**os.environ, **self.environment, "PYTHONUNBUFFERED": "1"}
        pid = processes.spawn(argv, self.log_path(name), environment)
        self._pid_file(name).write(pid)
        return pid

    def _check_alive(self, name: str) -> None:
        if self.member(name).kind == "database":
            if not self._pg_node(name).running():
                raise ClusterError(f"PostgreSQL {name} is not running")
            return
        if self._pid_file(name).running() is None:
            raise self._failure(name, "exited")

    def _failure(self, name: str, what: str) -> ClusterError:
        log = self.log_path(name)
        tail = _tail(log)
        shown = f"\n--- last lines of {log} ---\n{tail}" if tail else ""
        return ClusterError(f"{name} {what}{shown}")

    def wait_healthy(
        self, names: Sequence[str] | None = None, timeout: float = START_TIMEOUT
    ) -> None:
        """Wait until each named member (default: all) answers its health check.

        Raises:
            ClusterError: one exited, or is not healthy at ``timeout``.
        """
        from gatehouse.cluster.status import member_health

        waiting = list(self.names() if names is None else names)
        deadline = time.monotonic() + timeout
        while waiting:
            for name in list(waiting):
                self._check_alive(name)
                if member_health(self, name).ok:
                    waiting.remove(name)
            if not waiting:
                return
            if time.monotonic() > deadline:
                last = member_health(self, waiting[0])
                raise self._failure(waiting[0], f"not healthy after {timeout:g}s ({last.text})")
            time.sleep(_POLL)

    # -- one member -------------------------------------------------------------------------

    def kill(self, name: str) -> int:
        """SIGKILL ``name`` (its whole process group; a PostgreSQL server with every backend)
        and wait until it is gone; return the pid it had.

        Raises:
            ClusterError: it is not running.
        """
        member = self.member(name)
        pid = self.pid(name)
        if pid is None:
            raise ClusterError(f"{name} is not running")
        if member.kind == "database":
            self._pg_node(name).kill()
        else:
            try:
                processes.kill_groups([pid])
            except GatehouseError as exc:
                raise ClusterError(f"{name}: {exc}") from None
            self._pid_file(name).remove()
        return pid

    def stop(self, name: str) -> None:
        """Stop ``name`` cleanly (SIGTERM, SIGKILL after 10 s; PostgreSQL: a fast shutdown).

        Raises:
            ClusterError: it is not running.
        """
        member = self.member(name)
        pid = self.pid(name)
        if pid is None:
            raise ClusterError(f"{name} is not running")
        if member.kind == "database":
            self._require_databases().stop(name)  # its Patroni, which stops PostgreSQL
        else:
            processes.stop_groups([pid])
            self._pid_file(name).remove()

    def start(self, name: str, *, wait: bool = True) -> int:
        """Start ``name`` again (as ``up`` did) and, with ``wait``, wait until it is healthy;
        return its pid.

        Raises:
            ClusterError: it runs already, or did not become healthy (the log's tail says
                why); an old PostgreSQL primary after a failover (use :meth:`rejoin_db`).
        """
        member = self.member(name)
        pid = self.pid(name)
        if pid is not None:
            raise ClusterError(f"{name} is already running (pid {pid})")
        if member.kind == "database":
            try:
                return self._require_databases().start(name)
            except ReplicationError as exc:
                raise ClusterError(str(exc)) from None
        if member.kind == "load_balancer" and not (self.home / HAPROXY_CONFIG).exists():
            raise ClusterError(f"no {self.home / HAPROXY_CONFIG}: bring the cluster up first")
        if member.kind in SERVICE_COMMANDS:
            self._prepare_state(name, None)
        pid = self._spawn(name)
        if wait:
            self.wait_healthy([name], self.start_timeout)
        return pid

    # -- down -------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop everything in reverse dependency order, PostgreSQL last (the primary first,
        then its standby); return the names that were running."""
        stopped: list[str] = []
        for kind in STOP_ORDER:
            names = self.names(kind)
            pids = {name: self._pid_file(name).running() for name in names}
            live = {name: pid for name, pid in pids.items() if pid is not None}
            if live:
                self._say(f"stopping {', '.join(live)}")
                killed = processes.stop_groups(list(live.values()))
                for name, pid in live.items():
                    if pid in killed:
                        self._say(f"{name} did not stop within {processes.STOP_TIMEOUT:g}s: killed")
                stopped += live
            for name in names:
                self._pid_file(name).remove()
        if self.databases is not None:
            live_pg = self.databases.running()
            if live_pg or self.databases.daemons_running():
                self._say(f"stopping PostgreSQL ({', '.join(live_pg)}), Patroni and etcd")
                self.databases.stop_all()
                stopped += live_pg
        return stopped

    # -- PostgreSQL -------------------------------------------------------------------------

    def _require_databases(self) -> ClusterDatabases:
        if self.databases is None:
            raise ClusterError(
                "the topology's databases are PostgreSQL URLs, not local: "
                "the cluster does not run them"
            )
        return self.databases

    def _pg_node(self, name: str) -> PgNode:
        return self._require_databases().node(name)

    def pg_primary(self) -> str:
        """The name of the PostgreSQL node that is (or, stopped, was last) the primary."""
        return self._require_databases().primary().name

    def pg_standby(self) -> str:
        """The name of the other PostgreSQL node."""
        return self._require_databases().standby().name

    def failover_db(self, *, kill: bool = True) -> str:
        """Lose the PostgreSQL primary and let Patroni promote its synchronous standby; return
        the new primary once it takes writes.

        With ``kill`` the primary's postmaster gets SIGKILL (a crash: Patroni fails over by
        itself, like ``kill("pg1")``); otherwise a planned :meth:`switchover_db`. Patroni
        brings the old primary back as the standby (``pg_rewind``); :meth:`rejoin_db` waits
        for that. The services follow through their multi-host URL
        (``target_session_attrs=read-write``). Admin's one-Admin lock is a session on the old
        primary: Admin stops when it notices the lock is gone (within
        ``lock_check_interval``, 5 s) and is started again with ``start("admin")``.

        Raises:
            ClusterError: the standby is not the synchronous one, or no promotion.
        """
        try:
            return self._require_databases().failover(kill=kill).name
        except ReplicationError as exc:
            raise ClusterError(str(exc)) from None

    def switchover_db(self, candidate: str | None = None) -> str:
        """A planned switch through Patroni (the primary stopped cleanly, the synchronous
        standby promoted); return the new primary.

        Raises:
            ClusterError: Patroni refused (no synchronous standby).
        """
        try:
            return self._require_databases().switchover(candidate).name
        except ReplicationError as exc:
            raise ClusterError(str(exc)) from None

    def rejoin_db(self) -> Literal["rewound", "rebuilt"]:
        """Wait until the PostgreSQL node that is not the primary streams as its synchronous
        standby again (Patroni rewinds it by itself); return how it came back.

        Raises:
            ClusterError: the primary is not running, or the standby did not come back.
        """
        try:
            return self._require_databases().rejoin()
        except ReplicationError as exc:
            raise ClusterError(str(exc)) from None

    # -- users ------------------------------------------------------------------------------

    def add_demo_user(self) -> str | None:
        """Create the demo user with a fresh password and return it; None when it exists.

        Raises:
            ClusterError: ``gatehouse users add`` failed.
        """
        return bootstrap.add_demo_user(self.home)

"""What ``gatehouse cluster status`` shows: for each member of the cluster its process, its
health answer, the configuration version it runs, and whom it prefers to call.

Sources: the pid files, each service's own health endpoint (Access Point
``/_gatehouse/health``, Policy, Authentication and Distribution ``/internal/v1/health``, Admin
``/api/v1/health``), an Access Point's status listener (``status_listen`` in the topology:
its configuration version and Policy routing, which its public health answer does not show;
mutual TLS with the operator's certificate once the AP is enrolled), Admin's
``/api/v1/services`` (the version each service acknowledged, used when a service does not
answer), HAProxy's stats socket (which Access Point it sends traffic to), PostgreSQL
itself (primary or standby) and Patroni's REST API (the leader, the synchronous standby and
its lag: :class:`DatabaseHA`), with the health of each etcd member.

An Access Point's status listener says which Policy service its decisions go to now
(``"policy": {"using": URL}``), and a Policy service's which Authentication service its
logins use: the status shows that one ("uses"). For a member that does not answer, it shows
the one it would prefer: the first of its ordered list that is healthy now. An Authentication
service shows the Distribution service it prefers; a Distribution service its channels and
what it delivered.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gatehouse.administration.credentials import operator_context
from gatehouse.cli_tables import render_table
from gatehouse.cluster.haproxy import HEALTH_PATH as AP_HEALTH_PATH
from gatehouse.cluster.haproxy import access_point_states
from gatehouse.cluster.topology import (
    AuthenticationService,
    DistributionService,
    PolicyService,
    Topology,
)
from gatehouse.errors import ConfigError, GatehouseError
from gatehouse.internal.service_tls import TLS_DIR
from gatehouse.node import STATE_DIR
from gatehouse.storage.postgres_ha.node import NodeStatus
from gatehouse.trust.tls import CERT_FILE

if TYPE_CHECKING:
    from gatehouse.cluster.members import Kind
    from gatehouse.cluster.runner import Cluster

PROBE_TIMEOUT = 1.0
INTERNAL_HEALTH_PATH = "/internal/v1/health"
HEALTH_PATHS: dict[str, str] = {
    "access_point": AP_HEALTH_PATH,
    "policy": INTERNAL_HEALTH_PATH,
    "authentication": INTERNAL_HEALTH_PATH,
    "distribution": INTERNAL_HEALTH_PATH,
    "administration": "/api/v1/health",
    "demo_backend": "/",
}


@dataclass(frozen=True, slots=True)
class Health:
    """One health check's outcome: ``text`` is ``ok`` or what went wrong."""

    ok: bool
    text: str
    answer: dict[str, Any] | None = None

    @property
    def version(self) -> int | None:
        """The configuration version the service says it runs."""
        if self.answer is None:
            return None
        version = self.answer.get("config_version")  # an Access Point
        config = self.answer.get("config")  # a Policy or Authentication service
        if version is None and isinstance(config, dict):
            version = config.get("version")
        return version if isinstance(version, int) else None


def probe(
    address: tuple[str, int],
    path: str,
    timeout: float = PROBE_TIMEOUT,
    tls: bool = False,
    context: ssl.SSLContext | None = None,
) -> Health:
    """``GET path`` at ``address``: healthy on 200 (the demo backend: any answer below 500).
    ``tls``: over TLS, the certificate not verified (a health answer carries no secret);
    ``context``: over TLS with this client context (an operator's certificate)."""
    host, port = address
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    elif tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "gatehouse-status"})
        response = conn.getresponse()
        body = response.read()
    except ConnectionRefusedError:
        return Health(False, "refused")
    except TimeoutError:
        return Health(False, "timed out")
    except (OSError, http.client.HTTPException) as exc:
        return Health(False, f"no answer ({exc.__class__.__name__})")
    finally:
        conn.close()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        answer = None
    if response.status == 200 or (path == "/" and response.status < 500):
        return Health(True, "ok", answer)
    message = answer.get("message") or answer.get("status") if answer else None
    return Health(False, f"{response.status} {message}" if message else str(response.status))


def _load_balancer_health(cluster: Cluster) -> Health:
    member = cluster.member("haproxy")
    assert member.address is not None
    try:
        states = access_point_states(cluster.stats_socket, timeout=PROBE_TIMEOUT)
    except GatehouseError:
        return Health(False, "no stats socket")
    try:
        with socket.create_connection(member.address, timeout=PROBE_TIMEOUT):
            pass
    except OSError:
        return Health(False, "refused")
    return Health(True, "ok", {"access_points": states})


def _database_health(status: NodeStatus) -> Health:
    if not status.running:
        return Health(False, "stopped")
    if status.in_recovery is None:
        return Health(False, "not answering")
    return Health(True, "ok")


def member_health(cluster: Cluster, name: str, timeout: float = PROBE_TIMEOUT) -> Health:
    """The health of one member, as its own endpoint (or PostgreSQL, or HAProxy) says."""
    member = cluster.member(name)
    if member.kind == "database":
        assert cluster.databases is not None
        return _database_health(cluster.databases.node(name).status())
    if member.kind == "load_balancer":
        return _load_balancer_health(cluster)
    assert member.address is not None
    tls = member.kind == "administration" or (
        member.kind == "access_point"
        and any(ap.id == name and ap.tls is not None for ap in cluster.topology.access_points)
    )
    context = None
    if member.kind in _INTERNAL and _enrolled(cluster, name):
        # Its internal listener is mutual TLS: the operator's certificate may read health.
        try:
            context = operator_context(cluster.home)
        except GatehouseError as exc:
            return Health(False, f"no operator certificate ({exc})")
    health = probe(member.address, HEALTH_PATHS[member.kind], timeout, tls, context)
    if member.kind == "access_point" and health.ok:
        details = _access_point_details(cluster, name, timeout)
        if details is not None:
            return Health(health.ok, health.text, details)
    return health


def access_point_status(
    cluster: Cluster, name: str
) -> tuple[tuple[str, int], ssl.SSLContext | None] | None:
    """Where and how to read an AP's details: its status listener's address, and the
    operator's client context once the AP is enrolled (its status listener is then mutual
    TLS); None without a ``status_listen`` (or without the operator's certificate).
    The public health answer says only up or down."""
    ap = next(a for a in cluster.topology.access_points if a.id == name)
    address = cluster.topology.status_address(ap)
    if address is None:
        return None
    context = None
    if _enrolled(cluster, name):
        try:
            context = operator_context(cluster.home)
        except GatehouseError:
            return None
    return address, context


def _enrolled(cluster: Cluster, name: str) -> bool:
    """Whether a service enrolled with Admin (its internal listeners are then mutual TLS)."""
    return (cluster.home / STATE_DIR / name / TLS_DIR / CERT_FILE).exists()


def _access_point_details(cluster: Cluster, name: str, timeout: float) -> dict[str, Any] | None:
    """What an AP's status listener says (its version, its Policy routing); None when it has
    none or does not answer."""
    where = access_point_status(cluster, name)
    if where is None:
        return None
    address, context = where
    return probe(address, AP_HEALTH_PATH, timeout, context=context).answer


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One row of ``gatehouse cluster status``."""

    name: str
    kind: str
    """``access_point``, ``policy``, ``authentication``, ``administration``, ``database``,
    ``load_balancer`` or ``demo_backend``."""
    role: str
    node: str | None
    pid: int | None
    state: str
    """``running``, ``stopped``, ``exited`` (died on its own); PostgreSQL: ``primary``,
    ``standby`` or ``stopped``."""
    healthy: bool
    health: str
    config_version: int | None
    prefers: str | None = None
    """An Access Point: the Policy service it prefers now (the first healthy one of its
    list); a Policy service: the Authentication service."""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DatabaseHA:
    """Patroni's view of the PostgreSQL nodes, and etcd's health."""

    leader: str | None
    sync_standby: str | None
    lag: int | None
    """Bytes the synchronous standby is behind the leader (None: unknown)."""
    patroni: dict[str, Any] | None
    """Patroni's ``GET /cluster`` members (None: no Patroni answered)."""
    etcd: dict[str, bool]
    failsafe: bool = False

    def summary(self) -> str:
        if self.patroni is None:
            head = "database: Patroni does not answer"
        else:
            standby = self.sync_standby or "none"
            lag = f", lag {self.lag} B" if self.lag is not None else ""
            leader = self.leader or "none"
            head = f"database: Patroni leader {leader}, synchronous standby {standby}{lag}"
            if self.failsafe:
                head += " (failsafe mode: etcd has no majority)"
        up = [name for name, ok in self.etcd.items() if ok]
        return f"{head}; etcd {len(up)} of {len(self.etcd)} healthy ({', '.join(up) or 'none'})"


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    url: str
    services: tuple[ServiceStatus, ...]
    newest_version: int | None
    """The newest version Admin published (None when Admin did not answer)."""
    database: DatabaseHA | None = None
    """Patroni and etcd (None: the topology's databases are not local)."""

    def __getitem__(self, name: str) -> ServiceStatus:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def __iter__(self) -> Iterator[ServiceStatus]:
        return iter(self.services)

    @property
    def healthy(self) -> bool:
        return all(s.healthy for s in self.services)

    def unhealthy(self) -> list[str]:
        return [s.name for s in self.services if not s.healthy]

    def versions(self) -> dict[str, int | None]:
        """The configuration version of every service that follows Admin."""
        return {s.name: s.config_version for s in self.services if s.kind in _FOLLOW}

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "newest_version": self.newest_version,
            "healthy": self.healthy,
            "services": [asdict(s) for s in self.services],
            "database": asdict(self.database) if self.database is not None else None,
        }


@dataclass(frozen=True, slots=True)
class _AdminView:
    newest: int | None
    running: dict[str, int | None]


def _admin_view(cluster: Cluster) -> _AdminView | None:
    try:
        admin = cluster.admin_client(timeout=PROBE_TIMEOUT * 2)
        services = admin.call("GET", "/api/v1/services")
        newest = admin.call("GET", "/api/v1/versions?limit=1")
    except (GatehouseError, ConfigError):
        return None
    return _AdminView(
        newest[0]["version"] if newest else None,
        {s["id"]: s["running_version"] for s in services},
    )


def _pg_status(cluster: Cluster, name: str) -> NodeStatus:
    assert cluster.databases is not None
    return cluster.databases.node(name).status()


def _database_ha(cluster: Cluster) -> DatabaseHA | None:
    databases = cluster.databases
    if databases is None:
        return None
    view = databases.view(timeout=PROBE_TIMEOUT)
    etcd = databases.etcd.health()
    if view is None:
        return DatabaseHA(None, None, None, None, etcd)
    standby = view.member(view.sync_standby) if view.sync_standby else None
    return DatabaseHA(
        view.leader,
        view.sync_standby,
        standby.lag if standby is not None else None,
        view.to_json(),
        etcd,
        view.failsafe,
    )


def _patroni_detail(ha: DatabaseHA | None, name: str) -> str | None:
    """A PostgreSQL row's detail from Patroni's view; None when Patroni did not answer."""
    if ha is None or ha.patroni is None:
        return None
    member = next((m for m in ha.patroni["members"] if m["name"] == name), None)
    if member is None:
        return "Patroni: not a member"
    if member["role"] == "leader":
        standby = f"sync standby {ha.sync_standby}" if ha.sync_standby else "no sync standby"
        return f"Patroni leader ({member['state']}); {standby}"
    lag = f", lag {member['lag']} B" if member["lag"] is not None else ""
    role = "sync standby" if member["role"] == "sync_standby" else member["role"]
    return f"Patroni {role} of {ha.leader or 'no leader'} ({member['state']}{lag})"


def _pg_detail(status: NodeStatus, names: dict[int, str]) -> str:
    if status.role == "primary":
        if not status.replicas:
            return "no standby streaming"
        return ", ".join(
            f"{r.sync_state} standby {r.application_name} {r.state}" for r in status.replicas
        )
    if status.role == "standby":
        if status.upstream_port is None:
            return "not streaming"
        return f"streams from {names.get(status.upstream_port, status.upstream_port)}"
    return ""


#: The services that follow Admin and report the version they run.
_FOLLOW = ("access_point", "policy", "authentication", "distribution")
#: The services whose health is on their internal (mutual TLS once enrolled) listener.
_INTERNAL = ("policy", "authentication", "distribution")


def collect(cluster: Cluster) -> ClusterStatus:
    """Every member's status; the checks run in parallel, each bounded by a short timeout."""
    members = cluster.members
    services = [m.name for m in members if m.kind != "database"]
    databases = [m.name for m in members if m.kind == "database"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        admin_future = pool.submit(_admin_view, cluster)
        health_futures = {name: pool.submit(member_health, cluster, name) for name in services}
        pg_futures = {name: pool.submit(_pg_status, cluster, name) for name in databases}
        ha_future = pool.submit(_database_ha, cluster)
        admin = admin_future.result()
        healths = {name: future.result() for name, future in health_futures.items()}
        pg = {name: future.result() for name, future in pg_futures.items()}
        ha = ha_future.result()
    pg_ports = {status.port: name for name, status in pg.items()}
    healths.update({name: _database_health(status) for name, status in pg.items()})
    lb_answer = healths["haproxy"].answer if "haproxy" in healths else None
    lb_states: dict[str, str] = lb_answer.get("access_points", {}) if lb_answer else {}

    def first_healthy(order: list[str]) -> str | None:
        return next((n for n in order if healths.get(n, Health(False, "")).ok), None)

    rows = []
    for member in members:
        name = member.name
        health = healths[name]
        prefers, detail = _relations(
            cluster, member.kind, name, first_healthy, lb_states, health.answer
        )
        state: str
        if member.kind == "database":
            status = pg[name]
            state = status.role
            detail = _patroni_detail(ha, name) or _pg_detail(status, pg_ports)
            pid = cluster.pid(name) if status.running else None
        else:
            pid = cluster.pid(name)
            exited = pid is None and cluster.exited(name)
            state = "running" if pid is not None else "exited" if exited else "stopped"
        version = health.version
        if version is None and admin is not None and pid is not None and member.kind in _FOLLOW:
            version = admin.running.get(name)  # running, but its health check failed
        if member.kind == "administration" and admin is not None:
            detail = f"newest version {admin.newest}" if admin.newest else "nothing published"
        rows.append(
            ServiceStatus(
                name=name,
                kind=member.kind,
                role=member.role,
                node=member.node,
                pid=pid,
                state=state,
                healthy=health.ok and (pid is not None),
                health=health.text,
                config_version=version,
                prefers=prefers,
                detail=detail,
            )
        )
    return ClusterStatus(cluster.url, tuple(rows), admin.newest if admin else None, ha)


def _relations(
    cluster: Cluster,
    kind: Kind,
    name: str,
    first_healthy: Callable[[list[str]], str | None],
    lb_states: dict[str, str],
    answer: dict[str, Any] | None,
) -> tuple[str | None, str]:
    """Whom an Access Point or a Policy service uses (or, silent, prefers) now, and the
    detail column."""
    topology = cluster.topology

    def relation(order: list[str], key: str) -> tuple[str | None, str]:
        by_url = {topology.endpoint(s): s.id for s in _services(topology) if s.id in order}
        routing = answer.get(key) if isinstance(answer, dict) else None
        using = routing.get("using") if isinstance(routing, dict) else None
        if isinstance(using, str) and using in by_url:
            return by_url[using], f"uses {by_url[using]} of {', '.join(order)}"
        prefers = first_healthy(order)
        return prefers, f"prefers {prefers or 'none healthy'} of {', '.join(order)}"

    if kind == "access_point":
        ap = next(a for a in topology.access_points if a.id == name)
        prefers, detail = relation(topology.policy_order(ap), "policy")
        if name in lb_states:
            detail += f"; HAProxy: {lb_states[name]}"
        return prefers, detail
    if kind == "policy":
        ps = next(p for p in topology.policy_services if p.id == name)
        return relation(topology.authentication_order(ps), "authentication")
    if kind == "authentication" and topology.distribution_services:
        auth = next(a for a in topology.authentication_services if a.id == name)
        prefers = first_healthy(topology.distribution_order(auth))
        order = ", ".join(topology.distribution_order(auth))
        return prefers, f"codes via {prefers or 'none healthy'} of {order}"
    if kind == "distribution":
        return None, _distribution_detail(answer)
    if kind == "load_balancer":
        return None, cluster.url
    return None, ""


def _distribution_detail(answer: dict[str, Any] | None) -> str:
    """A Distribution service's channels (in order) and what it delivered since it started."""
    if not isinstance(answer, dict):
        return ""
    channels = answer.get("channels")
    names = ", ".join(str(c) for c in channels) if isinstance(channels, list) else ""
    detail = f"channels {names}" if names else "no channels"
    problems = answer.get("channel_problems")
    if isinstance(problems, list | dict) and problems:
        detail += f" ({len(problems)} with problems)"
    if isinstance(answer.get("sent"), int):
        detail += f"; sent {answer['sent']}, expired {answer.get('expired', 0)}"
    return detail


def _services(
    topology: Topology,
) -> list[PolicyService | AuthenticationService | DistributionService]:
    return [
        *topology.policy_services,
        *topology.authentication_services,
        *topology.distribution_services,
    ]


def render(status: ClusterStatus) -> str:
    """The status as a table (drawn on a terminal, plain columns otherwise), then the URL
    and the newest published version."""
    rows = [
        (
            s.name,
            s.role,
            s.node or "-",
            str(s.pid) if s.pid is not None else "-",
            s.state,
            s.health,
            str(s.config_version) if s.config_version is not None else "-",
            s.detail,
        )
        for s in status.services
    ]
    headers = ("NAME", "ROLE", "NODE", "PID", "STATE", "HEALTH", "CONFIG", "DETAIL")
    newest = status.newest_version
    published = str(newest) if newest is not None else "unknown (Admin did not answer)"
    summary = "all healthy" if status.healthy else f"not healthy: {', '.join(status.unhealthy())}"
    database = status.database.summary() + "\n" if status.database is not None else ""
    return (
        render_table(headers, rows, "Cluster")
        + f"load balancer: {status.url}\nnewest configuration version: {published}\n"
        + database
        + f"{summary}\n"
    )

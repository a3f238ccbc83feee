"""Rolling upgrade of a running cluster: every service replaced in turn, nobody logged out.

The order (docs/operations.md, "Rolling upgrade"):

1. The Access Points, one at a time. HAProxy *drains* the AP first (``set server ... state
   drain`` on its runtime socket: no new request goes to it, those under way finish), so it
   stops only once HAProxy has stopped sending; it is stopped (SIGTERM: it finishes what it
   has), started from the new release, and put back (``ready``) once HAProxy's health checks
   pass.
2. The database migration, online (docs/migrations.md): it only expands the schema, so the
   previous release's Policy and Authentication services keep running on it.
3. The Policy services, one at a time: the Access Points' decisions move to the next one
   within the request; the next is replaced only once the Access Points fail back.
4. The Authentication services, then the Distribution services, likewise.
5. The Administration service: not on the request path.

Sessions live in the session database, so replacing every process logs nobody out.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from gatehouse.cluster.errors import ClusterError
from gatehouse.cluster.haproxy import (
    access_point_sessions,
    access_point_states,
    set_access_point_state,
)
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.status import ClusterStatus
from gatehouse.errors import GatehouseError

#: How long an Access Point may take to finish what HAProxy sent it before it is stopped.
DRAIN_WAIT = 10.0
#: How long a replaced service may take to be used again (HAProxy's checks, fail-back).
SETTLE_WAIT = 30.0
_POLL = 0.1


@dataclass(frozen=True, slots=True)
class Step:
    member: str
    action: str
    seconds: float
    #: When it began (``time.monotonic()``).
    started: float = 0.0


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"rolling upgrade: not within {timeout:g}s: {what}")
        time.sleep(_POLL)


def _lb_state(cluster: Cluster, name: str) -> str:
    try:
        return access_point_states(cluster.stats_socket).get(name, "")
    except GatehouseError:
        return ""


def replace_access_point(cluster: Cluster, name: str) -> None:
    """Drain ``name`` in HAProxy, stop it, start it again, and put it back in rotation."""
    socket = cluster.stats_socket
    try:
        set_access_point_state(socket, name, "drain")
    except GatehouseError as exc:
        raise ClusterError(f"rolling upgrade: {exc}") from None
    # Requests HAProxy sent before the drain finish on the old process.
    _wait(f"{name} drained", lambda: access_point_sessions(socket, name) == 0, DRAIN_WAIT)
    cluster.stop(name)
    cluster.start(name)
    # Drained but healthy again ("DRAIN"): HAProxy's checks passed; then back in rotation.
    _wait(f"HAProxy checks {name}", lambda: _lb_state(cluster, name) == "DRAIN", SETTLE_WAIT)
    set_access_point_state(socket, name, "ready")
    _wait(f"HAProxy sends to {name}", lambda: _lb_state(cluster, name) == "UP", SETTLE_WAIT)


def _preferred(cluster: Cluster, status: ClusterStatus) -> bool:
    """Every Access Point and Policy service uses its first choice again (fail-back done)."""
    topology = cluster.topology
    for ap in topology.access_points:
        if status[ap.id].prefers != topology.policy_order(ap)[0]:
            return False
    for ps in topology.policy_services:
        if status[ps.id].prefers != topology.authentication_order(ps)[0]:
            return False
    return status.healthy


def replace_service(cluster: Cluster, name: str) -> None:
    """Stop ``name``, start it again, and wait until its callers use it again."""
    cluster.stop(name)
    cluster.start(name)
    _wait(
        f"{name} used again by its callers",
        lambda: _preferred(cluster, cluster.status()),
        SETTLE_WAIT,
    )


def migrate_databases(cluster: Cluster) -> None:
    """The migration step: each database brought to the newest revision by its owner role
    (the cluster's own PostgreSQL, cluster/db_access.py), or with the home's URLs."""
    import asyncio

    from gatehouse.cluster import db_access
    from gatehouse.storage.home import database_urls
    from gatehouse.storage.migrate import upgrade, upgrade_installation

    local = cluster.topology.databases.local
    if local is None:
        asyncio.run(upgrade_installation(database_urls(cluster.home), "all"))
        return
    home = cluster.home
    owners = [
        (db_access.AUTH_ROLE, None, "user"),
        (db_access.POLICY_ROLE, None, "session"),
        (db_access.AUTH_ROLE, db_access.oath_database(local), "oath"),
        (db_access.DIST_ROLE, db_access.outbox_database(local), "outbox"),
        (db_access.AUTH_ROLE, db_access.oauth2_database(local), "oauth2"),
    ]

    async def run() -> None:
        for role, database, which in owners:
            await upgrade(db_access.role_url(home, local, role, database), which)  # type: ignore[arg-type]

    asyncio.run(run())


def rolling_upgrade(
    cluster: Cluster,
    *,
    migrate: Callable[[], None] | None = None,
    progress: Callable[[str], None] = lambda _message: None,
) -> list[Step]:
    """Replace every service of ``cluster`` in the documented order; ``migrate`` runs the
    database migration between the Access Points and the Policy services. The new release
    is whatever ``cluster`` starts now (its code, :attr:`Cluster.environment`).

    Raises:
        ClusterError: a step did not complete (the cluster is left as it is, every service
            but the one at fault running).
    """
    steps: list[Step] = []

    def timed(member: str, action: str, run: Callable[[], None]) -> None:
        progress(f"{member}: {action}...")
        started = time.monotonic()
        run()
        steps.append(Step(member, action, time.monotonic() - started, started))

    status = cluster.status()
    deadline = time.monotonic() + SETTLE_WAIT
    while not status.healthy:
        if time.monotonic() > deadline:
            unhealthy = ", ".join(status.unhealthy())
            raise ClusterError(f"rolling upgrade: not healthy: {unhealthy}; fix that first")
        time.sleep(_POLL * 5)
        status = cluster.status()
    topology = cluster.topology
    for ap in topology.access_points:
        timed(
            ap.id, "drained and replaced", functools.partial(replace_access_point, cluster, ap.id)
        )
    if migrate is not None:
        timed("database", "migrated (expand)", migrate)
    services = [
        *topology.policy_services,
        *topology.authentication_services,
        *topology.distribution_services,
    ]
    for service in services:
        timed(service.id, "replaced", functools.partial(replace_service, cluster, service.id))
    for name in cluster.names("administration"):
        timed(name, "replaced", functools.partial(replace_service, cluster, name))
    return steps

"""The metrics of a service hosted by uvicorn (Policy, Authentication, Distribution,
Administration): one registry per process, rendered by its metrics listener.

Counters that code increments (decisions, authentications, deliveries) are prometheus-client
objects defined here, one set per process; what a service already keeps (its failover
clients' per-endpoint counters, its config agent, its certificate, its database pools) is
read when Prometheus scrapes, through :class:`StateCollector`. Slow readings (a database
count) are refreshed by async ``refreshers`` just before rendering, each bounded in time.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import gatehouse
from gatehouse.compiled import is_compiled
from gatehouse.metrics.families import (
    LinkRow,
    certificate_family,
    client_rows,
    config_families,
    gauge,
    link_families,
)
from gatehouse.metrics.names import DURATION_BUCKETS

log = logging.getLogger("gatehouse.metrics")

#: Seconds a refresher may take before the scrape goes on without it.
REFRESH_TIMEOUT = 2.0

# --- counted by the code --------------------------------------------------------------------

# No ``_created`` series next to every counter and histogram: Prometheus does not need them
# (resets show in the counters) and they double what each scrape carries.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter(
    "gatehouse_http_requests",
    "requests answered by this service, by route (its template, never the path), method and status",
    ("route", "method", "status"),
    registry=None,
)
HTTP_DURATION = Histogram(
    "gatehouse_http_request_duration_seconds",
    "time to answer a request, by route template",
    ("route",),
    buckets=DURATION_BUCKETS,
    registry=None,
)
POLICY_DECISIONS = Counter(
    "gatehouse_policy_decisions",
    "access decisions made, by outcome (allow, deny, authenticate, error)",
    ("outcome",),
    registry=None,
)
POLICY_DECISION_DURATION = Histogram(
    "gatehouse_policy_decision_duration_seconds",
    "time to make an access decision (session lookup included)",
    buckets=DURATION_BUCKETS,
    registry=None,
)
AUTHENTICATIONS = Counter(
    "gatehouse_authentications",
    "credential checks, by method (password, otp, email_otp, sms_otp) and outcome "
    "(ok, invalid, locked, no_token, ...)",
    ("method", "outcome"),
    registry=None,
)
LOCKOUTS = Counter(
    "gatehouse_authentication_lockouts",
    "failed attempts that locked a key (ip, account or device) for a while",
    ("scope",),
    registry=None,
)
DELIVERIES = Counter(
    "gatehouse_distribution_deliveries",
    "messages handed to a channel, by channel name and outcome (sent, failed)",
    ("channel", "outcome"),
    registry=None,
)
OUTBOX_MESSAGES = Gauge(
    "gatehouse_distribution_outbox_messages",
    "messages in the outbox by status (pending is the depth still to deliver)",
    ("status",),
    registry=None,
)

ROLE_METRICS: dict[str, tuple[Any, ...]] = {
    "policy": (POLICY_DECISIONS, POLICY_DECISION_DURATION),
    "authentication": (AUTHENTICATIONS, LOCKOUTS),
    "distribution": (DELIVERIES, OUTBOX_MESSAGES),
    "administration": (),
}


def build_info(role: str) -> Metric:
    family = GaugeMetricFamily(
        "gatehouse_build_info",
        "always 1: the Gatehouse version, the service's role, and whether the Access Point's"
        " request path runs compiled (mypyc) or as plain Python",
        labels=["version", "role", "python", "compiled"],
    )
    labels = [gatehouse.__version__, role, platform.python_version(), str(is_compiled()).lower()]
    family.add_metric(labels, 1.0)
    return family


class StateCollector(Collector):
    """Reads a service's state on scrape: ``clients`` (its failover clients), ``agent``
    (its config agent), ``certificates`` (name -> expiry, UNIX time), ``databases`` (name
    -> :class:`gatehouse.storage.engine.Database`). Each is a callable, so that what the
    service replaces while it runs (a new failover client for a new version) is read anew."""

    def __init__(
        self,
        role: str,
        *,
        clients: Callable[[], Iterable[Any]] = tuple,
        agent: Callable[[], Any] = lambda: None,
        certificates: Callable[[], dict[str, float]] = dict,
        databases: Callable[[], dict[str, Any]] = dict,
        extra: Callable[[], Iterable[Metric]] = tuple,
    ) -> None:
        self.role = role
        self.clients = clients
        self.agent = agent
        self.certificates = certificates
        self.databases = databases
        self.extra = extra

    def collect(self) -> Iterator[Metric]:
        yield build_info(self.role)
        rows: list[LinkRow] = []
        for client in self.clients():
            rows.extend(client_rows(client))
        yield from link_families(rows)
        agent = self.agent()
        if agent is None:
            yield from config_families(0, None, None)
        else:
            yield from config_families(agent.version, agent.applied_at, agent.acknowledged_at)
        try:
            yield from certificate_family(self.certificates())
        except Exception as exc:  # a certificate being replaced: next scrape
            log.debug("certificate expiry not read: %s", exc)
        yield from pool_families(self.databases())
        yield from self.extra()


def pool_families(databases: dict[str, Any]) -> Iterator[Metric]:
    """SQLAlchemy pool use per database: connections checked out, idle in the pool, and the
    pool's size (engines without a pool of their own, like SQLite's, are left out)."""
    used: dict[tuple[str, ...], float] = {}
    idle: dict[tuple[str, ...], float] = {}
    size: dict[tuple[str, ...], float] = {}
    for name, database in databases.items():
        pool = database.engine.sync_engine.pool
        if not all(hasattr(pool, attr) for attr in ("checkedout", "checkedin", "size")):
            continue
        used[(name,)] = float(pool.checkedout())
        idle[(name,)] = float(pool.checkedin())
        size[(name,)] = float(pool.size())
    if used:
        yield gauge(
            "gatehouse_database_pool_connections_in_use",
            "database connections checked out of the pool now",
            ("database",),
            used,
        )
        yield gauge(
            "gatehouse_database_pool_connections_idle",
            "database connections idle in the pool now",
            ("database",),
            idle,
        )
        yield gauge(
            "gatehouse_database_pool_size",
            "the pool's size (connections kept; overflow comes on top)",
            ("database",),
            size,
        )


Refresher = Callable[[], Awaitable[None]]


class ServiceMetrics:
    """A service's registry and how its metrics listener renders it."""

    def __init__(
        self,
        role: str,
        state: StateCollector,
        refreshers: Iterable[Refresher] = (),
        listen: str | None = None,
    ) -> None:
        self.role = role
        #: ``HOST:PORT`` of the metrics listener (``metrics.listen``); None: none.
        self.listen = listen
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(state)
        for metric in (HTTP_REQUESTS, HTTP_DURATION, *ROLE_METRICS.get(role, ())):
            self.registry.register(metric)
        self.refreshers = list(refreshers)

    async def render(self) -> bytes:
        if self.refreshers:
            results = await asyncio.gather(
                *(asyncio.wait_for(refresh(), REFRESH_TIMEOUT) for refresh in self.refreshers),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    log.debug("a metrics refresher failed: %r", result)
        return generate_latest(self.registry)


def expiry_of(credentials: Any) -> dict[str, float]:
    """``{"internal": expiry}`` of a :class:`gatehouse.trust.tls.Credentials` (or none)."""
    if credentials is None:
        return {}
    return {"internal": credentials.info.not_after.timestamp()}


def observe_decision(outcome: str, started: float) -> None:
    POLICY_DECISIONS.labels(outcome).inc()
    POLICY_DECISION_DURATION.observe(time.perf_counter() - started)


def count_authentication(method: str, outcome: str) -> None:
    AUTHENTICATIONS.labels(method, outcome).inc()

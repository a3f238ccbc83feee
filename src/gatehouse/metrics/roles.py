"""What each uvicorn-hosted service shows besides the common metrics: built by its
``cli.py`` from the objects it already has, read on scrape (see :mod:`.service`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric

from gatehouse.metrics.families import gauge
from gatehouse.metrics.service import OUTBOX_MESSAGES, ServiceMetrics, StateCollector, expiry_of


def _app_service(app: Any) -> Any:
    """The service object a Starlette app's lifespan made (None before it started)."""
    return getattr(app.state, "service", None)


def policy_metrics(service: Any, listen: str | None) -> ServiceMetrics:
    """A :class:`gatehouse.policy.service.PolicyService`'s: its failover client to the
    Authentication services (the running version's), config agent, certificate, pools."""

    def databases() -> dict[str, Any]:
        found = {"session": service.session_db}
        if service.user_db is not service.session_db:
            found["user"] = service.user_db
        return found

    state = StateCollector(
        "policy",
        clients=lambda: [service.runtime.checker.client],
        agent=lambda: service.agent,
        certificates=lambda: expiry_of(service.credentials),
        databases=databases,
    )
    return ServiceMetrics("policy", state, listen=listen)


def authentication_metrics(app: Any, agent: Any, listen: str | None) -> ServiceMetrics:
    """An Authentication service's: its failover client to the Distribution services."""

    def clients() -> list[Any]:
        service = _app_service(app)
        distribution = getattr(service, "distribution", None) if service else None
        return [] if distribution is None else [distribution.client]

    def databases() -> dict[str, Any]:
        service = _app_service(app)
        if service is None:
            return {}
        found = {"user": service.db}
        oath = getattr(service, "oath_db", None)
        if oath is not None and oath is not service.db:
            found["oath"] = oath
        return found

    def certificates() -> dict[str, float]:
        service = _app_service(app)
        return expiry_of(getattr(service, "credentials", None))

    state = StateCollector(
        "authentication",
        clients=clients,
        agent=lambda: agent,
        certificates=certificates,
        databases=databases,
    )
    return ServiceMetrics("authentication", state, listen=listen)


def distribution_metrics(
    app: Any, agent: Any, credentials: Any, listen: str | None
) -> ServiceMetrics:
    """A Distribution service's: its outbox's messages by status (counted on scrape)."""

    async def outbox() -> None:
        service = _app_service(app)
        if service is None or not service.ready.is_set():
            return
        counts = await service.outbox.counts()
        for status in ("pending", "sent", "failed", "expired", *counts):
            OUTBOX_MESSAGES.labels(status).set(counts.get(status, 0))

    def databases() -> dict[str, Any]:
        service = _app_service(app)
        return {} if service is None else {"outbox": service.db}

    state = StateCollector(
        "distribution",
        agent=lambda: agent,
        certificates=lambda: expiry_of(credentials),
        databases=databases,
    )
    return ServiceMetrics("distribution", state, [outbox], listen=listen)


class _AdminView:
    """What the Administration service knows of every service, refreshed on scrape."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rows: list[Any] = []
        self.certificates: dict[str, Any] = {}
        self.latest = 0

    async def refresh(self) -> None:
        service = _app_service(self.app)
        if service is None:
            return
        self.latest = service.watch.latest
        self.rows = list(await service.store.list_services())
        self.certificates = dict(await service.store.certificates())

    def families(self) -> Iterator[Metric]:
        yield gauge(
            "gatehouse_admin_published_version",
            "the newest configuration version published",
            (),
            {(): float(self.latest)},
        )
        running: dict[tuple[str, ...], float] = {}
        seen: dict[tuple[str, ...], float] = {}
        expiry: dict[tuple[str, ...], float] = {}
        for row in self.rows:
            key = (row.id, row.role)
            running[key] = float(row.running_version or 0)
            if row.last_seen_at is not None:
                seen[key] = row.last_seen_at.timestamp()
            certificate = self.certificates.get(row.id)
            if certificate is not None:
                expiry[key] = certificate.not_after.timestamp()
        labels = ("service_id", "role")
        yield gauge(
            "gatehouse_admin_service_config_version",
            "the configuration version each registered service last acknowledged running",
            labels,
            running,
        )
        yield gauge(
            "gatehouse_admin_service_last_seen_timestamp_seconds",
            "when each service last polled or acknowledged (UNIX time)",
            labels,
            seen,
        )
        yield gauge(
            "gatehouse_admin_service_certificate_expiry_timestamp_seconds",
            "when the internal certificate issued to each service expires (UNIX time)",
            labels,
            expiry,
        )


def administration_metrics(app: Any, tls: Any, listen: str | None) -> ServiceMetrics:
    """The Administration service's: its own certificate and its CA's, the published
    version, and per registered service its running version, last contact and certificate."""
    view = _AdminView(app)

    def certificates() -> dict[str, float]:
        found = expiry_of(tls.credentials)
        found["ca"] = tls.ca.certificate.not_valid_after_utc.timestamp()
        return found

    def databases() -> dict[str, Any]:
        service = _app_service(app)
        return {} if service is None else {"admin": service.store.db}

    state = StateCollector(
        "administration", certificates=certificates, databases=databases, extra=view.families
    )
    return ServiceMetrics("administration", state, [view.refresh], listen=listen)

"""Metric families built from plain snapshots, shared by the services and the Access Point.

A service's state lives in its own objects (the failover clients' per-endpoint counters, the
config agent, the internal certificate); these functions turn a snapshot of it into
prometheus-client metric families when Prometheus scrapes, so nothing is counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gatehouse.metrics.names import DURATION_BUCKETS
from gatehouse.metrics.timing import HIST_LEN, Hist

_LE = [repr(float(b)) for b in DURATION_BUCKETS] + ["+Inf"]


def new_hist() -> Hist:
    return [0.0] * HIST_LEN


def add_hist(into: Hist, other: Sequence[float]) -> None:
    for i, value in enumerate(other):
        into[i] += value


def hist_buckets(hist: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, as the exposition format wants them."""
    out = []
    total = 0.0
    for le, count in zip(_LE, hist[:-1], strict=True):
        total += count
        out.append((le, total))
    return out


def histogram(
    name: str, documentation: str, labels: Sequence[str], series: Mapping[tuple[str, ...], Hist]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, hist in sorted(series.items()):
        family.add_metric(list(values), hist_buckets(hist), hist[-1])
    return family


def counter(
    name: str, documentation: str, labels: Sequence[str], series: Mapping[tuple[str, ...], float]
) -> CounterMetricFamily:
    """``name`` without ``_total``: prometheus-client adds it."""
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for values, value in sorted(series.items()):
        family.add_metric(list(values), value)
    return family


def gauge(
    name: str, documentation: str, labels: Sequence[str], series: Mapping[tuple[str, ...], float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for values, value in sorted(series.items()):
        family.add_metric(list(values), value)
    return family


@dataclass(frozen=True, slots=True)
class LinkRow:
    """One endpoint of a failover client (a link from this service to another)."""

    service: str
    endpoint: str
    up: float
    in_use: float
    failovers: float
    down: float
    failbacks: float


def link_rows(snapshot: Mapping[str, Any], using: str | None) -> list[LinkRow]:
    """Rows from :meth:`gatehouse.internal.client.FailoverClient.metrics` (``using``: the
    endpoint the next call tries first, from ``routing()``)."""
    service = str(snapshot.get("service") or "unnamed")
    return [
        LinkRow(
            service,
            str(row["url"]),
            1.0 if row["up"] else 0.0,
            1.0 if row["url"] == using else 0.0,
            float(row["failovers"]),
            float(row["went_down"]),
            float(row["came_up"]),
        )
        for row in snapshot.get("endpoints", ())
    ]


def client_rows(client: Any) -> list[LinkRow]:
    """:func:`link_rows` of a :class:`~gatehouse.internal.client.FailoverClient`."""
    return link_rows(client.metrics(), client.routing().get("using"))


def link_families(rows: Iterable[LinkRow], up_help: str = "") -> Iterator[Metric]:
    """Per link (``service`` called, ``endpoint`` URL): up, in use, failovers away from it,
    times it went down, fail-backs to it."""
    rows = list(rows)
    keys = [(r.service, r.endpoint) for r in rows]
    labels = ("service", "endpoint")
    yield gauge(
        "gatehouse_internal_endpoint_up",
        up_help or "1 while this service sees the endpoint up (failover client state)",
        labels,
        dict(zip(keys, (r.up for r in rows), strict=True)),
    )
    yield gauge(
        "gatehouse_internal_endpoint_in_use",
        "1 for the endpoint the next call goes to first (Access Point: how many workers)",
        labels,
        dict(zip(keys, (r.in_use for r in rows), strict=True)),
    )
    yield counter(
        "gatehouse_internal_failovers",
        "calls that moved from this endpoint to the next one after a failure",
        labels,
        dict(zip(keys, (r.failovers for r in rows), strict=True)),
    )
    yield counter(
        "gatehouse_internal_endpoint_down",
        "times the endpoint was marked down",
        labels,
        dict(zip(keys, (r.down for r in rows), strict=True)),
    )
    yield counter(
        "gatehouse_internal_failbacks",
        "times the endpoint came back up (fail-back)",
        labels,
        dict(zip(keys, (r.failbacks for r in rows), strict=True)),
    )


def config_families(
    version: float | None, applied: float | None, acknowledged: float | None
) -> Iterator[Metric]:
    """The configuration version this service runs (0: a configuration file), when it was
    applied and when the Administration service took its acknowledgement (UNIX time)."""
    yield gauge(
        "gatehouse_config_version",
        "configuration version published by the Administration service that runs here "
        "(0: a configuration file)",
        (),
        {(): float(version or 0)},
    )
    if applied:
        yield gauge(
            "gatehouse_config_applied_timestamp_seconds",
            "when the running configuration version was applied (UNIX time)",
            (),
            {(): applied},
        )
    if acknowledged:
        yield gauge(
            "gatehouse_config_acknowledged_timestamp_seconds",
            "when the Administration service accepted the acknowledgement of the running "
            "version (UNIX time)",
            (),
            {(): acknowledged},
        )


def certificate_family(expiries: Mapping[str, float]) -> Iterator[Metric]:
    if expiries:
        yield gauge(
            "gatehouse_certificate_expiry_timestamp_seconds",
            "when a certificate this service presents expires (UNIX time)",
            ("certificate",),
            {(name,): value for name, value in expiries.items()},
        )

"""The Access Point's per-worker counts, their sum over workers and their exposition."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gatehouse.compiled import is_compiled
from gatehouse.metrics.access_point import (
    WorkerCounters,
    empty_snapshot,
    merge,
    render_snapshot,
    retained,
)
from gatehouse.metrics.names import DURATION_BUCKETS


def counting() -> WorkerCounters:
    counters = WorkerCounters()
    counters.on = True  # as in a worker with a metrics listener
    return counters


def snapshot_of(counters: WorkerCounters, **state: Any) -> dict[str, Any]:
    """What worker_snapshot makes, without a worker: the counts and the given state."""
    snap = empty_snapshot()
    snap.update(
        workers=1,
        requests=[[r, m.decode(), s, n] for (r, m, s), n in counters.requests.items()],
        durations=counters.durations,
        upstream=counters.upstream,
        upstream_errors=[[b, k, n] for (b, k), n in counters.upstream_errors.items()],
        decisions=counters.decisions,
        decision_durations=counters.decision_durations,
    )
    snap.update(state)
    return snap


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_a_request_lands_in_its_bucket_le_inclusive() -> None:
    counters = counting()
    counters.request("app", b"GET", 200, 0.0001)  # exactly the first bound: le="0.0001"
    counters.request("app", b"GET", 200, 0.0003)
    counters.request("app", b"GET", 502, 30.0)  # past the last bound: +Inf only
    got = samples(render_snapshot(merge([snapshot_of(counters)])))
    bucket = "gatehouse_access_point_request_duration_seconds_bucket"
    assert got[(bucket, (("le", "0.0001"), ("resource", "app")))] == 1
    assert got[(bucket, (("le", "0.00025"), ("resource", "app")))] == 1
    assert got[(bucket, (("le", "0.0005"), ("resource", "app")))] == 2
    assert got[(bucket, (("le", "10.0"), ("resource", "app")))] == 2
    assert got[(bucket, (("le", "+Inf"), ("resource", "app")))] == 3
    total = "gatehouse_access_point_requests_total"
    assert got[(total, (("method", "GET"), ("resource", "app"), ("status", "200")))] == 2
    assert got[(total, (("method", "GET"), ("resource", "app"), ("status", "502")))] == 1
    assert got[("gatehouse_access_point_request_duration_seconds_sum", (("resource", "app"),))] == (
        pytest.approx(30.0004)
    )
    assert DURATION_BUCKETS[0] < 0.001  # sub-millisecond buckets


def test_workers_add_up_and_state_is_summarised() -> None:
    one, two = counting(), counting()
    for _ in range(3):
        one.request("app", b"GET", 200, 0.002)
    two.request("app", b"GET", 200, 0.002)
    two.request("", b"", 400, 0.0)  # unparsable request: no resource, no method
    two.request("app", b"PROPFIND", 207, 0.01)  # a method outside the list: OTHER
    one.decision("allow", 0.001)
    two.decision("error", 2.0)
    one.upstream_error("http://b:1", "connect")
    two.upstream_error("http://b:1", "connect")
    link = ["policy", "http://ps1:8101"]
    first = snapshot_of(
        one,
        links=[[*link, 1.0, 1.0, 2.0, 1.0, 1.0]],
        config_version=7,
        totals={"cache_hits": 5.0},
        connections=3,
        expiries={"internal": 2000.0},
    )
    second = snapshot_of(
        two,
        links=[[*link, 0.0, 0.0, 1.0, 1.0, 0.0]],
        config_version=6,
        totals={"cache_hits": 1.0, "reconnects": 2.0},
        connections=1,
        expiries={"internal": 1000.0},
    )
    got = samples(render_snapshot(merge([first, second]), 10.0, 11.0))
    total = "gatehouse_access_point_requests_total"
    assert got[(total, (("method", "GET"), ("resource", "app"), ("status", "200")))] == 4
    assert got[(total, (("method", "OTHER"), ("resource", "none"), ("status", "400")))] == 1
    assert got[(total, (("method", "OTHER"), ("resource", "app"), ("status", "207")))] == 1
    assert got[("gatehouse_access_point_workers", ())] == 2
    assert got[("gatehouse_access_point_connections", ())] == 4
    assert got[("gatehouse_access_point_decision_cache_hits_total", ())] == 6
    assert got[("gatehouse_access_point_event_stream_reconnects_total", ())] == 2
    decisions = "gatehouse_access_point_decisions_total"
    assert got[(decisions, (("outcome", "allow"),))] == 1
    assert got[(decisions, (("outcome", "error"),))] == 1
    errors = "gatehouse_access_point_upstream_errors_total"
    assert got[(errors, (("backend", "http://b:1"), ("kind", "connect")))] == 2
    labels = (("endpoint", "http://ps1:8101"), ("service", "policy"))
    assert got[("gatehouse_internal_endpoint_up", labels)] == 0  # one worker sees it down
    assert got[("gatehouse_internal_endpoint_in_use", labels)] == 1  # one worker uses it
    assert got[("gatehouse_internal_failovers_total", labels)] == 3
    assert got[("gatehouse_internal_failbacks_total", labels)] == 1
    assert got[("gatehouse_config_version", ())] == 6  # what every worker runs
    assert got[("gatehouse_config_applied_timestamp_seconds", ())] == 10
    assert got[("gatehouse_config_acknowledged_timestamp_seconds", ())] == 11
    expiry = ("gatehouse_certificate_expiry_timestamp_seconds", (("certificate", "internal"),))
    assert got[expiry] == 1000
    build = [key for key in got if key[0] == "gatehouse_build_info"]
    assert build
    assert dict(build[0][1])["role"] == "access_point"
    assert dict(build[0][1])["compiled"] == str(is_compiled()).lower()


def test_a_replaced_worker_keeps_its_counts_but_not_its_state() -> None:
    counters = counting()
    counters.request("app", b"GET", 200, 0.001)
    last = snapshot_of(counters, links=[["policy", "http://ps1:8101", 1.0, 1.0, 4.0, 0, 0]])
    kept = retained(last)
    got = samples(render_snapshot(merge([kept])))
    total = "gatehouse_access_point_requests_total"
    assert got[(total, (("method", "GET"), ("resource", "app"), ("status", "200")))] == 1
    labels = (("endpoint", "http://ps1:8101"), ("service", "policy"))
    assert got[("gatehouse_internal_failovers_total", labels)] == 4
    assert got[("gatehouse_internal_endpoint_in_use", labels)] == 0
    assert got[("gatehouse_internal_endpoint_up", labels)] == 0
    assert got[("gatehouse_access_point_workers", ())] == 0


def test_without_a_listener_nothing_is_counted() -> None:
    counters = WorkerCounters()
    counters.decision("allow", 0.001)
    counters.upstream_error("http://b:1", "connect")
    assert not counters.on
    assert counters.decisions == {}
    assert counters.upstream_errors == {}


def test_the_request_path_counts_through_a_routes_series_and_an_origins_histogram() -> None:
    counters = counting()
    series = counters.series("app")
    assert counters.series("app") is series  # one per resource id, kept across versions
    backend = counters.backend("http://b:1")
    series.exchange(b"GET", 200, 0.0003, backend, 0.0002)
    series.exchange(b"POST", 201, 0.002, backend, 0.001)
    series.exchange(b"BREW", 418, 0.004, None, 0.0)  # no backend answered: no upstream time
    got = samples(render_snapshot(merge([snapshot_of(counters)])))
    total = "gatehouse_access_point_requests_total"
    assert got[(total, (("method", "GET"), ("resource", "app"), ("status", "200")))] == 1
    assert got[(total, (("method", "POST"), ("resource", "app"), ("status", "201")))] == 1
    assert got[(total, (("method", "OTHER"), ("resource", "app"), ("status", "418")))] == 1
    count = ("gatehouse_access_point_request_duration_seconds_count", (("resource", "app"),))
    assert got[count] == 3
    upstream = "gatehouse_access_point_upstream_duration_seconds"
    assert got[(f"{upstream}_count", (("backend", "http://b:1"),))] == 2
    assert got[(f"{upstream}_bucket", (("backend", "http://b:1"), ("le", "0.00025")))] == 1
    assert got[(f"{upstream}_sum", (("backend", "http://b:1"),))] == pytest.approx(0.0012)


def test_alternating_keys_count_in_their_own_histograms() -> None:
    counters = counting()
    series = counters.series("app")
    backend = counters.backend("http://b:1")
    # Keys alternate (the series remembers only the previous request's method and status).
    for seconds in (0.0001, 0.0003, 0.0001, 10.0, 30.0):
        series.exchange(b"GET", 200, seconds, backend, seconds)
        series.exchange(b"POST", 201, 0.002, None, 0.0)
    series.exchange(b"GET", 200, 0.0001, backend, 0.0001)
    got = samples(render_snapshot(merge([snapshot_of(counters)])))
    total = "gatehouse_access_point_requests_total"
    assert got[(total, (("method", "GET"), ("resource", "app"), ("status", "200")))] == 6
    assert got[(total, (("method", "POST"), ("resource", "app"), ("status", "201")))] == 5
    upstream = "gatehouse_access_point_upstream_duration_seconds"
    labels = (("backend", "http://b:1"),)
    assert got[(f"{upstream}_bucket", (*labels, ("le", "0.0001")))] == 3  # le inclusive
    assert got[(f"{upstream}_bucket", (*labels, ("le", "0.00025")))] == 3
    assert got[(f"{upstream}_bucket", (*labels, ("le", "0.0005")))] == 4
    assert got[(f"{upstream}_bucket", (*labels, ("le", "10.0")))] == 5
    assert got[(f"{upstream}_bucket", (*labels, ("le", "+Inf")))] == 6
    assert got[(f"{upstream}_sum", labels)] == pytest.approx(40.0006)
    duration = "gatehouse_access_point_request_duration_seconds"
    assert got[(f"{duration}_bucket", (("le", "0.0025"), ("resource", "app")))] == 9
    assert got[(f"{duration}_count", (("resource", "app"),))] == 11

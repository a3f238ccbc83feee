"""The Access Point's metrics: plain per-worker counts on the hot path, families on scrape.

A worker counts with plain numbers in its own process (:data:`COUNTERS`), no lock and no
shared memory. Each compiled route holds its resource's :class:`Series` and each backend origin
the list of its response times, so a request looks no label up: it costs two list appends of
raw durations (the backend's time at the response head, the request's when it ends) and two
comparisons, plus its clock reads (head received, sent to the backend, response head, end).
The worker's sweep folds the raw durations into histograms every quarter of a second (sorted
in one batch: cheaper than a bisect per request). When Prometheus scrapes,
:func:`worker_snapshot` turns the worker's counts and state (its decision cache, event stream,
failover client, configuration version) into a JSON-ready dict; the supervisor adds its
workers' snapshots up (:func:`merge`) and :func:`snapshot_families` renders the sum. A worker
that restarts starts from zero; what the supervisor last read of the worker it replaced is
kept (:mod:`.workers`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from gatehouse.metrics.families import (
    HIST_LEN,
    Hist,
    LinkRow,
    add_hist,
    certificate_family,
    client_rows,
    config_families,
    counter,
    fold,
    gauge,
    histogram,
    link_families,
    new_hist,
)
from gatehouse.metrics.names import (
    DURATION_BUCKETS,
    METHODS,
    NO_RESOURCE,
    OTHER_METHOD,
    method_label,
)

if TYPE_CHECKING:
    from gatehouse.access_point.connection import WorkerState
    from gatehouse.access_point.decisions import Decider
    from gatehouse.access_point.server import Worker

_BOUNDS = DURATION_BUCKETS
_SUM = HIST_LEN - 1
#: Keys of the decision cache and event stream counts a worker keeps across Deciders.
_DECIDER_KEYS = ("cache_hits", "cache_misses", "cache_evictions", "reconnects")


#: Request methods by index in a :class:`Series` key (0: any other, counted as ``OTHER``).
_METHODS = (OTHER_METHOD, *sorted(METHODS))
_METHOD_INDEX = {name.encode("ascii"): index for index, name in enumerate(_METHODS) if index}


class Series:
    """One resource's requests, as raw observations a worker appends to on its event loop.

    ``by_key`` maps ``status << 4 | method index`` to the request durations observed since
    the last fold, ``hists`` the same key to the histogram (:data:`~.families.Hist`) they fold
    into (:meth:`WorkerCounters.fold`: on the worker's sweep, every quarter of a second, and
    before a snapshot). The request counts by method and status are a histogram's bucket
    counts added up, the resource's duration histogram the sum over keys, both made when
    Prometheus scrapes. A request costs two comparisons with the previous request's method and
    status and one list append (its backend's response time is appended to the origin's list
    when the response head comes): no label, no tuple, no bisect; a request of another key
    than the previous one adds a dict lookup."""

    def __init__(self, resource: str, counters: WorkerCounters) -> None:
        self.resource = resource
        self.counters = counters
        self.by_key: dict[int, list[float]] = {}
        self.hists: dict[int, Hist] = {}
        #: The previous request's method and status, and its key's list.
        self.method = b""
        self.status = -1
        self.last: list[float] = []

    def pending(self, method: bytes, status: int) -> list[float]:
        """The list of ``method`` and ``status``'s durations not folded yet."""
        key = status << 4 | _METHOD_INDEX.get(method, 0)
        values = self.by_key.get(key)
        if values is None:
            values = self.by_key[key] = []
            self.hists[key] = self.counters.foldable(values)
        self.method = method
        self.status = status
        self.last = values
        return values

    def add(self, method: bytes, status: int, seconds: float) -> None:
        """One request answered ``status`` after ``seconds``."""
        if status == self.status and method == self.method:
            self.last.append(seconds)
        else:
            self.pending(method, status).append(seconds)

    def exchange(
        self,
        method: bytes,
        status: int,
        seconds: float,
        backend: list[float] | None,
        upstream_seconds: float,
    ) -> None:
        """One proxied request (the hot path): :meth:`add`, and ``upstream_seconds`` into
        its backend's observations when a backend answered (``backend`` is not None)."""
        if status == self.status and method == self.method:
            self.last.append(seconds)
        else:
            self.pending(method, status).append(seconds)
        if backend is not None:
            backend.append(upstream_seconds)

    def requests(self) -> Iterator[tuple[str, int, float]]:
        """``(method label, status, count)`` for every key seen (as of the last fold)."""
        for key, hist in self.hists.items():
            yield _METHODS[key & 15], key >> 4, sum(hist[:_SUM])

    def durations(self) -> Hist:
        total = new_hist()
        for hist in self.hists.values():
            add_hist(total, hist)
        return total


class WorkerCounters:
    """What one Access Point worker counts; updated on its event loop only.

    The request path reaches its numbers without looking anything up: each compiled route
    holds its resource's :class:`Series` (:meth:`series`), each backend origin the list its
    response times are appended to (:meth:`backend`), both made once per resource id or
    backend URL and kept across configuration versions, so counters never go back. Raw
    observations wait in lists until :meth:`fold` adds them into histograms."""

    def __init__(self) -> None:
        #: Whether to count at all: set when the worker has a metrics listener (or answers the
        #: supervisor's), before its routes are compiled; without ``metrics.listen`` routes
        #: carry no series and the request path reads no clock.
        self.on = False
        #: resource id ("" for none) -> its requests.
        self._series: dict[str, Series] = {}
        #: backend URL -> histogram of the time from request sent to response head received,
        #: and the times observed since the last fold.
        self._upstream: dict[str, Hist] = {}
        self._upstream_pending: dict[str, list[float]] = {}
        #: Every list of raw observations and the histogram it folds into.
        self._folds: list[tuple[list[float], Hist]] = []
        #: (backend URL, kind) -> failures: connect, failed, timeout.
        self.upstream_errors: dict[tuple[str, str], int] = {}
        #: outcome (allow, deny, authenticate, error) -> decisions asked of a Policy service.
        self.decisions: dict[str, int] = {}
        self.decision_durations: Hist = new_hist()
        #: Counts of Deciders this worker replaced (a new list of Policy services).
        self.retired: dict[str, float] = dict.fromkeys(_DECIDER_KEYS, 0.0)
        self.retired_links: dict[tuple[str, str], list[float]] = {}

    def foldable(self, values: list[float], hist: Hist | None = None) -> Hist:
        """Fold ``values`` into ``hist`` (a new one if None) from now on; returns it."""
        if hist is None:
            hist = new_hist()
        self._folds.append((values, hist))
        return hist

    def fold(self) -> None:
        """Add every raw observation into its histogram (the worker's sweep calls this every
        quarter of a second, which bounds the lists; a snapshot calls it first)."""
        for values, hist in self._folds:
            if values:
                fold(hist, values)

    def series(self, resource: str) -> Series:
        """The series of the resource id ``resource`` ("": a request no resource matched)."""
        found = self._series.get(resource)
        if found is None:
            found = self._series[resource] = Series(resource, self)
        return found

    def backend(self, url: str) -> list[float]:
        """The list the backend ``url``'s response times are appended to."""
        values = self._upstream_pending.get(url)
        if values is None:
            values = self._upstream_pending[url] = []
            self._upstream[url] = self.foldable(values)
        return values

    def request(self, resource: str, method: bytes, status: int, seconds: float) -> None:
        """One request answered (what the request path does through a route's series)."""
        self.series(resource).add(method, status, seconds)

    def upstream_time(self, backend: str, seconds: float) -> None:
        self.backend(backend).append(seconds)

    @property
    def upstream(self) -> dict[str, Hist]:
        """backend URL -> histogram of its response times (folded when asked)."""
        self.fold()
        return self._upstream

    @property
    def requests(self) -> dict[tuple[str, bytes, int], float]:
        """(resource id, method label, status) -> requests answered (made when asked)."""
        self.fold()
        return {
            (name, method.encode("ascii"), status): count
            for name, series in self._series.items()
            for method, status, count in series.requests()
        }

    @property
    def durations(self) -> dict[str, Hist]:
        """resource id -> histogram of request durations (head received to response sent)."""
        self.fold()
        return {name: s.durations() for name, s in self._series.items() if s.hists}

    def upstream_error(self, backend: str, kind: str) -> None:
        if not self.on:
            return
        key = (backend, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def decision(self, outcome: str, seconds: float) -> None:
        if not self.on:
            return
        self.decisions[outcome] = self.decisions.get(outcome, 0) + 1
        hist = self.decision_durations
        hist[bisect_left(_BOUNDS, seconds)] += 1
        hist[_SUM] += seconds

    def retire(self, decider: Decider) -> None:
        """Keep the counts of a Decider the worker stops using."""
        for key, value in _decider_counts(decider).items():
            self.retired[key] += value
        for row in client_rows(decider.client):
            kept = self.retired_links.setdefault((row.service, row.endpoint), [0.0, 0.0, 0.0])
            kept[0] += row.failovers
            kept[1] += row.down
            kept[2] += row.failbacks


#: This process's counts (each forked worker has its own copy, empty at fork).
COUNTERS = WorkerCounters()

_OUTCOMES = {1: "allow", 2: "deny", 3: "authenticate"}


def outcome_name(kind: int) -> str:
    return _OUTCOMES.get(kind, "error")


def _decider_counts(decider: Decider) -> dict[str, float]:
    cache = decider.cache
    return {
        "cache_hits": float(cache.hits),
        "cache_misses": float(cache.misses),
        "cache_evictions": float(getattr(cache, "evictions", 0)),
        "reconnects": float(getattr(decider, "reconnects", 0)),
    }


def worker_snapshot(
    worker: Worker, state: WorkerState, counters: WorkerCounters = COUNTERS
) -> dict[str, Any]:
    """One worker's counts and state, JSON-ready (lists, not tuples, for the wire)."""
    decider = worker.decider
    totals = dict(counters.retired)
    links: dict[tuple[str, str], list[float]] = {
        key: [0.0, 0.0, *value] for key, value in counters.retired_links.items()
    }
    entries = 0
    if decider is not None:
        for key, value in _decider_counts(decider).items():
            totals[key] += value
        entries = len(decider.cache)
        for row in client_rows(decider.client):
            kept = links.setdefault((row.service, row.endpoint), [0.0] * 5)
            kept[0] += row.up
            kept[1] += row.in_use
            kept[2] += row.failovers
            kept[3] += row.down
            kept[4] += row.failbacks
    expiries = {}
    if worker.credentials is not None:
        expiries["internal"] = worker.credentials.info.not_after.timestamp()
    runtime = state.runtime
    return {
        "workers": 1,
        "requests": [[r, m.decode("ascii"), s, n] for (r, m, s), n in counters.requests.items()],
        "durations": counters.durations,
        "upstream": counters.upstream,
        "upstream_errors": [[b, k, n] for (b, k), n in counters.upstream_errors.items()],
        "decisions": counters.decisions,
        "decision_durations": counters.decision_durations,
        "totals": totals,
        "cache_entries": entries,
        "links": [[s, e, *values] for (s, e), values in links.items()],
        "connections": len(state.connections),
        "config_version": runtime.version or 0,
        "expiries": expiries,
    }


def empty_snapshot() -> dict[str, Any]:
    return merge([])


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of workers' snapshots. Counts add up; of the configuration version and the
    certificate expiries the lowest is kept (what every worker runs, the first to expire);
    an endpoint is up when every worker sees it up; ``in_use`` counts the workers."""
    requests: dict[tuple[str, str, int], float] = {}
    durations: dict[str, Hist] = {}
    upstream: dict[str, Hist] = {}
    errors: dict[tuple[str, str], float] = {}
    decisions: dict[str, float] = {}
    decision_durations = new_hist()
    totals = dict.fromkeys(_DECIDER_KEYS, 0.0)
    links: dict[tuple[str, str], list[float]] = {}
    seen: dict[tuple[str, str], int] = {}
    out: dict[str, Any] = {"workers": 0, "cache_entries": 0, "connections": 0}
    versions: list[float] = []
    expiries: dict[str, float] = {}
    for snap in snapshots:
        out["workers"] += snap.get("workers", 0)
        out["cache_entries"] += snap.get("cache_entries", 0)
        out["connections"] += snap.get("connections", 0)
        if snap.get("workers"):
            versions.append(float(snap.get("config_version", 0)))
        for resource, method, status, n in snap.get("requests", ()):
            key = (resource, method_label(method), int(status))
            requests[key] = requests.get(key, 0) + n
        for name, hist in snap.get("durations", {}).items():
            add_hist(durations.setdefault(name, new_hist()), hist)
        for name, hist in snap.get("upstream", {}).items():
            add_hist(upstream.setdefault(name, new_hist()), hist)
        for backend, kind, n in snap.get("upstream_errors", ()):
            failure = (backend, kind)
            errors[failure] = errors.get(failure, 0) + n
        for outcome, n in snap.get("decisions", {}).items():
            decisions[outcome] = decisions.get(outcome, 0) + n
        add_hist(decision_durations, snap.get("decision_durations", new_hist()))
        for name, value in snap.get("totals", {}).items():
            totals[name] = totals.get(name, 0.0) + value
        for service, endpoint, up, in_use, failovers, down, failbacks in snap.get("links", ()):
            link = (service, endpoint)
            kept = links.setdefault(link, [1.0, 0.0, 0.0, 0.0, 0.0])
            if snap.get("workers"):
                seen[link] = seen.get(link, 0) + 1
                kept[0] = min(kept[0], up)
            kept[1] += in_use
            kept[2] += failovers
            kept[3] += down
            kept[4] += failbacks
        for name, value in snap.get("expiries", {}).items():
            expiries[name] = min(value, expiries.get(name, value))
    for link, kept in links.items():
        if not seen.get(link):
            kept[0] = 0.0  # only a retired worker knew it
    out.update(
        requests=[[r, m, s, n] for (r, m, s), n in requests.items()],
        durations=durations,
        upstream=upstream,
        upstream_errors=[[b, k, n] for (b, k), n in errors.items()],
        decisions=decisions,
        decision_durations=decision_durations,
        totals=totals,
        links=[[s, e, *values] for (s, e), values in links.items()],
        config_version=min(versions) if versions else 0,
        expiries=expiries,
    )
    return out


def retained(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """What of a replaced worker's last snapshot still counts: its counters, not its state."""
    kept = dict(snapshot)
    kept.update(workers=0, cache_entries=0, connections=0, config_version=0, expiries={})
    kept["links"] = [[s, e, 0.0, 0.0, *rest[2:]] for s, e, *rest in snapshot.get("links", ())]
    return kept


_TOTALS = (
    ("cache_hits", "gatehouse_access_point_decision_cache_hits", "decisions served from the cache"),
    (
        "cache_misses",
        "gatehouse_access_point_decision_cache_misses",
        "cache lookups that found no live decision",
    ),
    (
        "cache_evictions",
        "gatehouse_access_point_decision_cache_evictions",
        "decisions evicted to stay within decision_cache_entries",
    ),
    (
        "reconnects",
        "gatehouse_access_point_event_stream_reconnects",
        "interruptions of the Policy event stream (the cache is off until it is back)",
    ),
)


def snapshot_families(
    snap: Mapping[str, Any], applied: float | None = None, acknowledged: float | None = None
) -> Iterator[Metric]:
    """The Access Point's metric families from a (merged) snapshot; ``applied`` and
    ``acknowledged``: the config agent's times (managed mode)."""
    yield counter(
        "gatehouse_access_point_requests",
        "requests answered, by resource id, method and status",
        ("resource", "method", "status"),
        {(r or NO_RESOURCE, m, str(s)): n for r, m, s, n in snap["requests"]},
    )
    yield histogram(
        "gatehouse_access_point_request_duration_seconds",
        "from the request head received to the response handed to the client, by resource",
        ("resource",),
        {(r or NO_RESOURCE,): h for r, h in snap["durations"].items()},
    )
    yield histogram(
        "gatehouse_access_point_upstream_duration_seconds",
        "from the request sent to a backend to its response head, by backend",
        ("backend",),
        {(b,): h for b, h in snap["upstream"].items()},
    )
    yield counter(
        "gatehouse_access_point_upstream_errors",
        "backend failures by backend and kind (connect, failed, timeout)",
        ("backend", "kind"),
        {(b, k): n for b, k, n in snap["upstream_errors"]},
    )
    yield counter(
        "gatehouse_access_point_decisions",
        "access decisions asked of a Policy service, by outcome (error: none usable)",
        ("outcome",),
        {(o,): n for o, n in snap["decisions"].items()},
    )
    yield histogram(
        "gatehouse_access_point_decision_duration_seconds",
        "how long a Policy service took to decide (cache misses only)",
        (),
        {(): snap["decision_durations"]},
    )
    totals = snap["totals"]
    for key, name, text in _TOTALS:
        yield counter(name, text, (), {(): totals.get(key, 0.0)})
    yield gauge(
        "gatehouse_access_point_decision_cache_entries",
        "decisions in the cache now",
        (),
        {(): snap["cache_entries"]},
    )
    yield gauge(
        "gatehouse_access_point_connections",
        "client connections open now",
        (),
        {(): snap["connections"]},
    )
    yield gauge(
        "gatehouse_access_point_workers",
        "worker processes answering this scrape",
        (),
        {(): snap["workers"]},
    )
    yield from link_families(
        (LinkRow(s, e, up, in_use, f, d, b) for s, e, up, in_use, f, d, b in snap["links"]),
        "1 while every worker sees the Policy endpoint up",
    )
    yield from config_families(snap["config_version"], applied, acknowledged)
    yield from certificate_family(snap["expiries"])


class _SnapshotCollector(Collector):
    def __init__(self, snap: Mapping[str, Any], applied: float | None, acked: float | None) -> None:
        self.snap = snap
        self.applied = applied
        self.acked = acked

    def collect(self) -> Iterator[Metric]:
        from gatehouse.metrics.service import build_info

        yield build_info("access_point")
        yield from snapshot_families(self.snap, self.applied, self.acked)


def render_snapshot(
    snap: Mapping[str, Any], applied: float | None = None, acknowledged: float | None = None
) -> bytes:
    """The text exposition of a (merged) snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snap, applied, acknowledged))
    return generate_latest(registry)

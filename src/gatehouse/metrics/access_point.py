"""The Access Point's metrics: native per-worker counts on the hot path, families on scrape.

A worker counts in its own process (:data:`COUNTERS`), no lock and no shared memory. Each
compiled route holds its resource's :class:`Series` and each backend origin the
:class:`~.timing.Histogram` of its response times, so a request looks no label up: it costs
two observations in native histograms (the backend's time at the response head, the
request's when it ends), two comparisons, and the clock reads of :mod:`.timing` (one per
read event: two for a request answered in one backend read). When Prometheus scrapes,
:func:`worker_snapshot` turns the worker's counts and state (its decision cache, event
stream, failover client, configuration version) into a JSON-ready dict; the supervisor adds
its workers' snapshots up (:func:`merge`) and :func:`snapshot_families` renders the sum. A
worker that restarts starts from zero; what the supervisor last read of the worker it
replaced is kept (:mod:`.workers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from gatehouse.metrics.families import (
    LinkRow,
    add_hist,
    certificate_family,
    client_rows,
    config_families,
    counter,
    gauge,
    histogram,
    link_families,
    new_hist,
)
from gatehouse.metrics.names import (
    METHODS,
    NO_RESOURCE,
    OTHER_METHOD,
    method_label,
)
from gatehouse.metrics.timing import EventClock, Hist, Histogram

if TYPE_CHECKING:
    from gatehouse.access_point.connection import WorkerState
    from gatehouse.access_point.decisions import Decider
    from gatehouse.access_point.server import Worker

#: Keys of the decision cache and event stream counts a worker keeps across Deciders.
_DECIDER_KEYS = ("cache_hits", "cache_misses", "cache_evictions", "reconnects")


#: Request methods by index in a :class:`Series` key (0: any other, counted as ``OTHER``).
_METHODS = (OTHER_METHOD, *sorted(METHODS))
_METHOD_INDEX = {name.encode("ascii"): index for index, name in enumerate(_METHODS) if index}


class Series:
    """One resource's requests, counted by a worker on its event loop.

    ``by_key`` maps ``status << 4 | method index`` to the :class:`~.timing.Histogram` of its
    request durations. The request counts by method and status are a histogram's count, the
    resource's duration histogram the sum over keys, both made when Prometheus scrapes. A
    request costs two comparisons with the previous request's method and status and one
    observation in ``last``, that key's histogram (its backend's response time is observed in
    the origin's histogram when the response head comes): no label, no tuple; a request of
    another key than the previous one adds a dict lookup. ``clock`` is the worker's
    :class:`~.timing.EventClock`, which the request path times with."""

    def __init__(self, resource: str, clock: EventClock) -> None:
        self.resource = resource
        self.clock = clock
        self.by_key: dict[int, Histogram] = {}
        #: The previous request's method and status, and its key's histogram.
        self.method = b""
        self.status = -1
        self.last = Histogram()

    def histogram(self, method: bytes, status: int) -> Histogram:
        """The histogram of ``method`` and ``status``'s durations, now :attr:`last`."""
        key = status << 4 | _METHOD_INDEX.get(method, 0)
        hist = self.by_key.get(key)
        if hist is None:
            hist = self.by_key[key] = Histogram()
        self.method = method
        self.status = status
        self.last = hist
        return hist

    def add(self, method: bytes, status: int, seconds: float) -> None:
        """One request answered ``status`` after ``seconds``."""
        if status == self.status and method == self.method:
            self.last.observe(seconds)
        else:
            self.histogram(method, status).observe(seconds)

    def exchange(
        self,
        method: bytes,
        status: int,
        seconds: float,
        backend: Histogram | None,
        upstream_seconds: float,
    ) -> None:
        """One proxied request, as the request path counts it: :meth:`add`, and
        ``upstream_seconds`` in its backend's histogram when a backend answered (``backend``
        is not None)."""
        self.add(method, status, seconds)
        if backend is not None:
            backend.observe(upstream_seconds)

    def requests(self) -> Iterator[tuple[str, int, float]]:
        """``(method label, status, count)`` for every key seen."""
        for key, hist in self.by_key.items():
            yield _METHODS[key & 15], key >> 4, float(hist.count())

    def durations(self) -> Hist:
        total = new_hist()
        for hist in self.by_key.values():
            add_hist(total, hist.values())
        return total


class WorkerCounters:
    """What one Access Point worker counts; updated on its event loop only.

    The request path reaches its numbers without looking anything up: each compiled route
    holds its resource's :class:`Series` (:meth:`series`), each backend origin its
    histogram (:meth:`backend`), both made once per resource id or backend URL and kept
    across configuration versions, so counters never go back."""

    def __init__(self) -> None:
        #: Whether to count at all: set when the worker has a metrics listener (or answers the
        #: supervisor's), before its routes are compiled; without ``metrics.listen`` routes
        #: carry no series and the request path reads no clock.
        self.on = False
        #: The read events' clock the worker's connections set (:mod:`.timing`).
        self.clock = EventClock()
        #: resource id ("" for none) -> its requests.
        self._series: dict[str, Series] = {}
        #: backend URL -> its time from request sent to response head received.
        self._upstream: dict[str, Histogram] = {}
        #: (backend URL, kind) -> failures: connect, failed, timeout.
        self.upstream_errors: dict[tuple[str, str], int] = {}
        #: outcome (allow, deny, authenticate, error) -> decisions asked of a Policy service.
        self.decisions: dict[str, int] = {}
        self._decision_durations = Histogram()
        #: Counts of Deciders this worker replaced (a new list of Policy services).
        self.retired: dict[str, float] = dict.fromkeys(_DECIDER_KEYS, 0.0)
        self.retired_links: dict[tuple[str, str], list[float]] = {}

    def series(self, resource: str) -> Series:
        """The series of the resource id ``resource`` ("": a request no resource matched)."""
        found = self._series.get(resource)
        if found is None:
            found = self._series[resource] = Series(resource, self.clock)
        return found

    def backend(self, url: str) -> Histogram:
        """The histogram of the backend ``url``'s response times."""
        found = self._upstream.get(url)
        if found is None:
            found = self._upstream[url] = Histogram()
        return found

    def request(self, resource: str, method: bytes, status: int, seconds: float) -> None:
        """One request answered (what the request path does through a route's series)."""
        self.series(resource).add(method, status, seconds)

    def upstream_time(self, backend: str, seconds: float) -> None:
        self.backend(backend).observe(seconds)

    @property
    def upstream(self) -> dict[str, Hist]:
        """backend URL -> histogram of its response times."""
        return {url: hist.values() for url, hist in self._upstream.items()}

    @property
    def requests(self) -> dict[tuple[str, bytes, int], float]:
        """(resource id, method label, status) -> requests answered (made when asked)."""
        return {
            (name, method.encode("ascii"), status): count
            for name, series in self._series.items()
            for method, status, count in series.requests()
        }

    @property
    def durations(self) -> dict[str, Hist]:
        """resource id -> histogram of request durations (head received to response sent)."""
        return {name: s.durations() for name, s in self._series.items() if s.by_key}

    @property
    def decision_durations(self) -> Hist:
        return self._decision_durations.values()

    def upstream_error(self, backend: str, kind: str) -> None:
        if not self.on:
            return
        key = (backend, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def decision(self, outcome: str, seconds: float) -> None:
        if not self.on:
            return
        self.decisions[outcome] = self.decisions.get(outcome, 0) + 1
        self._decision_durations.observe(seconds)

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
COUNTERS: Final = WorkerCounters()

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

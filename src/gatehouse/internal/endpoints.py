"""Ordered endpoint lists with up/down state: which endpoint an internal call tries next.

Pure logic with an injected clock, so tests drive time; the failover client (``client.py``)
does the I/O and reports every outcome here. The rules (ARCHITECTURE.md, "High availability"):

- endpoints that are up are tried in configured order; endpoints that are down come after
  them, in configured order, as a last resort;
- an endpoint is marked down by a failed attempt (connect refused or timed out, read timeout,
  reset, 5xx) and up by a successful one;
- without background probes, a down endpoint is tried again in its configured place
  ("fail-back") once ``retry_after`` seconds have passed since it last failed; one call at a
  time makes that trial, so a dead primary costs one slow request per ``retry_after``, not
  one per concurrent request;
- while background probes run (:meth:`Endpoints.probes_started`), calls make no such trials:
  a down endpoint comes back after ``rise`` passed probes in a row
  (:meth:`Endpoints.probe_result`; a failed probe or call starts the count again), or when a
  call that reached it as a last resort succeeds; ``retry_after=None`` means the same
  without probes (only a last resort or an explicit probe brings an endpoint back);
- a background check of an endpoint that is up (a standby connection's refresh) that only
  timed out is not proof of death on a busy machine: ``fall`` such checks in a row mark it
  down, while a refused or reset connection marks it down at once;
- a down endpoint whose probes time out is probed less and less often (every 2, 4, then at
  most :data:`PROBE_BACKOFF_MAX` probe intervals), since each such probe is a connection the
  endpoint could not finish; a probe refused at once, or one that passes, restores the normal
  interval, so a restarted process is taken back as quickly as ever.

Every transition is logged once (WARNING down, INFO up with why and how long it was down)
and counted, overall (:attr:`Endpoints.counters`) and per endpoint (:meth:`Endpoints.status`).

An outcome is evidence about the moment its attempt *started*: a result older than the one
that set the current state is ignored, so a slow request sent before a restart cannot mark
the restarted endpoint down again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from gatehouse.errors import ConfigError

log = logging.getLogger("gatehouse.internal")

Clock = Callable[[], float]

_DEFAULT_PORTS = {"http": 80, "https": 443}

#: A down endpoint whose probes time out is probed at most this many probe intervals apart.
PROBE_BACKOFF_MAX = 8


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One base URL of a service, e.g. ``http://10.0.0.5:8100``."""

    url: str
    scheme: str
    host: str
    port: int
    #: Position in the configured order (0 = preferred).
    index: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def parse_endpoint(url: str, index: int = 0) -> Endpoint:
    """Parse a base URL; raises ``ValueError`` with a message fit for a config error."""
    if not isinstance(url, str) or not url:
        raise ValueError("not a URL")
    if not url.isascii() or any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise ValueError("URL must be ASCII without whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with https:// (or http://)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("invalid port") from None
    host = parts.hostname
    if not host:
        raise ValueError("no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not allowed")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("a base URL has no path, query or fragment")
    port = port if port is not None else _DEFAULT_PORTS[parts.scheme]
    shown = f"[{host}]" if ":" in host else host
    return Endpoint(f"{parts.scheme}://{shown}:{port}", parts.scheme, host, port, index)


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """What a status page or metrics endpoint shows for one endpoint."""

    url: str
    up: bool
    #: Clock time of the last up/down transition (``None``: never changed).
    since: float | None
    #: Why it went down (the latest failure while down), or ``""``.
    reason: str
    #: Passed probes in a row while down (it comes back at ``rise``).
    passes: int = 0
    #: Transitions so far: up -> down, and down -> up.
    went_down: int = 0
    came_up: int = 0
    #: Calls that moved from this endpoint to another one after a failure here.
    failovers: int = 0
    #: Background probe outcomes.
    probes_passed: int = 0
    probes_failed: int = 0
    #: Probe intervals between two probes of this endpoint now (1 unless they time out).
    probe_every: int = 1


class _State:
    __slots__ = (
        "came_up",
        "changed_at",
        "evidence_at",
        "failovers",
        "passes",
        "probe_every",
        "probe_skip",
        "probes_failed",
        "probes_passed",
        "reason",
        "retry_at",
        "slow_checks",
        "up",
        "went_down",
    )

    def __init__(self) -> None:
        self.up = True
        self.changed_at: float | None = None
        # Start time of the attempt whose outcome set the current state.
        self.evidence_at = -math.inf
        # When a down endpoint may be tried again in its configured place.
        self.retry_at = math.inf
        self.reason = ""
        self.passes = 0
        self.went_down = 0
        self.came_up = 0
        self.failovers = 0
        self.probes_passed = 0
        self.probes_failed = 0
        # Timed-out checks in a row while up (it goes down at ``fall``).
        self.slow_checks = 0
        # Probe ticks between two probes while down, and the ticks left to skip.
        self.probe_every = 1
        self.probe_skip = 0

    def reset_checks(self) -> None:
        """A check was answered, or the endpoint changed state: no slow run, no back-off."""
        self.slow_checks = 0
        self.probe_every = 1
        self.probe_skip = 0


#: Told of every transition: the endpoint and whether it is now up.
Watcher = Callable[[Endpoint, bool], None]


class Endpoints:
    """An ordered list of endpoints of one service and what is known about each.

    Args:
        urls: base URLs, most preferred first.
        retry_after: seconds after a failure before a down endpoint is tried again in its
            configured place, while no background probes run; ``None`` leaves that to probes.
        rise: consecutive passed probes that bring a down endpoint back up.
        fall: consecutive background checks of an up endpoint that timed out before it is
            marked down (a refused or reset check, or a failed call, marks it down at once).
        clock: monotonic seconds; injected by tests.
        name: the service, for log lines (``"policy"``).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        retry_after: float | None = 2.0,
        rise: int = 1,
        fall: int = 1,
        clock: Clock = time.monotonic,
        name: str = "",
    ) -> None:
        problems: list[tuple[str, str]] = []
        parsed: list[Endpoint] = []
        if isinstance(urls, str):
            raise TypeError("urls must be a sequence of URLs, not one string")
        for i, url in enumerate(urls):
            try:
                parsed.append(parse_endpoint(url, i))
            except ValueError as exc:
                problems.append((f"endpoints[{i}]", str(exc)))
        if not urls:
            problems.append(("endpoints", "at least one endpoint is required"))
        seen: dict[str, int] = {}
        for ep in parsed:
            if ep.url in seen:
                problems.append(
                    (f"endpoints[{ep.index}]", f"duplicate of endpoints[{seen[ep.url]}]")
                )
            seen.setdefault(ep.url, ep.index)
        if retry_after is not None and not retry_after >= 0:
            problems.append(("retry_after", "must be >= 0"))
        if rise < 1:
            problems.append(("rise", "must be >= 1"))
        if fall < 1:
            problems.append(("fall", "must be >= 1"))
        if problems:
            raise ConfigError(problems)
        self.all: tuple[Endpoint, ...] = tuple(parsed)
        self.retry_after = retry_after
        self.rise = rise
        self.fall = fall
        self.clock = clock
        self.name = name
        self._label = f"{name} endpoint" if name else "endpoint"
        self._states = [_State() for _ in parsed]
        self._watchers: list[Watcher] = []
        self._probers = 0
        #: Read by metrics: up/down transitions (``transitions`` = ``down`` + ``up``), moves
        #: of a call to another endpoint, and background probe outcomes.
        self.counters: dict[str, int] = {
            "transitions": 0,
            "down": 0,
            "up": 0,
            "failovers": 0,
            "probes_passed": 0,
            "probes_failed": 0,
        }

    def __len__(self) -> int:
        return len(self.all)

    # choosing -------------------------------------------------------------------------------
    def order(self) -> list[Endpoint]:
        """The order a call would try now: eligible endpoints (up, or down and due for a
        retry) in configured order, then the other down endpoints in configured order."""
        now = self.clock()
        first: list[Endpoint] = []
        last: list[Endpoint] = []
        for ep, st in zip(self.all, self._states, strict=True):
            (first if st.up or now >= st.retry_at else last).append(ep)
        return first + last

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The endpoint to try next, skipping ``exclude`` (those this call already tried).

        Picking a down endpoint claims its trial: until ``retry_after`` passes again (or the
        attempt reports), other calls see it as not due and go elsewhere.
        """
        states = self._states
        fallback: Endpoint | None = None
        now: float | None = None
        for ep in self.all:
            if exclude and ep in exclude:
                continue
            st = states[ep.index]
            if st.up:
                return ep
            if now is None:
                now = self.clock()
            if now >= st.retry_at:
                self._claim(st, now)
                return ep
            if fallback is None:
                fallback = ep
        # A last resort is not a fail-back trial: its retry time stays as it is.
        return fallback

    def _claim(self, st: _State, now: float) -> None:
        st.retry_at = self._next_trial(now)

    def _next_trial(self, now: float) -> float:
        """When a down endpoint that failed (or was claimed) at ``now`` is due for a trial."""
        if self.retry_after is None or self._probers:
            return math.inf
        return now + self.retry_after

    def is_up(self, ep: Endpoint) -> bool:
        return self._states[ep.index].up

    # background probes ----------------------------------------------------------------------
    @property
    def probed(self) -> bool:
        """Background probes are running: they alone decide fail-back."""
        return self._probers > 0

    def probes_started(self) -> None:
        """A prober watches these endpoints: calls stop making ``retry_after`` trials, so a
        down endpoint comes back only after ``rise`` passed probes in a row (or a successful
        last-resort call). Counted: each call needs a matching :meth:`probes_stopped`."""
        self._probers += 1
        for st in self._states:
            if not st.up:
                st.retry_at = math.inf

    def probes_stopped(self) -> None:
        """The prober stopped; once none is left, down endpoints get ``retry_after`` trials
        again, the first one ``retry_after`` seconds from now."""
        if self._probers == 0:
            return
        self._probers -= 1
        if self._probers == 0:
            due = self._next_trial(self.clock())
            for st in self._states:
                if not st.up:
                    st.retry_at = due

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher(endpoint, up)`` after every transition (the prober wakes on it)."""
        self._watchers.append(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    # outcomes -------------------------------------------------------------------------------
    def succeeded(self, ep: Endpoint, started: float | None = None) -> None:
        """A call on ``ep`` (started at clock time ``started``) got a usable answer."""
        st = self._states[ep.index]
        if st.up and started is not None and started >= st.evidence_at:
            # The hot path: nothing changes but the evidence time.
            st.evidence_at = started
            return
        now = self.clock()
        started = now if started is None else started
        if started < st.evidence_at:
            return
        st.evidence_at = started
        st.passes = 0
        if not st.up:
            self._set_up(ep, st, now, "a call succeeded")

    def failed(self, ep: Endpoint, reason: str, started: float | None = None) -> None:
        """A call on ``ep`` (started at clock time ``started``) failed for ``reason``."""
        st = self._states[ep.index]
        now = self.clock()
        started = now if started is None else started
        if started < st.evidence_at:
            return
        st.evidence_at = started
        st.passes = 0
        st.reason = reason
        st.retry_at = self._next_trial(now)
        if st.up:
            st.up = False
            st.changed_at = now
            st.reset_checks()
            st.went_down += 1
            self.counters["transitions"] += 1
            self.counters["down"] += 1
            log.warning("%s %s is down: %s", self._label, ep.url, reason)
            self._tell(ep, False)
        else:
            log.debug("%s %s still down: %s", self._label, ep.url, reason)

    def probe_result(
        self,
        ep: Endpoint,
        ok: bool,
        reason: str = "",
        started: float | None = None,
        *,
        slow: bool = False,
    ) -> None:
        """A background check's outcome (a probe, or a standby connection's refresh):
        ``rise`` passes in a row bring ``ep`` up; a failed check marks it down like a failed
        call, except one that only timed out (``slow``) on an up endpoint, which needs
        ``fall`` in a row. Counted whatever it is evidence of."""
        st = self._states[ep.index]
        if not ok:
            st.probes_failed += 1
            self.counters["probes_failed"] += 1
            if st.up and slow and (started is None or started >= st.evidence_at):
                st.slow_checks += 1
                if st.slow_checks < self.fall:
                    log.info(
                        "%s %s is slow (%s): check %d of %d before it counts as down",
                        self._label,
                        ep.url,
                        reason,
                        st.slow_checks,
                        self.fall,
                    )
                    return
            was_up = st.up
            self.failed(ep, reason or "probe failed", started)
            if slow and not was_up:
                # Probed less often while it cannot even answer: 2, 4, ... intervals apart.
                st.probe_every = min(st.probe_every * 2, PROBE_BACKOFF_MAX)
            elif not slow:
                st.probe_every = 1
            st.probe_skip = st.probe_every - 1
            return
        st.probes_passed += 1
        self.counters["probes_passed"] += 1
        st.reset_checks()
        now = self.clock()
        started = now if started is None else started
        if started < st.evidence_at:
            return
        st.evidence_at = started
        if st.up:
            return
        st.passes += 1
        if st.passes >= self.rise:
            st.passes = 0
            self._set_up(ep, st, now, f"{self.rise} passed probe{'s' if self.rise > 1 else ''}")
        else:
            log.debug("%s %s passed probe %d of %d", self._label, ep.url, st.passes, self.rise)

    def due_probes(self) -> list[Endpoint]:
        """The down endpoints to probe at this tick of the prober (one tick per probe
        interval): every one, except those whose probes time out, which skip ticks."""
        due: list[Endpoint] = []
        for ep, st in zip(self.all, self._states, strict=True):
            if st.up:
                continue
            if st.probe_skip > 0:
                st.probe_skip -= 1
            else:
                due.append(ep)
        return due

    def failover(self, src: Endpoint, dst: Endpoint) -> None:
        """A call moves from ``src`` to ``dst`` after a failure."""
        self._states[src.index].failovers += 1
        self.counters["failovers"] += 1
        log.debug("%s failover %s -> %s", self._label, src.url, dst.url)

    def _set_up(self, ep: Endpoint, st: _State, now: float, why: str) -> None:
        down_for = now - st.changed_at if st.changed_at is not None else 0.0
        st.up = True
        st.changed_at = now
        st.reason = ""
        st.retry_at = math.inf
        st.reset_checks()
        st.came_up += 1
        self.counters["transitions"] += 1
        self.counters["up"] += 1
        log.info("%s %s is up again after %s (down for %.1f s)", self._label, ep.url, why, down_for)
        self._tell(ep, True)

    def _tell(self, ep: Endpoint, up: bool) -> None:
        for watcher in tuple(self._watchers):
            try:
                watcher(ep, up)
            except Exception:  # a watcher's bug must not break the call that reported
                log.exception("%s watcher failed", self._label)

    # reading --------------------------------------------------------------------------------
    def status(self) -> list[EndpointStatus]:
        return [
            EndpointStatus(
                ep.url,
                st.up,
                st.changed_at,
                st.reason,
                passes=st.passes,
                went_down=st.went_down,
                came_up=st.came_up,
                failovers=st.failovers,
                probes_passed=st.probes_passed,
                probes_failed=st.probes_failed,
                probe_every=st.probe_every,
            )
            for ep, st in zip(self.all, self._states, strict=True)
        ]

    def down(self) -> list[Endpoint]:
        return [ep for ep, st in zip(self.all, self._states, strict=True) if not st.up]

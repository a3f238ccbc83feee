"""Endpoint lists: URL parsing, ordering, up/down state, fail-back timing, counters, logs."""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.errors import ConfigError
from gatehouse.internal.endpoints import PROBE_BACKOFF_MAX, Endpoint, Endpoints, parse_endpoint

URLS = ["http://10.0.0.1:8100", "http://10.0.0.2:8100", "http://10.0.0.3:8100"]


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    urls: list[str] | None = None, retry_after: float | None = 2.0, rise: int = 1, fall: int = 1
) -> tuple[Endpoints, FakeClock]:
    clock = FakeClock()
    eps = Endpoints(
        urls or URLS, retry_after=retry_after, rise=rise, fall=fall, clock=clock, name="policy"
    )
    return eps, clock


def urls(eps: list[Endpoint]) -> list[str]:
    return [ep.url for ep in eps]


# parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normal", "host", "port", "host_header"),
    [
        ("http://127.0.0.1:8100", "http://127.0.0.1:8100", "127.0.0.1", 8100, "127.0.0.1:8100"),
        ("http://127.0.0.1:8100/", "http://127.0.0.1:8100", "127.0.0.1", 8100, "127.0.0.1:8100"),
        ("http://PS1.example", "http://ps1.example:80", "ps1.example", 80, "ps1.example"),
        ("http://[::1]:9000", "http://[::1]:9000", "::1", 9000, "[::1]:9000"),
    ],
)
def test_parse_endpoint(url: str, normal: str, host: str, port: int, host_header: str) -> None:
    ep = parse_endpoint(url, 3)
    assert (ep.url, ep.host, ep.port, ep.host_header, ep.index) == (
        normal,
        host,
        port,
        host_header,
        3,
    )
    assert str(ep) == normal


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://ps1:8100", "must start with https://"),
        ("ftp://ps1:21", "must start with https://"),
        ("ps1:8100", "must start with https://"),
        ("http://", "no host"),
        ("http://ps1:99999", "invalid port"),
        ("http://ps1:80/internal", "no path"),
        ("http://ps1:80?x=1", "no path"),
        ("http://user:pw@ps1:80", "credentials"),
        (" http://ps1:80", "whitespace"),
        ("http://ps1:80\r\n", "whitespace"),
        ("http://pś1:80", "ASCII"),
        ("", "not a URL"),
    ],
)
def test_parse_endpoint_refuses(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_endpoint(url)


def test_config_errors_name_the_item() -> None:
    with pytest.raises(ConfigError) as info:
        Endpoints(["http://a:1", "nope", "http://a:1"])
    assert [path for path, _ in info.value.problems] == ["endpoints[1]", "endpoints[2]"]
    assert "duplicate of endpoints[0]" in str(info.value)


def test_config_errors_for_settings() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        Endpoints([])
    with pytest.raises(ConfigError, match="retry_after: must be >= 0"):
        Endpoints(URLS, retry_after=-1)
    with pytest.raises(ConfigError, match="rise: must be >= 1"):
        Endpoints(URLS, rise=0)
    with pytest.raises(TypeError):
        Endpoints("http://a:1")


# ordering and state -------------------------------------------------------------------------


def test_all_up_is_configured_order() -> None:
    eps, _ = make()
    assert urls(eps.order()) == URLS
    assert eps.pick() == eps.all[0]
    assert eps.pick([eps.all[0]]) == eps.all[1]
    assert eps.pick(eps.all) is None


def test_down_endpoint_goes_last_until_retry_after() -> None:
    eps, clock = make()
    a, b, c = eps.all
    eps.failed(a, "connection refused")
    assert eps.order() == [b, c, a]
    assert eps.pick() == b
    clock.advance(1.99)
    assert eps.order() == [b, c, a]
    clock.advance(0.01)
    # Due again: back in its configured place.
    assert eps.order() == [a, b, c]


def test_a_due_endpoint_is_tried_by_one_call_at_a_time() -> None:
    eps, clock = make()
    a, b, _ = eps.all
    eps.failed(a, "connect timeout")
    clock.advance(2)
    assert eps.pick() == a  # this call makes the trial
    assert eps.pick() == b  # concurrent calls do not wait on the same dead endpoint
    clock.advance(2)
    assert eps.pick() == a  # the trial never reported (cancelled): tried again


def test_failed_trial_reschedules_and_success_brings_it_back() -> None:
    eps, clock = make()
    a, b, c = eps.all
    eps.failed(a, "refused")
    clock.advance(2)
    assert eps.pick() == a
    eps.failed(a, "refused")
    clock.advance(1)
    assert eps.order() == [b, c, a]
    clock.advance(1)
    assert eps.pick() == a
    eps.succeeded(a)
    assert eps.is_up(a)
    assert eps.order() == [a, b, c]


def test_all_down_means_configured_order_as_last_resort() -> None:
    eps, clock = make()
    a, b, c = eps.all
    for ep in (b, c, a):
        eps.failed(ep, "refused")
        clock.advance(0.5)
    assert eps.order() == [a, b, c]  # none due yet: last resort, still in configured order
    assert eps.pick() == a
    assert eps.pick([a]) == b


def test_a_last_resort_attempt_does_not_postpone_the_fail_back() -> None:
    eps, clock = make(URLS[:2])
    a, b = eps.all
    eps.failed(a, "refused")
    clock.advance(1)
    assert eps.pick([b]) == a  # b failed in this call; a is the last resort
    clock.advance(1)
    assert eps.pick() == a  # due 2 s after its failure, as if the last resort never happened


def test_older_evidence_is_ignored() -> None:
    eps, clock = make()
    a = eps.all[0]
    started_early = clock()
    clock.advance(1)
    eps.failed(a, "read timeout", started=clock())  # an attempt started now failed
    clock.advance(1)
    eps.succeeded(a, started=started_early)  # a request sent before that failure: stale
    assert not eps.is_up(a)
    eps.succeeded(a, started=clock())
    assert eps.is_up(a)
    eps.failed(a, "reset", started=started_early)  # sent before the restart: ignored
    assert eps.is_up(a)


def test_transitions_are_logged_once_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    eps, clock = make()
    a, b, _ = eps.all
    with caplog.at_level(logging.DEBUG, logger="gatehouse.internal"):
        eps.failed(a, "connection refused")
        eps.failed(a, "connection refused")
        eps.failover(a, b)
        clock.advance(3.25)
        eps.succeeded(a)
        eps.succeeded(a)
    changes = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [(r.levelname, r.name) for r in changes] == [
        ("WARNING", "gatehouse.internal"),
        ("INFO", "gatehouse.internal"),
    ]
    assert changes[0].getMessage() == (
        "policy endpoint http://10.0.0.1:8100 is down: connection refused"
    )
    assert changes[1].getMessage() == (
        "policy endpoint http://10.0.0.1:8100 is up again after a call succeeded (down for 3.2 s)"
    )
    assert eps.counters == {
        "transitions": 2,
        "down": 1,
        "up": 1,
        "failovers": 1,
        "probes_passed": 0,
        "probes_failed": 0,
    }


def test_status_snapshot() -> None:
    eps, clock = make(URLS[:2])
    a, _ = eps.all
    eps.failed(a, "answered 503")
    status = eps.status()
    assert [(s.url, s.up, s.since, s.reason) for s in status] == [
        (URLS[0], False, clock(), "answered 503"),
        (URLS[1], True, None, ""),
    ]
    assert eps.down() == [a]


def test_per_endpoint_counts() -> None:
    eps, clock = make(URLS[:2], rise=2)
    a, b = eps.all
    eps.failed(a, "refused")
    eps.failover(a, b)
    eps.probe_result(a, True)
    assert eps.status()[0].passes == 1
    eps.probe_result(a, False, "probe: refused")
    clock.advance(1)
    eps.probe_result(a, True)
    eps.probe_result(a, True)
    eps.failed(b, "reset")
    first, second = eps.status()
    assert (first.up, first.passes, first.went_down, first.came_up, first.failovers) == (
        True,
        0,
        1,
        1,
        1,
    )
    assert (first.probes_passed, first.probes_failed) == (3, 1)
    assert (second.up, second.went_down, second.came_up, second.failovers) == (False, 1, 0, 0)
    assert eps.counters == {
        "transitions": 3,
        "down": 2,
        "up": 1,
        "failovers": 1,
        "probes_passed": 3,
        "probes_failed": 1,
    }


# probes -------------------------------------------------------------------------------------


def test_without_retry_after_only_probes_bring_an_endpoint_back() -> None:
    eps, clock = make(retry_after=None)
    a, b, c = eps.all
    eps.failed(a, "refused")
    clock.advance(3600)
    assert eps.order() == [b, c, a]
    eps.probe_result(a, True)
    assert eps.order() == [a, b, c]


def test_rise_needs_consecutive_passes() -> None:
    eps, _ = make(rise=3)
    a = eps.all[0]
    eps.failed(a, "refused")
    eps.probe_result(a, True)
    eps.probe_result(a, True)
    eps.probe_result(a, False, "probe answered 503")  # the run is broken
    assert eps.status()[0].reason == "probe answered 503"
    eps.probe_result(a, True)
    eps.probe_result(a, True)
    assert not eps.is_up(a)
    eps.probe_result(a, True)
    assert eps.is_up(a)
    assert eps.counters["transitions"] == 2


def test_while_probes_run_calls_make_no_retry_after_trials() -> None:
    eps, clock = make(retry_after=2.0, rise=2)
    a, b, c = eps.all
    eps.failed(a, "refused")
    eps.probes_started()
    assert eps.probed
    clock.advance(3600)
    assert eps.order() == [b, c, a]  # never due: only probes bring it back
    assert eps.pick() == b
    assert eps.pick([b, c]) == a  # still the last resort
    eps.failed(b, "refused")  # a failure while probed: not due later either
    clock.advance(3600)
    assert eps.order() == [c, a, b]
    eps.probe_result(a, True)
    assert not eps.is_up(a)
    eps.probe_result(a, True)
    assert eps.is_up(a)
    # Probes stop: down endpoints get retry_after trials again, counted from now.
    eps.probes_stopped()
    assert not eps.probed
    assert eps.order() == [a, c, b]
    clock.advance(2)
    assert eps.order() == [a, b, c]


def test_probes_started_by_two_probers_stop_with_the_last() -> None:
    eps, clock = make(retry_after=1.0)
    a, b, c = eps.all
    eps.probes_started()
    eps.probes_started()
    eps.failed(a, "refused")
    eps.probes_stopped()
    clock.advance(10)
    assert eps.order() == [b, c, a]
    eps.probes_stopped()
    eps.probes_stopped()  # one too many: ignored
    clock.advance(1)
    assert eps.order() == [a, b, c]


def test_a_successful_call_brings_a_probed_endpoint_back_at_once() -> None:
    eps, _ = make(rise=3)
    a = eps.all[0]
    eps.probes_started()
    eps.failed(a, "refused")
    eps.probe_result(a, True)
    eps.succeeded(a)  # a last-resort call got through: real traffic is evidence enough
    assert eps.is_up(a)
    assert eps.status()[0].passes == 0


def test_rise_transition_is_logged_with_the_probes(caplog: pytest.LogCaptureFixture) -> None:
    eps, clock = make(rise=2)
    a = eps.all[0]
    with caplog.at_level(logging.INFO, logger="gatehouse.internal"):
        eps.failed(a, "connect timeout")
        clock.advance(1.5)
        eps.probe_result(a, True)
        eps.probe_result(a, True)
    assert [r.getMessage() for r in caplog.records] == [
        "policy endpoint http://10.0.0.1:8100 is down: connect timeout",
        "policy endpoint http://10.0.0.1:8100 is up again after 2 passed probes (down for 1.5 s)",
    ]


def test_watchers_hear_every_transition(caplog: pytest.LogCaptureFixture) -> None:
    eps, _ = make(rise=1)
    a, b, _ = eps.all
    heard: list[tuple[str, bool]] = []

    def watcher(ep: Endpoint, up: bool) -> None:
        heard.append((ep.url, up))

    def broken(ep: Endpoint, up: bool) -> None:
        raise RuntimeError("bug")

    eps.watch(broken)
    eps.watch(watcher)
    with caplog.at_level(logging.ERROR, logger="gatehouse.internal"):
        eps.failed(a, "refused")
        eps.failed(a, "refused")  # still down: no transition
        eps.probe_result(a, True)
        eps.unwatch(watcher)
        eps.failed(b, "refused")
    assert heard == [(URLS[0], False), (URLS[0], True)]
    assert [r.getMessage() for r in caplog.records] == ["policy endpoint watcher failed"] * 3


def test_failed_probe_marks_an_up_endpoint_down() -> None:
    eps, _ = make()
    a = eps.all[0]
    eps.probe_result(a, False)
    assert not eps.is_up(a)
    assert eps.status()[0].reason == "probe failed"


# flapping under load: fall and probe back-off --------------------------------------------


def test_an_up_endpoint_goes_down_after_fall_slow_checks_in_a_row() -> None:
    eps, clock = make(fall=3)
    _, b, _ = eps.all
    eps.probe_result(b, False, "standby connection: read timeout", clock(), slow=True)
    eps.probe_result(b, False, "standby connection: read timeout", clock(), slow=True)
    assert eps.is_up(b)
    eps.probe_result(b, True, started=clock())  # an answer in time breaks the run
    eps.probe_result(b, False, "standby connection: read timeout", clock(), slow=True)
    eps.probe_result(b, False, "standby connection: read timeout", clock(), slow=True)
    assert eps.is_up(b)
    assert eps.counters["transitions"] == 0
    eps.probe_result(b, False, "standby connection: read timeout", clock(), slow=True)
    assert not eps.is_up(b)
    assert eps.status()[1].reason == "standby connection: read timeout"
    assert eps.counters["probes_failed"] == 5


def test_a_refused_check_or_a_failed_call_marks_an_up_endpoint_down_at_once() -> None:
    eps, clock = make(fall=3)
    a, b, _ = eps.all
    eps.probe_result(b, False, "standby connection: connection refused", clock())
    assert not eps.is_up(b)
    eps.probe_result(a, False, "standby connection: read timeout", clock(), slow=True)
    assert eps.is_up(a)
    eps.failed(a, "read timeout", clock())  # a call: the user waited, no second chance
    assert not eps.is_up(a)


def test_probes_that_time_out_back_off_and_a_fast_answer_restores_the_interval() -> None:
    eps, clock = make()
    a, b, _ = eps.all
    eps.failed(a, "connect timeout")
    eps.failed(b, "connection refused")

    def ticks(n: int) -> list[list[str]]:
        return [urls(eps.due_probes()) for _ in range(n)]

    assert ticks(1) == [[URLS[0], URLS[1]]]
    # a's probes time out: 2, 4, then 8 ticks apart; b's are refused: every tick.
    seen_a: list[int] = []
    for tick in range(40):
        due = urls(eps.due_probes())
        assert URLS[1] in due
        eps.probe_result(b, False, "probe: connection refused", clock())
        if URLS[0] in due:
            seen_a.append(tick)
            eps.probe_result(a, False, "probe: connect timeout", clock(), slow=True)
    assert seen_a == [0, 2, 6, 14, 22, 30, 38]
    assert seen_a[-1] - seen_a[-2] == PROBE_BACKOFF_MAX
    assert eps.status()[0].probe_every == PROBE_BACKOFF_MAX
    assert eps.status()[1].probe_every == 1
    # Refused at once (the process is restarting): every tick again.
    while URLS[0] not in urls(eps.due_probes()):
        pass
    eps.probe_result(a, False, "probe: connection refused", clock())
    assert eps.status()[0].probe_every == 1
    assert URLS[0] in urls(eps.due_probes())


def test_back_off_ends_when_the_endpoint_comes_back() -> None:
    eps, clock = make()
    a = eps.all[0]
    eps.failed(a, "connect timeout")
    for _ in range(3):
        eps.probe_result(a, False, "probe: connect timeout", clock(), slow=True)
    assert eps.status()[0].probe_every == 8
    eps.probe_result(a, True, started=clock())
    assert eps.is_up(a)
    assert eps.status()[0].probe_every == 1
    eps.failed(a, "connection refused", clock())
    assert urls(eps.due_probes()) == [URLS[0]]  # probed at the next tick, not 8 later


def test_fall_must_be_positive() -> None:
    with pytest.raises(ConfigError) as info:
        Endpoints(URLS, fall=0)
    assert ("fall", "must be >= 1") in info.value.problems


# properties ---------------------------------------------------------------------------------

N = 3
RETRY_AFTER = 2.0

ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0, 5, allow_nan=False)),
        st.tuples(st.just("ok"), st.integers(0, N - 1), st.floats(0, 3, allow_nan=False)),
        st.tuples(st.just("fail"), st.integers(0, N - 1), st.floats(0, 3, allow_nan=False)),
        st.tuples(st.just("probe"), st.integers(0, N - 1), st.booleans()),
        st.tuples(st.just("pick"), st.sets(st.integers(0, N - 1), max_size=N)),
    ),
    max_size=60,
)


class Model:
    """The rules, written out independently: state per endpoint, newest evidence wins."""

    def __init__(self) -> None:
        self.up = [True] * N
        self.evidence = [-math.inf] * N
        self.retry_at = [math.inf] * N
        self.transitions = 0

    def result(self, i: int, ok: bool, started: float, now: float) -> None:
        if started < self.evidence[i]:
            return
        self.evidence[i] = started
        if not ok:
            self.retry_at[i] = now + RETRY_AFTER
        elif not self.up[i]:
            self.retry_at[i] = math.inf
        if self.up[i] != ok:
            self.up[i] = ok
            self.transitions += 1

    def order(self, now: float) -> list[int]:
        eligible = [i for i in range(N) if self.up[i] or now >= self.retry_at[i]]
        return eligible + [i for i in range(N) if i not in eligible]


class Recorder(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_ordering_and_state_follow_the_rules(steps: list[tuple[object, ...]]) -> None:
    eps, clock = make(retry_after=RETRY_AFTER)
    model = Model()
    handler = Recorder(logging.INFO)
    records = handler.records
    logger = logging.getLogger("gatehouse.internal")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        for step in steps:
            now = clock()
            match step:
                case ("advance", float(dt)):
                    clock.advance(dt)
                case ("ok" | "fail" as what, int(i), float(age)):
                    started = now - age
                    if what == "ok":
                        eps.succeeded(eps.all[i], started)
                    else:
                        eps.failed(eps.all[i], "boom", started)
                    model.result(i, what == "ok", started, now)
                case ("probe", int(i), bool(ok)):
                    eps.probe_result(eps.all[i], ok, "", now)
                    model.result(i, ok, now, now)
                case ("pick", set(exclude)):
                    expected = [i for i in model.order(now) if i not in exclude]
                    got = eps.pick([eps.all[i] for i in exclude])
                    assert (got.index if got else None) == (expected[0] if expected else None)
                    if (
                        got is not None
                        and not model.up[got.index]
                        and now >= model.retry_at[got.index]
                    ):
                        model.retry_at[got.index] = now + RETRY_AFTER  # the trial is claimed

            order = [ep.index for ep in eps.order()]
            assert order == model.order(clock())
            assert sorted(order) == list(range(N))
            # Up endpoints keep their configured order and come before every down endpoint
            # that is not due.
            up = [i for i in order if model.up[i]]
            assert up == sorted(up)
            waiting = [i for i in order if not model.up[i] and clock() < model.retry_at[i]]
            if up and waiting:
                assert order.index(up[-1]) < order.index(waiting[0])
            assert [eps.is_up(ep) for ep in eps.all] == model.up
            assert eps.counters["transitions"] == model.transitions
            assert len(records) == model.transitions

        # Every endpoint is eventually retried: with no news for retry_after seconds, every
        # one is back in its configured place.
        clock.advance(RETRY_AFTER)
        assert [ep.index for ep in eps.order()] == list(range(N))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

"""The rules engine: every condition, Kleene logic, compile errors, time windows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.errors import ConfigError
from gatehouse.policy.rules import Condition, EvalContext, Tri, Verdict
from gatehouse.policy.rules_compile import compile_rule_set
from gatehouse.policy.rules_time import TimeWindow

STOCKHOLM = ZoneInfo("Europe/Stockholm")
NOW = datetime(2024, 6, 12, 10, 0, tzinfo=UTC)  # a Wednesday, 12:00 in Stockholm
T, F, N = Tri.TRUE, Tri.FALSE, Tri.NEEDS_AUTH


@dataclass(frozen=True)
class Who:
    username: str
    groups: frozenset[str] = frozenset()
    methods: frozenset[str] = frozenset({"password"})


ALICE = Who("alice", frozenset({"staff", "dev"}))
BOB = Who("bob", frozenset({"ops"}))
CAROL = Who("carol", frozenset(), frozenset())


def compile_one(spec: object, named: Mapping[str, object] | None = None) -> Condition:
    return compile_rule_set(named or {}, "public", {"r": spec}, methods=None).resources["r"]


def run(
    spec: object,
    *,
    who: Who | None = None,
    now: datetime = NOW,
    method: str = "GET",
    ip: str = "10.1.2.3",
    headers: Mapping[str, str] | None = None,
    ap: str = "ap1",
    named: Mapping[str, object] | None = None,
) -> tuple[Verdict, EvalContext]:
    ctx = EvalContext(
        now=now, principal=who, method=method, client_ip=ip, headers=headers or {}, access_point=ap
    )
    return compile_one(spec, named).evaluate(ctx), ctx


def value(spec: object, **kwargs: object) -> Tri:
    return run(spec, **kwargs)[0].value  # type: ignore[arg-type]


IPS = {"ip": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]}
CERT = {"header": {"name": "X-Client-Cert", "matches": "^CN=[a-z]+$"}}
OFFICE = {
    "time": {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "from": "08:00",
        "to": "18:00",
        "timezone": "Europe/Stockholm",
    }
}

CONDITIONS: list[tuple[str, object, dict[str, object], Tri]] = [
    ("public", "public", {}, T),
    ("public with session", "public", {"who": ALICE}, T),
    ("public mapping", {"public": True}, {}, T),
    ("authenticated", "authenticated", {"who": ALICE}, T),
    ("authenticated, no session", "authenticated", {}, N),
    ("authenticated mapping", {"authenticated": True}, {"who": CAROL}, T),
    ("authenticated mapping, no session", {"authenticated": True}, {}, N),
    ("users match", {"users": ["alice", "bob"]}, {"who": ALICE}, T),
    ("users other", {"users": ["alice", "bob"]}, {"who": CAROL}, F),
    ("users, no session", {"users": ["alice"]}, {}, N),
    ("groups_any match", {"groups_any": ["staff", "ops"]}, {"who": BOB}, T),
    ("groups_any none", {"groups_any": ["staff", "ops"]}, {"who": CAROL}, F),
    ("groups_any, no session", {"groups_any": ["staff"]}, {}, N),
    ("groups_all match", {"groups_all": ["staff", "dev"]}, {"who": ALICE}, T),
    ("groups_all partial", {"groups_all": ["staff", "ops"]}, {"who": ALICE}, F),
    ("groups_all, no session", {"groups_all": ["staff"]}, {}, N),
    ("ip v4 range", IPS, {"ip": "10.200.0.1"}, T),
    ("ip v4 outside", IPS, {"ip": "11.0.0.1"}, F),
    ("ip v6 range", IPS, {"ip": "2001:db8:1::5"}, T),
    ("ip v6 outside", IPS, {"ip": "2001:db9::1"}, F),
    ("ip single host", IPS, {"ip": "192.0.2.7"}, T),
    ("ip next to host", IPS, {"ip": "192.0.2.8"}, F),
    ("ip v4-mapped v6", IPS, {"ip": "::ffff:10.0.0.1"}, T),
    ("ip unparsable", IPS, {"ip": "not-an-ip"}, F),
    ("ip empty", IPS, {"ip": ""}, F),
    ("ip with session, outside", IPS, {"ip": "11.0.0.1", "who": ALICE}, F),
    ("methods GET", {"methods": ["GET", "HEAD"]}, {"method": "GET"}, T),
    ("methods HEAD", {"methods": ["GET", "HEAD"]}, {"method": "HEAD"}, T),
    ("methods POST", {"methods": ["GET", "HEAD"]}, {"method": "POST"}, F),
    ("methods written lowercase", {"methods": ["get"]}, {"method": "GET"}, T),
    ("header matches", CERT, {"headers": {"x-client-cert": "CN=alice"}}, T),
    ("header no match", CERT, {"headers": {"x-client-cert": "CN=Alice!"}}, F),
    ("header absent", CERT, {"headers": {"x-other": "CN=alice"}}, F),
    ("header search", {"header": {"name": "X-A", "matches": "b"}}, {"headers": {"x-a": "abc"}}, T),
    ("access point", {"access_point": ["ap1", "ap2"]}, {"ap": "ap2"}, T),
    ("access point other", {"access_point": ["ap1", "ap2"]}, {"ap": "ap3"}, F),
    ("auth_methods present", {"auth_methods": ["password"]}, {"who": ALICE}, T),
    ("auth_methods missing", {"auth_methods": ["password"]}, {"who": CAROL}, N),
    ("auth_methods, no session", {"auth_methods": ["password"]}, {}, N),
    ("time inside", OFFICE, {"now": NOW}, T),
    ("time after", OFFICE, {"now": NOW.replace(hour=16)}, F),
    ("time weekend", OFFICE, {"now": NOW + timedelta(days=3)}, F),
    (
        "rule ref",
        {"rule": "staff"},
        {"who": ALICE, "named": {"staff": {"groups_any": ["staff"]}}},
        T,
    ),
    (
        "rule ref deny",
        {"rule": "staff"},
        {"who": BOB, "named": {"staff": {"groups_any": ["staff"]}}},
        F,
    ),
    ("rule ref built-in", {"rule": "authenticated"}, {}, N),
    ("rule ref public", {"rule": "public"}, {}, T),
]


@pytest.mark.parametrize(
    ("spec", "kwargs", "expected"),
    [case[1:] for case in CONDITIONS],
    ids=[case[0] for case in CONDITIONS],
)
def test_condition(spec: object, kwargs: dict[str, object], expected: Tri) -> None:
    assert value(spec, **kwargs) is expected


def test_step_up_records_missing_methods_in_rule_order() -> None:
    spec = {"auth_methods": ["otp", "password", "sms"]}
    assert run(spec, who=ALICE)[0] == Verdict(N, ("otp", "sms"))
    assert run(spec)[0] == Verdict(N, ("otp", "password", "sms"))


# -- Kleene logic: TRUE = public, FALSE = not public, NEEDS_AUTH = authenticated w/o session --

AS_SPEC: dict[Tri, object] = {T: "public", F: {"not": "public"}, N: "authenticated"}

KLEENE = [
    # a, b, all, any
    (T, T, T, T),
    (T, F, F, T),
    (T, N, N, T),
    (F, T, F, T),
    (F, F, F, F),
    (F, N, F, N),
    (N, T, N, T),
    (N, F, F, N),
    (N, N, N, N),
]


@pytest.mark.parametrize(("a", "b", "both", "either"), KLEENE)
def test_kleene_all_any(a: Tri, b: Tri, both: Tri, either: Tri) -> None:
    assert value({"all": [AS_SPEC[a], AS_SPEC[b]]}) is both
    assert value({"any": [AS_SPEC[a], AS_SPEC[b]]}) is either


@pytest.mark.parametrize(("a", "negated"), [(T, F), (F, T), (N, N)])
def test_kleene_not(a: Tri, negated: Tri) -> None:
    assert value({"not": AS_SPEC[a]}) is negated
    assert value({"not": {"not": AS_SPEC[a]}}) is a


@pytest.mark.parametrize(
    ("spec", "kwargs", "expected"),
    [
        # logging in would not help: the network part is FALSE
        ({"all": ["authenticated", {"ip": ["10.0.0.0/8"]}]}, {"ip": "11.0.0.1"}, Verdict(F)),
        ({"all": ["authenticated", {"ip": ["10.0.0.0/8"]}]}, {}, Verdict(N)),
        ({"any": ["authenticated", {"ip": ["10.0.0.0/8"]}]}, {}, Verdict(T)),
        ({"any": ["authenticated", {"ip": ["10.0.0.0/8"]}]}, {"ip": "11.0.0.1"}, Verdict(N)),
        (
            {"all": [{"auth_methods": ["password"]}, {"auth_methods": ["otp", "password"]}]},
            {},
            Verdict(N, ("password", "otp")),
        ),
        (
            {"any": [{"auth_methods": ["password", "otp"]}, {"auth_methods": ["sms"]}]},
            {"who": CAROL},
            Verdict(N, ("sms",)),
        ),
        ({"any": [{"users": ["alice"]}, {"auth_methods": ["otp"]}]}, {}, Verdict(N)),
        (
            {"any": [{"users": ["alice"]}, {"auth_methods": ["otp"]}]},
            {"who": BOB},
            Verdict(N, ("otp",)),
        ),
        ({"not": {"auth_methods": ["otp"]}}, {"who": ALICE}, Verdict(N, ("otp",))),
        ({"all": [{"users": ["bob"]}, {"auth_methods": ["otp"]}]}, {"who": ALICE}, Verdict(F)),
        ({"any": [{"not": "public"}, {"users": ["alice"]}]}, {"who": ALICE}, Verdict(T)),
        ({"all": [{"any": ["authenticated", {"not": "public"}]}, "public"]}, {}, Verdict(N)),
    ],
)
def test_combinations(spec: object, kwargs: dict[str, object], expected: Verdict) -> None:
    assert run(spec, **kwargs)[0] == expected  # type: ignore[arg-type]


def test_named_rules_nest() -> None:
    named = {
        "staff": {"groups_any": ["staff"]},
        "office": {"ip": ["10.0.0.0/8"]},
        "staff-in-office": {"all": [{"rule": "staff"}, {"rule": "office"}]},
    }
    assert value({"rule": "staff-in-office"}, who=ALICE, named=named) is T
    assert value({"rule": "staff-in-office"}, who=ALICE, ip="8.8.8.8", named=named) is F
    assert value({"rule": "staff-in-office"}, named=named) is N


def test_short_circuit_only_reports_consulted_time_conditions() -> None:
    window = {"time": {"from": "12:00", "to": "13:00"}}
    _, ctx = run({"all": [{"not": "public"}, window]})
    assert ctx.changes_at is None
    _, ctx = run({"all": [window, "public"]})
    assert ctx.changes_at == NOW.replace(hour=12)
    _, ctx = run({"any": ["public", window]})
    assert ctx.changes_at is None


def test_earliest_time_edge_wins() -> None:
    spec = {
        "all": [
            {"time": {"from": "09:00", "to": "11:00"}},
            {"time": {"from": "09:00", "to": "10:30"}},
        ]
    }
    verdict, ctx = run(spec)
    assert verdict.value is T
    assert ctx.changes_at == NOW.replace(minute=30)


def test_context_needs_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EvalContext(now=datetime(2024, 1, 1))


# -- compile errors ---------------------------------------------------------------------------


def problems(
    named: Mapping[str, object], resources: Mapping[str, object] | None = None
) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        compile_rule_set(named, "public", resources)
    return info.value.problems


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({"users": "alice"}, "rules.r.users", "expected a non-empty list of user names"),
        ({"users": []}, "rules.r.users", "non-empty list"),
        ({"users": ["alice", 3]}, "rules.r.users[1]", "expected a non-empty string, got 3"),
        ({"grups_any": ["a"]}, "rules.r.grups_any", "unknown condition (expected one of"),
        ({"users": ["a"], "groups_any": ["b"]}, "rules.r", "exactly one key (got: users, gr"),
        ({}, "rules.r", "exactly one key (got: none)"),
        (42, "rules.r", "expected a condition"),
        (None, "rules.r", "expected a condition"),
        ("sometimes", "rules.r", "unknown condition 'sometimes'"),
        ("other", "rules.r", "write {rule: other} to use the named rule"),
        ({"authenticated": False}, "rules.r.authenticated", "must be true"),
        ({"public": "yes"}, "rules.r.public", "must be true"),
        ({"ip": ["10.0.0.0/33"]}, "rules.r.ip[0]", "not an IP network: '10.0.0.0/33'"),
        ({"ip": ["10.0.0.0/8", "2001:zz::/32"]}, "rules.r.ip[1]", "not an IP network"),
        ({"methods": ["GET", "BAD METHOD"]}, "rules.r.methods[1]", "not an HTTP method"),
        ({"header": {"name": "X-A", "matches": "("}}, "rules.r.header.matches", "invalid regular"),
        ({"header": {"name": "X-A", "matches": 5}}, "rules.r.header.matches", "expected a regular"),
        ({"header": {"name": "X A", "matches": "a"}}, "rules.r.header.name", "header name"),
        ({"header": {"name": "X-A"}}, "rules.r.header.matches", "field required"),
        (
            {"header": {"name": "X-A", "matches": "a", "flags": "i"}},
            "rules.r.header.flags",
            "unknown field",
        ),
        ({"header": "X-A"}, "rules.r.header", "expected a mapping with keys name, matches"),
        ({"access_point": "ap1"}, "rules.r.access_point", "non-empty list of Access Point ids"),
        ({"auth_methods": ["Password"]}, "rules.r.auth_methods[0]", "not an authentication meth"),
        ({"time": {"days": ["mon", "funday"]}}, "rules.r.time.days[1]", "unknown day 'funday'"),
        ({"time": {"days": []}}, "rules.r.time.days", "non-empty list of days"),
        ({"time": {"timezone": "Mars/Olympus"}}, "rules.r.time.timezone", "unknown time zone"),
        ({"time": {"timezone": "../etc/passwd"}}, "rules.r.time.timezone", "unknown time zone"),
        ({"time": {"from": "25:00"}}, "rules.r.time.from", "not a time: '25:00'"),
        ({"time": {"from": "24:00"}}, "rules.r.time.from", 'the latest is "23:59"'),
        ({"time": {"to": "8am"}}, "rules.r.time.to", 'use "HH:MM"'),
        ({"time": {"to": 1080}}, "rules.r.time.to", "quoted strings"),
        ({"time": {"from": "08:00", "to": "08:00"}}, "rules.r.time", "must differ"),
        ({"time": {"zone": "UTC"}}, "rules.r.time.zone", "unknown field"),
        ({"time": "always"}, "rules.r.time", "expected a mapping"),
        ({"all": []}, "rules.r.all", "non-empty list of conditions"),
        ({"any": [{"users": ["a"]}, {"groups_any": "staff"}]}, "rules.r.any[1].groups_any", "list"),
        ({"not": {"rule": "nope"}}, "rules.r.not.rule", "unknown rule 'nope'"),
        ({"not": {"colour": 1}}, "rules.r.not.colour", "unknown condition"),
        ({"rule": 5}, "rules.r.rule", "expected a rule name"),
        ({"all": [{"rule": "stafff"}]}, "rules.r.all[0].rule", "unknown rule 'stafff'"),
    ],
)
def test_compile_error_paths(spec: object, path: str, fragment: str) -> None:
    found = problems({"r": spec, "other": "public"})
    assert len(found) == 1, found
    assert found[0][0] == path
    assert fragment in found[0][1], found


@pytest.mark.parametrize(
    ("named", "path", "message"),
    [
        ({"a": {"rule": "a"}}, "rules.a.rule", "rule cycle: a -> a"),
        (
            {
                "a": {"rule": "b"},
                "b": {"all": ["public", {"rule": "c"}]},
                "c": {"not": {"rule": "a"}},
            },
            "rules.c.not.rule",
            "rule cycle: a -> b -> c -> a",
        ),
        (
            {"public": "authenticated"},
            "rules.public",
            "'public' is a built-in rule and cannot be redefined",
        ),
    ],
)
def test_cycles_and_builtins(named: Mapping[str, object], path: str, message: str) -> None:
    assert problems(named, {"app": {"rule": next(iter(named))}}) == [(path, message)]


def test_every_problem_is_reported_once() -> None:
    found = problems(
        {"broken": {"ip": ["x"]}, "fine": "public"},
        {"a": {"rule": "broken"}, "b": {"users": "x"}, "c": {"rule": "missing"}},
    )
    assert [p for p, _ in found] == ["rules.broken.ip[0]", "resources.b.users", "resources.c.rule"]


def test_nesting_depth_is_limited() -> None:
    spec: object = "public"
    for _ in range(70):
        spec = {"not": spec}
    found = problems({"deep": spec})
    assert len(found) == 1
    assert "nested more than 64 deep" in found[0][1]


def test_nesting_through_named_rules_is_limited() -> None:
    named: dict[str, object] = {}
    previous: object = "public"
    for i in range(4):
        spec = previous
        for _ in range(20):
            spec = {"not": spec}
        named[f"r{i}"] = spec
        previous = {"rule": f"r{i}"}
    found = problems(named)
    assert len(found) == 1
    path, message = found[0]
    assert path == "rules.r3" + ".not" * 20 + ".rule"
    assert message == "conditions nested more than 64 deep (with rule 'r2')"
    assert "r2" in compile_rule_set({k: v for k, v in named.items() if k != "r3"}).named


def test_rule_set_shape() -> None:
    rules = compile_rule_set(
        {"cert": {"header": {"name": "X-Client-Cert", "matches": "."}}},
        {"ip": ["10.0.0.0/8"]},
        {"a": None, "b": {"rule": "cert"}, "c": {"header": {"name": "X-Other", "matches": "."}}},
    )
    assert set(rules.effective) == {"a", "b", "c"}
    assert rules.header_names == {"x-client-cert", "x-other"}
    inside = EvalContext(now=NOW, client_ip="10.0.0.1")
    outside = EvalContext(now=NOW, client_ip="11.0.0.1")
    # a null resource rule means authenticated; the global rule applies to every resource
    assert rules.effective["a"].evaluate(inside).value is N
    assert rules.effective["a"].evaluate(outside).value is F


# -- time windows ------------------------------------------------------------------------------


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def window(spec: Mapping[str, object]) -> TimeWindow:
    condition = compile_one({"time": dict(spec)})
    assert isinstance(condition, TimeWindow)
    return condition


SAT_SUN = {"days": ["sat", "sun"]}
FRI_NIGHT = {"days": ["fri"], "from": "22:00", "to": "06:00"}
STO_OFFICE = OFFICE["time"]
STO_EVENING = {"from": "18:00", "to": "00:00", "timezone": "Europe/Stockholm"}


@pytest.mark.parametrize(
    ("spec", "at", "active", "change"),
    [
        (STO_OFFICE, "2024-06-12 05:59", False, "2024-06-12 06:00"),  # 07:59 CEST
        (STO_OFFICE, "2024-06-12 06:00", True, "2024-06-12 16:00"),
        (STO_OFFICE, "2024-06-14 16:00", False, "2024-06-17 06:00"),  # Friday → Monday
        (STO_OFFICE, "2024-01-10 06:59", False, "2024-01-10 07:00"),  # 07:59 CET
        (SAT_SUN, "2024-06-15 10:00", True, "2024-06-17 00:00"),  # whole days merge
        (SAT_SUN, "2024-06-14 23:59", False, "2024-06-15 00:00"),
        (FRI_NIGHT, "2024-06-14 21:00", False, "2024-06-14 22:00"),
        (FRI_NIGHT, "2024-06-14 23:00", True, "2024-06-15 06:00"),
        (FRI_NIGHT, "2024-06-15 05:59", True, "2024-06-15 06:00"),  # belongs to Friday
        (FRI_NIGHT, "2024-06-15 23:00", False, "2024-06-21 22:00"),  # Saturday night: not
        (FRI_NIGHT, "2024-06-14 03:00", False, "2024-06-14 22:00"),  # Thursday's night: not
        (STO_EVENING, "2024-06-12 21:59", True, "2024-06-12 22:00"),  # until local midnight
        ({}, "2024-06-12 10:00", True, None),
        (
            {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
            "2024-06-12 10:00",
            True,
            None,
        ),
        ({"from": "00:00", "to": "24:00"}, "2024-06-12 10:00", True, None),
    ],
)
def test_window_value_and_next_edge(
    spec: Mapping[str, object], at: str, active: bool, change: str | None
) -> None:
    w = window(spec)
    assert w.active_at(utc(at)) is active
    assert w.next_change(utc(at)) == (utc(change) if change else None)


SUNDAY_0230_0400 = {"days": ["sun"], "from": "02:30", "to": "04:00", "timezone": "Europe/Stockholm"}
SUNDAY_0200_0230 = {"days": ["sun"], "from": "02:00", "to": "02:30", "timezone": "Europe/Stockholm"}
DAILY_0800_1800 = {"from": "08:00", "to": "18:00", "timezone": "Europe/Stockholm"}


@pytest.mark.parametrize(
    ("spec", "start", "edges"),
    [
        # spring forward 2024-03-31: 02:00 CET → 03:00 CEST; 02:30 never happens
        (SUNDAY_0230_0400, "2024-03-30 23:00", ["2024-03-31 01:00", "2024-03-31 02:00"]),
        # the night is an hour shorter: 18:00 CET Saturday to 08:00 CEST Sunday
        (DAILY_0800_1800, "2024-03-30 12:00", ["2024-03-30 17:00", "2024-03-31 06:00"]),
        # fall back 2024-10-27: 03:00 CEST → 02:00 CET; 02:00-03:00 happens twice
        (
            SUNDAY_0230_0400,
            "2024-10-26 23:00",
            ["2024-10-27 00:30", "2024-10-27 01:00", "2024-10-27 01:30", "2024-10-27 03:00"],
        ),
        (
            SUNDAY_0200_0230,
            "2024-10-26 23:00",
            ["2024-10-27 00:00", "2024-10-27 00:30", "2024-10-27 01:00", "2024-10-27 01:30"],
        ),
        (DAILY_0800_1800, "2024-10-26 12:00", ["2024-10-26 16:00", "2024-10-27 07:00"]),
    ],
)
def test_window_edges_on_dst_change_days(
    spec: Mapping[str, object], start: str, edges: list[str]
) -> None:
    w = window(spec)
    at = utc(start)
    seen = []
    for _ in edges:
        nxt = w.next_change(at)
        assert nxt is not None
        assert w.active_at(nxt - timedelta(microseconds=1)) == w.active_at(at)
        assert w.active_at(nxt) != w.active_at(at)
        seen.append(nxt)
        at = nxt
    assert seen == [utc(e) for e in edges]


def test_window_evaluation_reports_edge_and_survives_jumps_in_time() -> None:
    w = window({"from": "08:00", "to": "09:00"})
    times = ["2024-06-12 08:30", "2024-06-12 09:00", "2024-06-12 07:00", "2024-06-12 08:59"]
    results = []
    for at in times:
        ctx = EvalContext(now=utc(at))
        results.append((w.evaluate(ctx).value, ctx.changes_at))
    assert results == [
        (T, utc("2024-06-12 09:00")),
        (F, utc("2024-06-13 08:00")),
        (F, utc("2024-06-12 08:00")),
        (T, utc("2024-06-12 09:00")),
    ]


def test_window_accepts_any_time_zone_for_now() -> None:
    w = window(STO_OFFICE)
    local = datetime(2024, 6, 12, 17, 59, tzinfo=STOCKHOLM)
    new_york = local.astimezone(ZoneInfo("America/New_York"))
    assert w.active_at(new_york) is True
    assert w.next_change(new_york) == utc("2024-06-12 16:00")


# -- property: the window agrees with a brute-force reference ---------------------------------

ZONES = [
    "UTC",
    "Europe/Stockholm",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kathmandu",
]
GRID = 300  # windows start and end on 5-minute marks; all offsets and transitions are too
WEEK = 7 * 86400


def reference_active(
    days: frozenset[int], start: int, end: int, zone: ZoneInfo, at: datetime
) -> bool:
    local = at.astimezone(zone)
    second_of_week = local.weekday() * 86400 + local.hour * 3600 + local.minute * 60 + local.second
    length = end - start if end > start else end + 86400 - start
    return any((second_of_week - (day * 86400 + start)) % WEEK < length for day in days)


def reference_next(
    days: frozenset[int], start: int, end: int, zone: ZoneInfo, at: datetime
) -> datetime | None:
    current = reference_active(days, start, end, zone, at)
    stamp = (int(at.timestamp()) // GRID + 1) * GRID
    for _ in range(8 * 86400 // GRID):
        candidate = datetime.fromtimestamp(stamp, UTC)
        if reference_active(days, start, end, zone, candidate) != current:
            return candidate
        stamp += GRID
    return None


def _transitions(zone: ZoneInfo) -> list[datetime]:
    """Offset changes 2001-2035, found day by day, then hour by hour."""
    out = []
    day = datetime(2001, 1, 1, tzinfo=UTC)
    offset = day.astimezone(zone).utcoffset()
    while day.year < 2036:
        if (day + timedelta(days=1)).astimezone(zone).utcoffset() != offset:
            hour = day
            while (hour + timedelta(hours=1)).astimezone(zone).utcoffset() == offset:
                hour += timedelta(hours=1)
            out.append(hour + timedelta(hours=1))
            offset = (hour + timedelta(hours=1)).astimezone(zone).utcoffset()
        day += timedelta(days=1)
    return out


_ZONE_TRANSITIONS = {name: _transitions(ZoneInfo(name))[::7] for name in ZONES}


@st.composite
def instants(draw: st.DrawFn, zone: str) -> datetime:
    near = _ZONE_TRANSITIONS[zone]
    if draw(st.booleans()) and near:
        base = draw(st.sampled_from(near))
        return base + draw(st.timedeltas(timedelta(days=-8), timedelta(days=2)))
    moment = draw(st.datetimes(datetime(2001, 1, 1), datetime(2035, 12, 31)))
    return moment.replace(tzinfo=UTC)


@st.composite
def window_cases(draw: st.DrawFn) -> tuple[frozenset[int], int, int, str, datetime]:
    zone = draw(st.sampled_from(ZONES))
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start = draw(st.integers(0, 86400 // GRID - 1)) * GRID
    end = draw(st.integers(1, 86400 // GRID).filter(lambda e: e * GRID != start)) * GRID
    return days, start, end, zone, draw(instants(zone))


@settings(max_examples=150, deadline=None)
@given(window_cases())
def test_window_matches_brute_force(case: tuple[frozenset[int], int, int, str, datetime]) -> None:
    days, start, end, zone_name, at = case
    zone = ZoneInfo(zone_name)
    w = TimeWindow(days=days, start=start, end=end, zone=zone)
    expected = reference_active(days, start, end, zone, at)
    assert w.active_at(at) is expected
    nxt = w.next_change(at)
    assert nxt == reference_next(days, start, end, zone, at)
    ctx = EvalContext(now=at)
    assert w.evaluate(ctx).value is (T if expected else F)
    assert ctx.changes_at == nxt
    if nxt is not None:
        assert nxt > at
        assert reference_active(days, start, end, zone, nxt - timedelta(microseconds=1)) is expected
        assert reference_active(days, start, end, zone, nxt) is not expected

"""Decisions: allow with identity headers, deny, authenticate (login and step-up), TTLs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gatehouse.config.loader import validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.policy.decision import (
    Allow,
    Authenticate,
    CompiledPolicy,
    Decision,
    DecisionInput,
    Deny,
    SessionView,
    compile_policy,
    decide,
    header_safe,
)

NOW = datetime(2024, 6, 12, 10, 0, tzinfo=UTC)  # Wednesday, 12:00 in Stockholm
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]

RESOURCES: dict[str, Any] = {
    "demo": "authenticated",
    "open": "public",
    "default": None,
    "admin-app": {"all": [{"rule": "staff"}, {"auth_methods": ["password"]}]},
    "secure": {"auth_methods": ["password", "otp"]},
    "otp-only": {"auth_methods": ["otp"]},
    "office-hours": {
        "all": [
            "authenticated",
            {
                "time": {
                    "days": WEEKDAYS,
                    "from": "08:00",
                    "to": "12:30",
                    "timezone": "Europe/Stockholm",
                }
            },
        ]
    },
    "cert": {"header": {"name": "X-Client-Cert", "matches": "^CN=[a-z]+$"}},
    "read-only": {"all": ["authenticated", {"methods": ["GET", "HEAD"]}]},
    "dmz": {"access_point": ["ap2"]},
    "either": {"any": [{"rule": "staff"}, {"ip": ["10.0.0.0/8"]}]},
}


def policy(**overrides: Any) -> CompiledPolicy:
    data: dict[str, Any] = {"rules": {"staff": {"groups_any": ["staff"]}}, "resources": RESOURCES}
    data.update(overrides)
    return compile_policy(validate(PolicyConfig, data))


POLICY = policy()


def session(
    username: str = "alice",
    groups: frozenset[str] = frozenset({"staff", "dev"}),
    methods: frozenset[str] = frozenset({"password"}),
    idle: float = 1800,
    absolute: float = 43200,
    email: str | None = "alice@example.org",
    name: str | None = "Alice Andersson",
) -> SessionView:
    return SessionView(
        username=username,
        groups=groups,
        email=email,
        display_name=name,
        methods=methods,
        idle_expires_at=NOW + timedelta(seconds=idle),
        absolute_expires_at=NOW + timedelta(seconds=absolute),
    )


ALICE = session()
BOB = session("bob", frozenset({"ops"}), email=None, name=None)
BOB_HEADERS = (
    ("Remote-User", "bob"),
    ("Remote-Groups", "ops"),
    ("Remote-Auth-Methods", "password"),
)
ALICE_HEADERS = (
    ("Remote-User", "alice"),
    ("Remote-Groups", "dev,staff"),
    ("Remote-Email", "alice@example.org"),
    ("Remote-Name", "Alice Andersson"),
    ("Remote-Auth-Methods", "password"),
)


def ask(
    resource: str,
    who: SessionView | None = None,
    *,
    policy: CompiledPolicy = POLICY,
    now: datetime = NOW,
    method: str = "GET",
    ip: str = "192.0.2.10",
    headers: Mapping[str, str] | None = None,
    ap: str = "ap1",
) -> Decision:
    request = DecisionInput(resource, method, "/some/path", ip, headers or {}, ap)
    return decide(policy, request, who, now)


@pytest.mark.parametrize(
    ("resource", "who", "kwargs", "expected"),
    [
        ("demo", None, {}, Authenticate(("password",), step_up=False)),
        ("demo", ALICE, {}, Allow(ALICE_HEADERS, 30.0)),
        ("default", None, {}, Authenticate(("password",), step_up=False)),
        ("default", BOB, {}, Allow(BOB_HEADERS, 30.0)),
        ("open", None, {}, Allow((), 30.0)),
        ("open", ALICE, {}, Allow(ALICE_HEADERS, 30.0)),
        ("nope", None, {}, Deny(30.0)),
        ("nope", ALICE, {}, Deny(30.0)),
        ("admin-app", None, {}, Authenticate(("password",), step_up=False)),
        ("admin-app", ALICE, {}, Allow(ALICE_HEADERS, 30.0)),
        ("admin-app", BOB, {}, Deny(30.0)),
        ("secure", None, {}, Authenticate(("password", "otp"), step_up=False)),
        ("secure", ALICE, {}, Authenticate(("otp",), step_up=True)),
        (
            "secure",
            session(methods=frozenset({"password", "otp"})),
            {},
            Allow((*ALICE_HEADERS[:-1], ("Remote-Auth-Methods", "password,otp")), 30),
        ),
        ("otp-only", None, {}, Authenticate(("password", "otp"), step_up=False)),
        ("cert", None, {"headers": {"x-client-cert": "CN=alice"}}, Allow((), 30.0)),
        ("cert", None, {"headers": {"x-client-cert": "CN=alice\nX"}}, Deny(30.0)),
        ("cert", None, {}, Deny(30.0)),
        ("read-only", ALICE, {"method": "HEAD"}, Allow(ALICE_HEADERS, 30.0)),
        ("read-only", ALICE, {"method": "POST"}, Deny(30.0)),
        ("read-only", None, {"method": "POST"}, Deny(30.0)),  # logging in would not help
        ("read-only", None, {"method": "GET"}, Authenticate(("password",), step_up=False)),
        ("dmz", None, {"ap": "ap2"}, Allow((), 30.0)),
        ("dmz", None, {"ap": "ap1"}, Deny(30.0)),
        ("either", None, {"ip": "10.9.9.9"}, Allow((), 30.0)),
        ("either", None, {}, Authenticate(("password",), step_up=False)),
        ("either", BOB, {}, Deny(30.0)),
    ],
)
def test_decisions(
    resource: str, who: SessionView | None, kwargs: dict[str, Any], expected: Decision
) -> None:
    assert ask(resource, who, **kwargs) == expected


def test_step_up_lists_only_the_missing_methods() -> None:
    p = policy(resources={"r": {"auth_methods": ["otp", "password"]}})
    partial = session(methods=frozenset({"password"}))
    assert ask("r", partial, policy=p) == Authenticate(("otp",), step_up=True)


GLOBAL_OFFICE = {"ip": ["10.0.0.0/8", "2001:db8::/32"]}


@pytest.mark.parametrize(
    ("resource", "who", "ip", "expected"),
    [
        ("open", None, "192.0.2.10", Deny(30.0)),
        ("open", None, "10.1.2.3", Allow((), 30.0)),
        ("open", None, "2001:db8::1", Allow((), 30.0)),
        ("open", ALICE, "192.0.2.10", Deny(30.0)),
        ("demo", None, "192.0.2.10", Deny(30.0)),  # not worth a login
        ("demo", None, "10.1.2.3", Authenticate(("password",), step_up=False)),
        ("demo", ALICE, "10.1.2.3", Allow(ALICE_HEADERS, 30.0)),
    ],
)
def test_global_rule_applies_to_every_resource(
    resource: str, who: SessionView | None, ip: str, expected: Decision
) -> None:
    p = policy(global_rule=GLOBAL_OFFICE)
    assert ask(resource, who, policy=p, ip=ip) == expected


def test_global_rule_can_require_a_session_even_for_public_resources() -> None:
    p = policy(global_rule="authenticated")
    assert ask("open", None, policy=p) == Authenticate(("password",), step_up=False)
    assert ask("open", ALICE, policy=p) == Allow(ALICE_HEADERS, 30.0)


# -- TTL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "ttl"),
    [
        (session(idle=10), 10.0),
        (session(absolute=5), 5.0),
        (session(idle=600, absolute=7), 7.0),
        (session(idle=0.25), 0.25),
        (session(idle=3600, absolute=7200), 30.0),
    ],
)
def test_allow_ttl_stops_at_session_expiry(who: SessionView, ttl: float) -> None:
    decision = ask("demo", who)
    assert isinstance(decision, Allow)
    assert decision.ttl == ttl


def test_configured_decision_ttl() -> None:
    p = policy(policy={"decision_ttl": "250ms"})
    assert ask("open", None, policy=p) == Allow((), 0.25)
    assert ask("nope", None, policy=p) == Deny(0.25)


@pytest.mark.parametrize(
    ("now", "who", "expected"),
    [
        # 12:29:48 in Stockholm: the window closes in 12 s
        (NOW.replace(minute=29, second=48), ALICE, Allow(ALICE_HEADERS, 12.0)),
        # closes in 12 s, the session idles out in 5 s
        (NOW.replace(minute=29, second=48), "idle5", Allow(ALICE_HEADERS, 5.0)),
        # 12:30:00: closed; denied until Thursday 08:00 → capped at 30 s
        (NOW.replace(minute=30), ALICE, Deny(30.0)),
        # Wednesday 07:59:50: opens in 10 s; a deny ignores the session's expiry
        (NOW.replace(hour=5, minute=59, second=50), "idle5", Deny(10.0)),
        # Friday 12:35 → next opening Monday 08:00
        (datetime(2024, 6, 14, 10, 35, tzinfo=UTC), ALICE, Deny(30.0)),
    ],
)
def test_ttl_stops_at_the_next_time_window_edge(
    now: datetime, who: SessionView | str, expected: Decision
) -> None:
    if who == "idle5":
        who = SessionView(
            "alice",
            ALICE.groups,
            ALICE.email,
            ALICE.display_name,
            ALICE.methods,
            now + timedelta(seconds=5),
            now + timedelta(hours=1),
        )
    assert isinstance(who, SessionView)
    assert ask("office-hours", who, now=now) == expected


def test_ttl_is_the_same_whatever_zone_now_is_given_in() -> None:
    at = NOW.replace(minute=29, second=48)
    for zone in ("Europe/Stockholm", "America/New_York", "Asia/Kathmandu"):
        assert ask("office-hours", ALICE, now=at.astimezone(ZoneInfo(zone))) == Allow(
            ALICE_HEADERS, 12.0
        )


def test_session_times_in_a_dst_zone_are_compared_as_instants() -> None:
    # 00:30 UTC on the night clocks go back in Stockholm is 02:30 CEST; an hour later it is
    # 02:30 CET again. Subtracting wall times in that zone would say 0 s.
    zone = ZoneInfo("Europe/Stockholm")
    now = datetime(2024, 10, 27, 0, 30, tzinfo=UTC).astimezone(zone)
    who = SessionView(
        "alice",
        frozenset(),
        None,
        None,
        frozenset({"password"}),
        (now.astimezone(UTC) + timedelta(hours=1)).astimezone(zone),
        datetime(2024, 10, 28, tzinfo=zone),
    )
    p = policy(policy={"decision_ttl": "3h"})
    expected = (("Remote-User", "alice"), ("Remote-Auth-Methods", "password"))
    assert ask("demo", who, policy=p, now=now) == Allow(expected, 3600.0)


def test_expired_session_counts_as_none() -> None:
    assert ask("demo", session(idle=0)) == Authenticate(("password",), step_up=False)
    assert ask("demo", session(idle=-1)) == Authenticate(("password",), step_up=False)
    assert ask("demo", session(absolute=0)) == Authenticate(("password",), step_up=False)
    assert ask("open", session(absolute=-5)) == Allow((), 30.0)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ask("open", now=datetime(2024, 1, 1))


# -- identity headers --------------------------------------------------------------------------


def test_identity_header_values_are_sanitised() -> None:
    who = SessionView(
        username="mallory\r\nX-Admin: yes",
        groups=frozenset({"staff\n", "a\x00dmin", "\r\n", "ops"}),
        email=" m@example.org\x7f ",
        display_name="Målle\tRy\x00",
        methods=frozenset({"password"}),
        idle_expires_at=NOW + timedelta(hours=1),
        absolute_expires_at=NOW + timedelta(hours=2),
    )
    decision = ask("demo", who)
    assert isinstance(decision, Allow)
    assert decision.headers == (
        ("Remote-User", "malloryX-Admin: yes"),
        ("Remote-Groups", "admin,ops,staff"),
        ("Remote-Email", "m@example.org"),
        ("Remote-Name", "Målle\tRy"),
        ("Remote-Auth-Methods", "password"),
    )
    for _, value in decision.headers:
        assert not any(ch in value for ch in "\r\n\x00")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain", "plain"),
        ("a\r\nb", "ab"),
        ("\x00\x01x\x1f\x7f", "x"),
        ("  padded\t", "padded"),
        ("tab\tinside", "tab\tinside"),
        ("Åsa Öberg", "Åsa Öberg"),
        ("\r\n", ""),
    ],
)
def test_header_safe(raw: str, clean: str) -> None:
    assert header_safe(raw) == clean


def test_absent_identity_values_are_left_out() -> None:
    who = session(groups=frozenset(), email=None, name="", methods=frozenset())
    assert ask("demo", who) == Allow((("Remote-User", "alice"),), 30.0)


def test_configured_identity_header_names() -> None:
    p = policy(
        identity_headers={
            "user": "X-User",
            "groups": None,
            "name": "X-Display-Name",
            "auth_methods": "X-Auth-Methods",
        }
    )
    assert ask("demo", ALICE, policy=p) == Allow(
        (
            ("X-User", "alice"),
            ("Remote-Email", "alice@example.org"),
            ("X-Display-Name", "Alice Andersson"),
            ("X-Auth-Methods", "password"),
        ),
        30.0,
    )


# -- the compiled policy and the wire form ------------------------------------------------------


def test_compiled_policy_describes_itself() -> None:
    assert POLICY.resource_ids == set(RESOURCES)
    assert POLICY.decision_headers == {"x-client-cert"}
    assert POLICY.decision_ttl == 30.0


def test_wire_forms() -> None:
    assert Allow((("Remote-User", "a"),), 12.5).to_json() == {
        "decision": "allow",
        "headers": {"Remote-User": "a"},
        "ttl": 12.5,
    }
    assert Deny(3.0).to_json() == {"decision": "deny", "ttl": 3.0}
    assert Authenticate(("password", "otp"), step_up=False).to_json("/_gatehouse/login") == {
        "decision": "authenticate",
        "methods": ["password", "otp"],
        "step_up": False,
        "login_url": "/_gatehouse/login",
    }


def test_inputs_and_outputs_are_frozen() -> None:
    request = DecisionInput("demo", "GET", "/", "10.0.0.1")
    with pytest.raises(AttributeError):
        request.resource = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Deny(1.0).ttl = 2.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ALICE.username = "bob"  # type: ignore[misc]

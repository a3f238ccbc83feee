"""The Policy service's config: defaults, the documented example, errors with exact paths."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gatehouse.config.loader import load_file, validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.policy.decision import (
    Allow,
    Authenticate,
    DecisionInput,
    compile_policy,
    decide,
)

EXAMPLE = """\
policy:
  id: ps1
  listen: 127.0.0.1:8101
  authentication: ["http://127.0.0.1:8201"]   # ordered endpoint list (the failover client)
  session_db: null            # URL; null = from the installation's home (--home)
  trusted_proxies: [127.0.0.0/8]   # APs whose X-Forwarded-For/Proto the portal believes
  admin_token_file: null      # file holding the bearer token for the admin session API
  decision_ttl: 30s
sessions:
  cookie_name: gatehouse_session
  cookie_domain: null
  idle_timeout: 30m
  absolute_timeout: 12h
login:
  portal_prefix: /_gatehouse/     # where the AP relays the portal
  title: Gatehouse
identity_headers: {user: Remote-User, groups: Remote-Groups, email: Remote-Email, name: Remote-Name}
rules:                            # named rules
  staff: {groups_any: [staff]}
  office-hours:
    time: {days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00", timezone: Europe/Stockholm}
global_rule: public               # applies to every resource (default public)
resources:                        # resource id -> rule (default: authenticated)
  demo: authenticated
  admin-app: {all: [{rule: staff}, {auth_methods: [password]}]}
  wiki:
"""


def test_defaults() -> None:
    config = validate(PolicyConfig, {})
    assert config.policy.id == "ps1"
    assert config.policy.listen == "127.0.0.1:8101"
    assert config.policy.authentication == ["http://127.0.0.1:8201"]
    assert config.policy.session_db is None
    assert config.policy.trusted_proxies == []  # over mTLS an AP is believed by certificate
    assert config.policy.admin_token_file is None
    assert config.policy.decision_ttl == 30.0
    assert config.sessions.cookie_name == "gatehouse_session"
    assert config.sessions.cookie_domain is None
    assert (config.sessions.idle_timeout, config.sessions.absolute_timeout) == (1800.0, 43200.0)
    assert (config.login.portal_prefix, config.login.title) == ("/_gatehouse/", "Gatehouse")
    names = config.identity_headers
    assert (names.user, names.groups, names.email, names.name) == (
        "Remote-User",
        "Remote-Groups",
        "Remote-Email",
        "Remote-Name",
    )
    assert (config.rules, config.global_rule, config.resources) == ({}, "public", {})


def test_documented_example_loads_and_compiles(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    config = load_file(PolicyConfig, path)
    assert config.sessions.idle_timeout == 1800.0
    assert config.sessions.absolute_timeout == 12 * 3600.0
    assert config.policy.trusted_proxies == [ipaddress.ip_network("127.0.0.0/8")]
    assert config.resources["wiki"] is None
    policy = compile_policy(config)
    assert policy.resource_ids == {"demo", "admin-app", "wiki"}
    now = datetime(2024, 6, 12, 10, tzinfo=UTC)
    request = DecisionInput("wiki", "GET", "/", "127.0.0.1")
    assert decide(policy, request, None, now) == Authenticate(("password",), step_up=False)


def test_settings_accept_other_values() -> None:
    config = validate(
        PolicyConfig,
        {
            "policy": {
                "listen": "[::1]:9000",
                "authentication": ["http://10.0.0.1:8201", "https://auth2.internal"],
                "session_db": "postgresql+asyncpg://gh@db1,db2/sessions",
                "trusted_proxies": ["10.0.0.0/8", "2001:db8::/32"],
                "admin_token_file": "/etc/gatehouse/admin-token",
                "decision_ttl": "250ms",
            },
            "sessions": {"idle_timeout": "12h", "absolute_timeout": "12h", "cookie_domain": ".ex"},
            "identity_headers": {"email": None},
        },
    )
    assert config.policy.decision_ttl == 0.25
    assert config.sessions.idle_timeout == config.sessions.absolute_timeout
    assert config.identity_headers.email is None


def problems(data: object) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate(PolicyConfig, data)
    return info.value.problems


STAFF = {"staff": {"groups_any": ["staff"]}}


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            {"rules": STAFF, "resources": {"admin-app": {"all": [{"rule": "stafff"}, "public"]}}},
            "resources.admin-app.all[0].rule",
            "unknown rule 'stafff'",
        ),
        (
            {"rules": {"a": {"rule": "b"}, "b": {"any": ["public", {"rule": "a"}]}}},
            "rules.b.any[1].rule",
            "rule cycle: a -> b -> a",
        ),
        (
            {"rules": {"cert": {"header": {"name": "X-Client-Cert", "matches": "^CN=(.*$"}}}},
            "rules.cert.header.matches",
            "invalid regular expression: missing ), unterminated subpattern at position 4",
        ),
        (
            {"resources": {"lan": {"ip": ["10.0.0.0/8", "192.168.0.0/33"]}}},
            "resources.lan.ip[1]",
            "not an IP network: '192.168.0.0/33' (use CIDR, e.g. 10.0.0.0/8)",
        ),
        (
            {"global_rule": {"time": {"timezone": "Europe/Stockhom"}}},
            "global_rule.time.timezone",
            "unknown time zone 'Europe/Stockhom' (use an IANA name, e.g. Europe/Stockholm)",
        ),
        (
            {"rules": {"weekdays": {"time": {"days": ["mon", "tues"]}}}},
            "rules.weekdays.time.days[1]",
            "unknown day 'tues' (use mon, tue, wed, thu, fri, sat, sun)",
        ),
        (
            {"rules": {"staff": {"any": [{"users": ["a"]}, {"groups_any": "staff"}]}}},
            "rules.staff.any[1].groups_any",
            "expected a non-empty list of group names",
        ),
        (
            {"sessions": {"idle_timeout": "13h"}},
            "sessions.idle_timeout",
            "must not exceed absolute_timeout (46800s > 43200s)",
        ),
        (
            {"sessions": {"idle_timeout": "2h", "absolute_timeout": "1h"}},
            "sessions.idle_timeout",
            "must not exceed absolute_timeout (7200s > 3600s)",
        ),
        (
            {"policy": {"trusted_proxies": ["127.0.0.0/8", "10.0.0.0/99"]}},
            "policy.trusted_proxies[1]",
            "not an IP network: '10.0.0.0/99' (use CIDR, e.g. 10.0.0.0/8)",
        ),
        ({"policy": {"decision_ttl": 0}}, "policy.decision_ttl", "greater than 0"),
        ({"policy": {"decision_ttl": "soon"}}, "policy.decision_ttl", "not a duration"),
        ({"sessions": {"idle_timeout": "0s"}}, "sessions.idle_timeout", "greater than 0"),
        ({"sessions": {"absolute_timeout": -1}}, "sessions.absolute_timeout", "greater than 0"),
        ({"policy": {"listen": "8101"}}, "policy.listen", "not HOST:PORT"),
        ({"policy": {"authentication": []}}, "policy.authentication", "at least 1"),
        (
            {"policy": {"authentication": ["http://a:8201", "auth2:8201"]}},
            "policy.authentication[1]",
            "not a URL",
        ),
        ({"policy": {"session_db": "sessions.db"}}, "policy.session_db", "not a database URL"),
        ({"policy": {"colour": "red"}}, "policy.colour", "unknown field"),
        ({"sessions": {"cookie_name": "my cookie"}}, "sessions.cookie_name", "cookie name"),
        ({"login": {"portal_prefix": "/login"}}, "login.portal_prefix", "start and end"),
        ({"identity_headers": {"user": "Remote User"}}, "identity_headers.user", "header name"),
        ({"identity_headers": {"name": "remote-user"}}, "identity_headers.name", "same header"),
        ({"rules": {"bad name": "public"}}, "rules.bad name", "not a rule name"),
        ({"rules": {"public": "authenticated"}}, "rules.public", "built-in rule"),
        ({"resources": {"Admin": "public"}}, "resources.Admin", "not a resource id"),
    ],
)
def test_errors_name_the_exact_field(data: object, path: str, message: str) -> None:
    found = problems(data)
    assert len(found) == 1, found
    assert found[0][0] == path
    assert message in found[0][1]


def test_every_rule_problem_is_reported() -> None:
    found = problems(
        {
            "rules": {"a": {"rule": "a"}, "t": {"time": {"from": 1080, "timezone": "Nowhere"}}},
            "resources": {"x": {"rule": "nope"}, "y": {"not": {"colour": 1}}},
        }
    )
    assert [path for path, _ in found] == [
        "rules.a.rule",
        "rules.t.time.from",
        "rules.t.time.timezone",
        "resources.x.rule",
        "resources.y.not.colour",
    ]


def test_error_file_rendering(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "rules:\n  staff: {groups_any: [staff]}\n"
        "resources:\n  admin-app: {all: [{rule: stafff}]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_file(PolicyConfig, path)
    assert str(info.value) == f"{path}: resources.admin-app.all[0].rule: unknown rule 'stafff'"


def test_unquoted_yaml_times_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("global_rule: {time: {from: '08:00', to: 18:00}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_file(PolicyConfig, path)
    assert info.value.problems == [
        ("global_rule.time.to", 'not a time: 1080 (write times as quoted strings, e.g. "18:00")')
    ]


def test_compile_policy_checks_rules_of_unvalidated_models() -> None:
    config = PolicyConfig.model_construct(
        policy=validate(PolicyConfig, {}).policy,
        identity_headers=validate(PolicyConfig, {}).identity_headers,
        rules={},
        global_rule="public",
        resources={"app": {"rule": "ghost"}},
    )
    with pytest.raises(ConfigError) as info:
        compile_policy(config, source="draft")
    assert str(info.value) == "draft: resources.app.rule: unknown rule 'ghost'"


def test_null_resource_rule_means_authenticated() -> None:
    policy = compile_policy(validate(PolicyConfig, {"resources": {"app": None}}))
    now = datetime(2024, 6, 12, tzinfo=UTC)
    request = DecisionInput("app", "GET", "/", "10.0.0.1")
    assert decide(policy, request, None, now) == Authenticate(("password",), step_up=False)
    public = compile_policy(validate(PolicyConfig, {"resources": {"app": "public"}}))
    assert decide(public, request, None, now) == Allow((), 30.0)


@pytest.mark.parametrize(
    "code",
    [
        "import gatehouse.config.policy",
        "import gatehouse.policy",
        "import gatehouse.policy.decision",
        "import gatehouse.policy.rules_compile",
    ],
)
def test_modules_import_in_any_order(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)

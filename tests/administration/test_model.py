"""InstallationConfig: a valid HA installation, and every cross-field error with its path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gatehouse.administration.model import (
    InstallationConfig,
    distribution_of,
    listen_from_endpoint,
    outbox_db_of,
)
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError
from tests.administration.samples import OUTBOX_PG, PG, SESSION_PG, ha, minimal

Doc = dict[str, Any]


def problems(doc: Doc) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(InstallationConfig, doc)
    return [f"{path}: {message}" for path, message in info.value.problems]


def test_the_ha_sample_is_valid() -> None:
    config = validate(InstallationConfig, ha())
    assert [s.id for s in config.services] == [
        *("ap1", "ap2", "ap3", "ps1", "ps2", "auth1", "auth2", "dist1", "dist2")
    ]
    assert config.access_points[1].policy_services == ["ps2", "ps1"]
    assert config.policy_services[1].authentication == ["auth2", "auth1"]
    assert config.public_resources() == {"status"}
    assert config.database_of("ps1") == PG
    assert config.database_of("ps2") == SESSION_PG
    assert config.database_of("auth1") == PG
    assert outbox_db_of(config, "dist1") == (("databases", "outbox_db"), OUTBOX_PG)
    assert [c.name for c in config.distribution.channels] == ["mail", "sms"]


def test_an_empty_installation_is_valid() -> None:
    config = validate(InstallationConfig, {})
    assert config.services == []
    assert config.global_rule == "public"


def test_the_model_is_frozen() -> None:
    config = validate(InstallationConfig, minimal())
    with pytest.raises(Exception, match="frozen"):
        config.global_rule = "authenticated"  # type: ignore[misc]


def drop_service(service_id: str) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        doc["services"] = [s for s in doc["services"] if s["id"] != service_id]

    return mutate


def set_path(path: str, value: object) -> Callable[[Doc], None]:
    """``set_path("access_points.0.policy_services.1", "ps9")``."""

    def mutate(doc: Doc) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


CASES: list[tuple[str, Callable[[Doc], None], list[str]]] = [
    (
        "unknown policy service in an AP's list",
        set_path("access_points.0.policy_services.1", "ps9"),
        ["access_points[0].policy_services[1]: unknown policy service 'ps9'"],
    ),
    (
        "an authentication service where a policy service belongs",
        set_path("access_points.1.policy_services.0", "auth1"),
        [
            "access_points[1].policy_services[0]: 'auth1' is an authentication service, "
            "not a policy service"
        ],
    ),
    (
        "a policy service listed twice",
        set_path("access_points.0.policy_services", ["ps1", "ps2", "ps1"]),
        ["access_points[0].policy_services[2]: 'ps1' is listed twice"],
    ),
    (
        "unknown authentication service in a PS's list",
        set_path("policy_services.0.authentication.1", "auth9"),
        ["policy_services[0].authentication[1]: unknown authentication service 'auth9'"],
    ),
    (
        "a policy service where an authentication service belongs",
        set_path("policy_services.1.authentication.0", "ps1"),
        [
            "policy_services[1].authentication[0]: 'ps1' is a policy service, "
            "not an authentication service"
        ],
    ),
    (
        "duplicate service id",
        lambda doc: doc["services"].append(
            {"id": "auth1", "role": "authentication", "endpoint": "http://h:1", "node": "int2"}
        ),
        ["services[9].id: duplicate service id 'auth1'"],
    ),
    (
        "two services on one endpoint",
        set_path("services.6.endpoint", "http://10.0.1.11:8201/"),
        ["services[6].endpoint: same endpoint as service 'auth1'"],
    ),
    (
        "an AP without an entry",
        lambda doc: doc["access_points"].pop(2),
        ["services[2]: access point 'ap3' has no entry in access_points"],
    ),
    (
        "an entry for a policy service under access_points",
        set_path("access_points.2.id", "ps1"),
        [
            "access_points[2].id: 'ps1' is a policy service, not an access point",
            "services[2]: access point 'ap3' has no entry in access_points",
        ],
    ),
    (
        "two entries for one PS",
        set_path("policy_services.1.id", "ps1"),
        [
            "policy_services[1].id: duplicate entry for 'ps1'",
            "services[4]: policy service 'ps2' has no entry in policy_services",
        ],
    ),
    (
        "an authentication entry for an unknown service",
        set_path("authentication_services.0.id", "auth7"),
        ["authentication_services[0].id: unknown authentication service 'auth7'"],
    ),
    (
        "a service removed but still referenced",
        drop_service("ps2"),
        [
            "policy_services[1].id: unknown policy service 'ps2'",
            "access_points[0].policy_services[1]: unknown policy service 'ps2'",
            "access_points[1].policy_services[0]: unknown policy service 'ps2'",
        ],
    ),
    (
        "a rule for an unknown resource",
        set_path("resource_rules.wikki", "authenticated"),
        ["resource_rules.wikki: no resource with id 'wikki'"],
    ),
    (
        "a rule naming an unknown rule",
        set_path("resource_rules.wiki", {"rule": "opps"}),
        ["resource_rules.wiki.rule: unknown rule 'opps'"],
    ),
    (
        "an unknown access point in a rule",
        set_path(
            "resource_rules.finance",
            {"all": [{"rule": "finance-team"}, {"access_point": ["ap1", "ap7"]}]},
        ),
        ["resource_rules.finance.all[1].access_point[1]: unknown access point 'ap7'"],
    ),
    (
        "a policy service id in an access_point condition",
        set_path("rules.via-ps", {"access_point": ["ps1"]}),
        ["rules.via-ps.access_point[0]: unknown access point 'ps1'"],
    ),
    (
        "duplicate resource id",
        lambda doc: doc["resources"].append({"id": "wiki", "backends": ["http://x:1"]}),
        ["resources[4].id: duplicate resource id 'wiki'"],
    ),
    (
        "public set on a resource",
        set_path("resources.0.public", True),
        ["resources[0].public: decided by the rules: write resource_rules: {wiki: public} instead"],
    ),
    (
        "a derived AP setting",
        set_path("access_points.0.session_cookie", "other"),
        [
            "access_points[0].session_cookie: set for every Access Point by "
            "sessions.cookie_name; remove it here"
        ],
    ),
    (
        "decision headers set on an AP",
        set_path("access_points.2.decision_headers", ["X-Team"]),
        [
            "access_points[2].decision_headers: set for every Access Point by the header "
            "conditions of the rules; remove it here"
        ],
    ),
    (
        "an AP without policy services while resources are protected",
        set_path("access_points.2.policy_services", []),
        [
            "access_points[2].policy_services: empty, but these resources need a Policy "
            "service: wiki, intranet, finance"
        ],
    ),
    (
        "services on several nodes without a shared database",
        lambda doc: doc.pop("databases"),
        [
            "databases: authentication services on several nodes (auth1 on int1, auth2 on int2) "
            "must share their users and lockout counters: set user_db to a PostgreSQL URL",
            "databases.outbox_db: distribution services on several nodes (dist1 on int1, dist2 "
            "on int2) must share their outbox: set outbox_db to a PostgreSQL URL",
        ],
    ),
    (
        "a SQLite database for services on several nodes",
        set_path(
            "databases", {"user_db": "sqlite+aiosqlite:///gatehouse.db", "outbox_db": OUTBOX_PG}
        ),
        [
            "databases.user_db: SQLite cannot be shared across nodes (auth1 on int1, auth2 on "
            "int2); use PostgreSQL",
        ],
    ),
    (
        "a field error inside a reused model",
        set_path("resources.2.backends.0", "ftp://x"),
        ["resources[2].backends[0]: not a URL: 'ftp://x' (expected http://host[:port][/path])"],
    ),
    (
        "an unknown field",
        set_path("access_points.0.colour", "blue"),
        ["access_points[0].colour: unknown field"],
    ),
    (
        "a bad role",
        set_path("services.0.role", "gateway"),
        [
            "services[0].role: must be one of: access_point, policy, authentication, "
            "distribution; got 'gateway'",
        ],
    ),
    (
        "a bad service id",
        set_path("services.0.id", "AP 1"),
        ["services[0].id: not an id: 'AP 1' (lowercase letters, digits, '.', '_', '-')"],
    ),
    (
        "a distribution entry for another role",
        set_path("distribution_services.0.id", "auth1"),
        [
            "distribution_services[0].id: 'auth1' is an authentication service, "
            "not a distribution service"
        ],
    ),
    (
        "an unknown distribution service for an authentication service",
        set_path("authentication_services.0.distribution", ["dist9"]),
        ["authentication_services[0].distribution[0]: unknown distribution service 'dist9'"],
    ),
    (
        "a policy service as an authentication service's distribution service",
        set_path("authentication_services.0.distribution", ["dist1", "ps1", "dist1"]),
        [
            "authentication_services[0].distribution[1]: 'ps1' is a policy service, "
            "not a distribution service",
            "authentication_services[0].distribution[2]: 'dist1' is listed twice",
        ],
    ),
    (
        "a distribution service's endpoint with a path",
        set_path("services.7.endpoint", "http://10.0.1.11:8301/dist"),
        [
            "services[7].endpoint: a distribution service's endpoint is "
            "http(s)://HOST[:PORT], no path"
        ],
    ),
    (
        "one SQLite outbox for distribution services on several nodes",
        set_path("databases.outbox_db", "sqlite+aiosqlite:///outbox.db"),
        [
            "databases.outbox_db: SQLite cannot be shared across nodes (dist1 on int1, dist2 "
            "on int2); use PostgreSQL"
        ],
    ),
    (
        "a channel password inline (credentials are files on the Distribution node)",
        set_path("distribution.channels.0.password", "hunter2"),
        ["distribution.channels[0].smtp.password: unknown field"],
    ),
    (
        "an SMS gateway token inline",
        set_path("distribution.channels.1.token", "tok-123"),
        ["distribution.channels[1].http_sms.token: unknown field"],
    ),
    (
        "an Authorization header on an SMS channel",
        set_path("distribution.channels.1.headers", {"Authorization": "Bearer tok-123"}),
        [
            "distribution.channels[1].http_sms.headers: Authorization: set by the channel "
            "(auth, the idempotency key)"
        ],
    ),
    (
        "two channels of one name",
        set_path("distribution.channels.1.name", "mail"),
        ["distribution.channels: channel names given twice: mail"],
    ),
    (
        "a PS without authentication services",
        set_path("policy_services.0.authentication", []),
        ["policy_services[0].authentication: must have at least 1 item, got 0"],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_errors_name_the_field(mutate: Callable[[Doc], None], expected: list[str]) -> None:
    doc = ha()
    mutate(doc)
    assert sorted(problems(doc)) == sorted(expected)


def test_a_resource_without_a_rule_is_authenticated() -> None:
    config = validate(InstallationConfig, minimal())
    assert config.resource_rules_of_all() == {"demo": None}
    assert config.public_resources() == frozenset()


def test_a_non_public_global_rule_makes_every_resource_protected() -> None:
    doc = ha()
    doc["global_rule"] = {"rule": "internal"}
    assert validate(InstallationConfig, doc).public_resources() == frozenset()


def test_policy_services_on_several_nodes_need_a_shared_session_database() -> None:
    doc = ha()
    del doc["policy_services"][1]["session_db"]
    doc["databases"] = {
        "user_db": "sqlite+aiosqlite:///users.db",
        "session_db": None,
        "outbox_db": OUTBOX_PG,
    }
    for service in doc["services"]:
        if service["role"] == "authentication":
            service["node"] = "int1"
    assert problems(doc) == [
        "databases.user_db: SQLite cannot be shared across nodes (ps1 on int1, ps2 on int2); "
        "use PostgreSQL"
    ]


def test_all_services_on_one_node_may_share_the_default_database() -> None:
    doc = ha()
    del doc["databases"]
    for service in doc["services"]:
        service["node"] = "single"
    validate(InstallationConfig, doc)


def test_the_error_message_lists_every_problem() -> None:
    doc = ha()
    doc["access_points"][0]["policy_services"][1] = "ps9"
    doc["resource_rules"]["nope"] = "public"
    with pytest.raises(ConfigError) as info:
        validate(InstallationConfig, doc, "draft")
    assert sorted(str(info.value).splitlines()) == [
        "draft: access_points[0].policy_services[1]: unknown policy service 'ps9'",
        "draft: resource_rules.nope: no resource with id 'nope'",
    ]


@pytest.mark.parametrize(
    ("endpoint", "listen"),
    [
        ("http://10.0.0.1:8080", "10.0.0.1:8080"),
        ("http://ap.example", "ap.example:80"),
        ("https://ap.example", "ap.example:443"),
        ("http://[2001:db8::1]:9000/", "[2001:db8::1]:9000"),
    ],
)
def test_listen_from_endpoint(endpoint: str, listen: str) -> None:
    assert listen_from_endpoint(endpoint) == listen


def test_distribution_services_per_authentication_service() -> None:
    doc = ha()
    config = validate(InstallationConfig, doc)
    assert distribution_of(config, "auth1") == ["dist1", "dist2"]  # services order
    doc["authentication_services"].append({"id": "auth1", "distribution": ["dist2"]})
    doc["authentication_services"][0]["distribution"] = []  # auth2: sends no codes
    config = validate(InstallationConfig, doc)
    assert (distribution_of(config, "auth1"), distribution_of(config, "auth2")) == (["dist2"], [])


def test_distribution_services_on_several_nodes_share_one_outbox() -> None:
    doc = ha()
    del doc["databases"]["outbox_db"]  # each node's own HOME/outbox.db: two outboxes
    assert problems(doc) == [
        "databases.outbox_db: distribution services on several nodes (dist1 on int1, dist2 "
        "on int2) must share their outbox: set outbox_db to a PostgreSQL URL"
    ]
    doc["services"][-1]["node"] = "int1"  # one node: one HOME/outbox.db
    validate(InstallationConfig, doc)


def test_a_distribution_service_may_override_its_outbox() -> None:
    doc = ha()
    doc["distribution_services"][0]["outbox_db"] = "sqlite+aiosqlite:///mine.db"
    config = validate(InstallationConfig, doc)
    assert outbox_db_of(config, "dist2") == (
        ("distribution_services", 0, "outbox_db"),
        "sqlite+aiosqlite:///mine.db",
    )
    assert outbox_db_of(config, "dist1")[1] == OUTBOX_PG
    del doc["databases"]["outbox_db"]  # dist1: its node's own default
    assert outbox_db_of(validate(InstallationConfig, doc), "dist1")[1] is None

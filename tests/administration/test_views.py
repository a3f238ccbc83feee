"""Each service's view: valid for the service's own model, in its order, and an AP view
carries no secrets, no user data and no database URLs."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from gatehouse.administration.canonical import canonical_json
from gatehouse.administration.errors import UnknownService
from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.views import all_views, view_for
from gatehouse.authentication.config import AuthenticationConfig
from gatehouse.config.access_point import AccessPointConfig
from gatehouse.config.loader import validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.distribution.config import DistributionConfig, SmtpChannel
from gatehouse.errors import ConfigError
from tests.administration.samples import OUTBOX_PG, PG, RULE_USERS, SESSION_PG, ha, minimal

MODELS = {
    "access_point": AccessPointConfig,
    "policy": PolicyConfig,
    "authentication": AuthenticationConfig,
    "distribution": DistributionConfig,
}


def everything_set() -> dict[str, Any]:
    """The HA sample with every optional setting that could leak something filled in."""
    doc = ha()
    doc["login"]["csrf_key_file"] = "/etc/gatehouse/csrf.key"
    doc["login"]["allowed_redirect_hosts"] = ["*.example"]
    doc["policy_services"][0]["admin_token_file"] = "/etc/gatehouse/admin.token"
    doc["authentication_services"].append(
        {"id": "auth1", "user_db": SESSION_PG, "verify_queue": 8, "distribution": ["dist2"]}
    )
    doc["distribution_services"].append(
        {"id": "dist1", "outbox_keyring": "/etc/gatehouse/outbox.key"}
    )
    doc["distribution"]["channels"][1].update(
        auth="basic",
        username="gw",
        password_file="sms-password",
        token_file=None,
        headers={"X-Account": "corp"},
        success_pattern='"ok": ?true',
    )
    doc["distribution"]["channels"].append(
        {
            "type": "smtp",
            "name": "backup",
            "host": "10.0.3.1",
            "port": 465,
            "security": "tls",
            "username": "relay",
            "password_file": "relay-password",
            "sender": "sso@example.org",
            "ca_file": "/etc/ssl/relay-ca.pem",
        }
    )
    doc["authentication"] = {
        "lockout": {"account_max_failures": 3, "account_lock": "30m"},
        "password_hash": {"memory_kib": 65536, "time_cost": 2},
    }
    doc["rules"]["night"] = {"time": {"from": "22:00", "to": "06:00", "timezone": "UTC"}}
    doc["resource_rules"]["intranet"] = {"not": {"users": ["mallory.x"]}}
    doc["resources"][0]["ca_file"] = "/etc/ssl/internal-ca.pem"
    # The AP's own TLS key: a path on the AP's host, never the key itself.
    doc["access_points"][0]["tls"] = {
        "certificates": [
            {"cert_file": "/etc/gatehouse/tls/ap1.crt", "key_file": "/etc/gatehouse/tls/ap1.key"}
        ],
        "redirect_listen": "0.0.0.0:80",
    }
    return doc


CONFIGS = {"ha": ha, "minimal": minimal, "everything": everything_set}


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest) -> InstallationConfig:
    return validate(InstallationConfig, CONFIGS[request.param]())


def test_every_view_validates_with_the_services_own_model(config: InstallationConfig) -> None:
    views = all_views(config)
    assert list(views) == [s.id for s in config.services]
    for service in config.services:
        view = views[service.id]
        validate(MODELS[service.role], view, service.id)
        canonical_json(view)  # signable as is
        assert orjson.loads(orjson.dumps(view)) == view


# The Access Point's view


FORBIDDEN_KEY_PARTS = (
    "password",
    "secret",
    "token",
    "key",
    "db",
    "database",
    "dsn",
    "user_db",
    "session_db",
)
FORBIDDEN_VALUE_PREFIXES = ("postgresql", "sqlite")


def rule_user_names(doc: Any) -> set[str]:
    """Every name under a ``users:`` condition anywhere in the document."""
    found: set[str] = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "users" and isinstance(value, list):
                found.update(v for v in value if isinstance(v, str))
            else:
                found |= rule_user_names(value)
    elif isinstance(doc, list):
        for item in doc:
            found |= rule_user_names(item)
    return found


TLS_KEY_FILE = re.compile(r"^\$\.access_point\.tls\.certificates\[\d+\]\.key_file$")


def tls_key_path(path: str, value: Any) -> bool:
    """The AP's own TLS key, named by an absolute path on its host: the one secret an AP
    holds is read there, and the view carries only where it is (never PEM text)."""
    return (
        bool(TLS_KEY_FILE.match(path))
        and isinstance(value, str)
        and value.startswith("/")
        and "-----BEGIN" not in value
        and "\n" not in value
    )


def leaks(value: Any, users: set[str], path: str = "$") -> list[str]:
    """Every key or value in ``value`` that looks like a secret, user data or a DB URL."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            lowered = key.lower()
            if tls_key_path(f"{path}.{key}", item):
                continue
            found += [f"{path}.{key}: key has {p!r}" for p in FORBIDDEN_KEY_PARTS if p in lowered]
            found += leaks(item, users, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += leaks(item, users, f"{path}[{index}]")
    elif isinstance(value, str):
        lowered = value.lower()
        if lowered.startswith(FORBIDDEN_VALUE_PREFIXES) or "@" in value:
            found.append(f"{path}: looks like a database URL: {value!r}")
        found += [f"{path}: names user {user!r}" for user in users if user.lower() in lowered]
    return found


def test_no_access_point_view_holds_secrets_users_or_database_urls(
    config: InstallationConfig,
) -> None:
    source = config.model_dump(mode="json")
    users = rule_user_names(source)
    if config.rules:
        assert set(RULE_USERS) <= users
    aps = [s.id for s in config.services if s.role == "access_point"]
    assert aps
    for ap in aps:
        view = view_for(config, ap)
        assert leaks(view, users) == [], ap
        text = orjson.dumps(view).decode()
        for secret in ("s3cret-pw", "other-pw", "admin.token", "csrf.key", "mallory"):
            assert secret not in text
        for distribution in CHANNEL_TRACES:
            assert distribution not in text
        assert "rules" not in text
        assert "sessions" not in view


#: What a channel configuration leaves in a document: only Distribution views may hold it.
CHANNEL_TRACES = (
    "channels",
    "smtp.example",
    "sms.example",
    "smtp-password",
    "sms-password",
    "relay-password",
    "sms-token",
    "noreply@",
    "outbox",
    "gatehouse_dist",
)


def test_only_distribution_views_hold_channels_and_the_outbox(config: InstallationConfig) -> None:
    for service in config.services:
        text = orjson.dumps(view_for(config, service.id)).decode()
        if service.role == "distribution":
            assert set(view_for(config, service.id)) == {"distribution"}
            continue
        assert [t for t in CHANNEL_TRACES if t in text] == [], service.id
        assert "delivery" not in text, service.id


def test_distribution_views() -> None:
    config = validate(InstallationConfig, everything_set())
    dist1, dist2 = (
        validate(DistributionConfig, view_for(config, d)).distribution for d in ("dist1", "dist2")
    )
    assert (dist1.id, dist1.listen, dist1.outbox_db) == ("dist1", "10.0.1.11:8301", OUTBOX_PG)
    assert (dist2.id, dist2.listen, dist2.outbox_db) == ("dist2", "0.0.0.0:8301", OUTBOX_PG)
    assert (dist1.outbox_keyring, dist2.outbox_keyring) == ("/etc/gatehouse/outbox.key", None)
    for dist in (dist1, dist2):
        assert [c.name for c in dist.channels] == ["mail", "sms", "backup"]  # the order given
        assert (dist.delivery.workers, dist.delivery.lease) == (2, 20.0)
        mail = dist.channels[0]
        assert isinstance(mail, SmtpChannel)
        assert (mail.username, mail.password_file) == ("gatehouse", "/etc/gatehouse/smtp-password")
    doc = ha() | {"distribution_services": [], "databases": {"user_db": PG}}
    doc["services"] = [s for s in doc["services"] if s["id"] != "dist2"]  # one node's default
    plain = validate(InstallationConfig, doc)
    view = view_for(plain, "dist1")["distribution"]
    assert (view["outbox_db"], view["listen"]) == (None, "10.0.1.11:8301")  # the node's default


def test_authentication_views_name_the_distribution_services_preferred_first() -> None:
    config = validate(InstallationConfig, everything_set())
    urls = {a: view_for(config, a)["authentication"]["distribution"] for a in ("auth1", "auth2")}
    # auth1 lists dist2 only; auth2 has no list: every distribution service, services order.
    assert urls == {
        "auth1": ["http://10.0.1.12:8301"],
        "auth2": ["http://10.0.1.11:8301", "http://10.0.1.12:8301"],
    }
    assert (
        view_for(validate(InstallationConfig, minimal()), "auth1")["authentication"]["distribution"]
        == []
    )


def test_authentication_views_carry_the_code_and_invitation_settings() -> None:
    doc = ha()
    doc["authentication"]["codes"] = {"length": 8, "lifetime": "10m", "resend_interval": "1m"}
    doc["authentication"]["invitations"] = {"base_url": "https://sso.example"}
    config = validate(InstallationConfig, doc)
    for auth_id in ("auth1", "auth2"):
        auth = validate(AuthenticationConfig, view_for(config, auth_id)).authentication
        assert (auth.codes.length, auth.codes.lifetime, auth.codes.resend_interval) == (
            8,
            600.0,
            60.0,
        )
        # The link's path is the portal's: login.portal_prefix, written once.
        assert (auth.invitations.base_url, auth.invitations.portal_prefix) == (
            "https://sso.example",
            "/_sso/",
        )
    doc["authentication"]["invitations"]["portal_prefix"] = "/_sso/"
    with pytest.raises(ConfigError, match=r"authentication.invitations.portal_prefix: set for"):
        validate(InstallationConfig, doc)


def test_no_view_and_no_stored_document_holds_a_channel_secret() -> None:
    """Channel credentials are file names on the Distribution nodes: the installation
    document (what the Admin DB stores) and every view carry where, never what."""
    config = validate(InstallationConfig, everything_set())
    documents = [config.model_dump(mode="json"), *all_views(config).values()]
    for document in documents:
        for path, value in secret_fields(document):
            assert path.endswith(("password_file", "token_file", "keyring")), path
            assert value is None or (isinstance(value, str) and "\n" not in value), path
    fields = {p.rsplit(".", 1)[-1] for d in documents for p, _ in secret_fields(d)}
    assert {"password_file", "token_file"} <= fields


def secret_fields(value: Any, path: str = "$") -> list[tuple[str, Any]]:
    """Every key in a channel (or anywhere below ``distribution``) that names a credential."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            if "distribution" in path and any(
                p in key.lower() for p in ("password", "token", "secret", "key")
            ):
                found.append((here, item))
            found += secret_fields(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += secret_fields(item, f"{path}[{index}]")
    return found


def test_the_leak_walk_finds_what_policy_and_authentication_views_hold() -> None:
    config = validate(InstallationConfig, everything_set())
    users = rule_user_names(config.model_dump(mode="json"))
    assert {"alice.ops", "bob.admin", "carol.finance", "mallory.x"} <= users
    ps = "\n".join(leaks(view_for(config, "ps2"), users))
    assert "$.policy.session_db: key has 'db'" in ps
    assert "$.policy.admin_token_file: key has 'token'" in ps
    assert "looks like a database URL" in ps
    assert "names user 'alice.ops'" in ps
    auth = "\n".join(leaks(view_for(config, "auth1"), users))
    assert "$.authentication.user_db: key has 'user_db'" in auth
    assert "$.authentication.password_hash: key has 'password'" in auth


def ap(config: InstallationConfig, ap_id: str) -> dict[str, Any]:
    return validate(AccessPointConfig, view_for(config, ap_id)).model_dump(mode="json")


def test_access_point_views() -> None:
    config = validate(InstallationConfig, ha())
    ap1, ap2, ap3 = (ap(config, a)["access_point"] for a in ("ap1", "ap2", "ap3"))
    assert ap1["policy_services"] == ["http://10.0.1.11:8101", "http://10.0.1.12:8101"]
    assert ap2["policy_services"] == ["http://10.0.1.12:8101", "http://10.0.1.11:8101"]
    assert ap3["policy_services"] == ["http://10.0.1.11:8101"]
    assert (ap1["id"], ap1["listen"], ap1["workers"]) == ("ap1", "10.0.0.11:8080", 4)
    assert (ap2["listen"], ap2["trusted_proxies"]) == ("10.0.0.12:8080", ["10.0.0.0/24"])
    assert ap3["listen"] == "0.0.0.0:8443"
    for settings in (ap1, ap2, ap3):
        assert settings["session_cookie"] == "corp_session"
        assert settings["reserved_prefix"] == "/_sso/"
        assert settings["decision_headers"] == ["x-team"]
    assert ap1["identity_headers"] == [
        "Remote-User",
        "Remote-Groups",
        "Remote-Email",
        "Remote-Name",
        "Gatehouse-Assertion",
        "Remote-Auth-Methods",
        "X-Auth-User",
        "X-Auth-Groups",
    ]
    assert ap3["identity_headers"] == [
        "X-Remote-User",
        "X-Auth-User",
        "X-Auth-Groups",
        "Remote-Email",
        "Remote-Name",
        "Gatehouse-Assertion",
        "Remote-Auth-Methods",
    ]


def test_resources_are_public_exactly_when_their_rule_is_public() -> None:
    config = validate(InstallationConfig, ha())
    resources = ap(config, "ap1")["resources"]
    assert [(r["id"], r["public"]) for r in resources] == [
        ("wiki", False),
        ("intranet", False),
        ("status", True),
        ("finance", False),
    ]
    assert resources[0]["hosts"] == ["wiki.example"]
    assert resources[2]["path_prefix"] == "/status"
    doc = ha()
    doc["global_rule"] = {"rule": "internal"}
    strict = validate(InstallationConfig, doc)
    assert not any(r["public"] for r in ap(strict, "ap2")["resources"])


def test_policy_views() -> None:
    config = validate(InstallationConfig, ha())
    ps1 = validate(PolicyConfig, view_for(config, "ps1"))
    ps2 = validate(PolicyConfig, view_for(config, "ps2"))
    assert ps1.policy.authentication == ["http://10.0.1.11:8201", "http://10.0.1.12:8201"]
    assert ps2.policy.authentication == ["http://10.0.1.12:8201", "http://10.0.1.11:8201"]
    assert (ps1.policy.id, ps1.policy.listen) == ("ps1", "10.0.1.11:8101")
    assert (ps1.policy.session_db, ps2.policy.session_db) == (PG, SESSION_PG)
    assert ps2.policy.admin_token_file == "/etc/gatehouse/policy-admin.token"
    assert [str(n) for n in ps1.policy.trusted_proxies] == ["10.0.0.0/24"]
    assert ps1.sessions.cookie_name == "corp_session"
    assert ps1.sessions.idle_timeout == 1200.0
    assert ps1.login.portal_prefix == "/_sso/"
    assert ps1.identity_headers.user == "X-Auth-User"
    assert ps1.resources == {
        "wiki": {"rule": "ops"},
        "intranet": None,
        "status": "public",
        "finance": {"all": [{"rule": "finance-team"}, {"access_point": ["ap1", "ap2"]}]},
    }
    assert set(ps1.rules) == {"ops", "finance-team", "internal", "teams"}


def test_identity_assertion_flows_to_the_policy_views_only() -> None:
    doc = ha()
    doc["resources"][0]["identity_assertion"] = True
    doc["identity_headers"]["assertion"] = "X-Signed-Identity"
    doc["policy_services"][0]["assertion_ttl"] = "20s"
    config = validate(InstallationConfig, doc)
    ps1 = validate(PolicyConfig, view_for(config, "ps1"))
    ps2 = validate(PolicyConfig, view_for(config, "ps2"))
    assert ps1.identity_assertion == ps2.identity_assertion == ["wiki"]
    assert ps1.identity_headers.assertion == "X-Signed-Identity"
    assert (ps1.policy.assertion_ttl, ps2.policy.assertion_ttl) == (20.0, 60.0)
    for ap_id in ("ap1", "ap2", "ap3"):
        view = ap(config, ap_id)
        assert all("identity_assertion" not in r for r in view["resources"])
        # The AP strips a client's copy of the header and forwards only the Policy's.
        assert "X-Signed-Identity" in view["access_point"]["identity_headers"]
    assert (
        validate(
            PolicyConfig, view_for(validate(InstallationConfig, ha()), "ps1")
        ).identity_assertion
        == []
    )


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            lambda d: d["policy_services"][0].update(assertion_ttl=61),
            "policy_services[0].assertion_ttl",
        ),
        (
            lambda d: (
                d["resources"][0].update(identity_assertion=True),
                d["identity_headers"].update(assertion=None),
            ),
            "resources[0].identity_assertion",
        ),
    ],
)
def test_identity_assertion_errors_name_the_field(change: Any, path: str) -> None:
    doc = ha()
    change(doc)
    with pytest.raises(ConfigError, match=re.escape(path)):
        validate(InstallationConfig, doc)


def test_authentication_views() -> None:
    config = validate(InstallationConfig, everything_set())
    auth1 = validate(AuthenticationConfig, view_for(config, "auth1")).authentication
    auth2 = validate(AuthenticationConfig, view_for(config, "auth2")).authentication
    assert (auth1.id, auth1.listen, auth1.user_db) == ("auth1", "10.0.1.11:8201", SESSION_PG)
    assert (auth2.id, auth2.listen, auth2.user_db) == ("auth2", "0.0.0.0:8201", PG)
    assert (auth1.verify_queue, auth2.verify_queue) == (8, 64)  # a per-service capacity
    for auth in (auth1, auth2):
        assert auth.lockout.account_max_failures == 3
        assert auth.lockout.account_lock == 1800.0
        assert (auth.password_hash.memory_kib, auth.password_hash.time_cost) == (65536, 2)


def test_without_databases_services_use_their_nodes_default() -> None:
    config = validate(InstallationConfig, minimal())
    assert view_for(config, "ps1")["policy"]["session_db"] is None
    assert view_for(config, "auth1")["authentication"]["user_db"] is None


def test_an_unknown_service_has_no_view() -> None:
    config = validate(InstallationConfig, minimal())
    with pytest.raises(UnknownService, match="no service 'ap9'"):
        view_for(config, "ap9")


def test_an_access_point_view_names_its_tls_files_by_path_only() -> None:
    config = validate(InstallationConfig, everything_set())
    tls = ap(config, "ap1")["access_point"]["tls"]
    assert tls["certificates"] == [
        {
            "cert_file": "/etc/gatehouse/tls/ap1.crt",
            "key_file": "/etc/gatehouse/tls/ap1.key",
            "hosts": [],
        }
    ]
    assert tls["redirect_listen"] == "0.0.0.0:80"
    # The walk still finds a key anywhere else, or PEM text where the path goes.
    assert leaks({"access_point": {"key_file": "/k"}}, set()) == [
        "$.access_point.key_file: key has 'key'"
    ]
    pem = {"access_point": {"tls": {"certificates": [{"key_file": "-----BEGIN PRIVATE KEY-----"}]}}}
    assert leaks(pem, set()) != []


def test_tls_on_an_access_point_refuses_a_session_cookie_domain() -> None:
    doc = everything_set()
    doc["sessions"] = {**doc.get("sessions", {}), "cookie_domain": "example.com"}
    with pytest.raises(ConfigError, match=r"access_points\[0\]\.tls: .*__Host-"):
        validate(InstallationConfig, doc)

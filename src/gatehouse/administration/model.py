"""The whole installation's configuration, as stored and published by the Administration service.

One document describes every service and what each one needs; :mod:`.views` cuts it into the
configuration each service loads. Example::

    services:
      - {id: ap1, role: access_point, endpoint: "http://10.0.0.11:8080", node: dmz1}
      - {id: ps1, role: policy, endpoint: "http://10.0.1.11:8101", node: int1}
      - {id: auth1, role: authentication, endpoint: "http://10.0.1.11:8201", node: int1}
    access_points:                    # one entry per access_point service
      - id: ap1
        policy_services: [ps1]        # preferred first
        workers: 4                    # any other AP setting (docs/configuration.md)
    policy_services:                  # one entry per policy service
      - id: ps1
        authentication: [auth1]       # preferred first
    authentication_services: []       # optional per-service overrides (listen, user_db,
                                      # distribution: [dist1] preferred first; default: all)
    distribution_services: []         # optional per-service overrides (listen, outbox_db)
    databases: {user_db: "postgresql+asyncpg://gatehouse@db1/gatehouse"}
    authentication: {lockout: {...}, password_hash: {...}}
    distribution: {channels: [...], delivery: {...}}   # only the Distribution services see it
    resources:                        # what the APs route (no `public`: rules decide)
      - {id: wiki, path_prefix: /wiki, backends: ["http://10.0.2.5:8000"]}
    sessions: {...}                   # as in the Policy config
    login: {...}
    identity_headers: {...}
    rules: {staff: {groups_any: [staff]}}
    global_rule: public
    resource_rules: {wiki: {rule: staff}}   # a resource without an entry: authenticated
    oauth:                            # the OAuth 2.0 / OpenID Connect provider
      issuer: http://127.0.0.1:8080   # the Access Points' URL (discovery at ISSUER/.well-known/...)
      clients: [...]                  # `gatehouse oauth clients add|remove|rotate-secret`

Settings that must agree between services are written once and derived: an AP's
``session_cookie`` comes from ``sessions.cookie_name``, its ``reserved_prefix`` from
``login.portal_prefix`` and its ``decision_headers`` from the header names the rules look at;
a resource is ``public`` on the APs exactly when its effective rule is ``public``.
``listen`` defaults to the host and port of the service's endpoint.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationError, field_validator, model_validator

from gatehouse.authentication.config import (
    CodeSettings,
    InvitationSettings,
    Lockout,
    OtpSettings,
    PasswordHash,
)
from gatehouse.config.access_point import AccessPointSettings, Resource, parse_listen
from gatehouse.config.base import Strict
from gatehouse.config.database import DatabaseSettings
from gatehouse.config.loader import problems_error
from gatehouse.config.oauth import OAuthSettings
from gatehouse.config.policy import (
    EndpointURL,
    IdentityHeaders,
    LoginSettings,
    PolicySettings,
    ResourceId,
    RuleName,
    RuleSpec,
    SessionSettings,
)
from gatehouse.distribution.config import (
    Channel,
    DeliverySettings,
    HttpSmsChannel,
    SmtpChannel,
)
from gatehouse.metrics.settings import MetricsSettings
from gatehouse.policy.rules import Public
from gatehouse.policy.rules_compile import RuleSet, check_rule_set
from gatehouse.storage.home import DatabasesFile, DatabaseURL

Role = Literal["access_point", "policy", "authentication", "distribution"]
Loc = tuple[str | int, ...]
Channels = SmtpChannel | HttpSmsChannel

ROLE_NAMES: Mapping[str, str] = {
    "access_point": "access point",
    "policy": "policy service",
    "authentication": "authentication service",
    "distribution": "distribution service",
}

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _identifier(value: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"not an id: {value!r} (lowercase letters, digits, '.', '_', '-')")
    return value


def _listen_or_derived(value: str) -> str:
    if value:
        parse_listen(value)
    return value


ServiceId = Annotated[str, AfterValidator(_identifier)]
NodeName = Annotated[str, AfterValidator(_identifier)]
#: ``HOST:PORT``; empty (the default) means the host and port of the service's endpoint.
Listen = Annotated[str, AfterValidator(_listen_or_derived)]


class Service(Strict):
    """A service of the installation and where the others reach it."""

    id: ServiceId
    role: Role
    endpoint: EndpointURL
    node: NodeName


class AccessPointEntry(AccessPointSettings):
    """One Access Point: its own settings (as in its config) with Policy services by id."""

    id: ServiceId
    listen: Listen = ""
    policy_services: list[ServiceId] = Field(default_factory=list)


class PolicyEntry(PolicySettings):
    """One Policy service: its settings with Authentication services by id.

    ``session_db`` overrides ``databases.session_db`` for this service only.
    """

    id: ServiceId
    listen: Listen = ""
    authentication: list[ServiceId] = Field(min_length=1)


class AuthenticationEntry(Strict):
    """Per-service overrides of an Authentication service (every field optional)."""

    id: ServiceId
    listen: Listen = ""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    user_db: DatabaseURL | None = None
    #: Password checks that may wait for an argon2 slot on this service (its capacity);
    #: None: the service's default.
    verify_queue: int | None = Field(default=None, ge=0, le=100_000)
    #: This service's OATH DB, overriding ``databases.oath_db``.
    oath_db: DatabaseURL | None = None
    #: This service's seed key file (None: its node's HOME/oath-seeds.key).
    oath_keyring: str | None = None
    #: The Distribution services it sends codes through, by id, preferred first;
    #: None: every distribution service, in the order of ``services``.
    distribution: list[ServiceId] | None = None


class DistributionEntry(Strict):
    """Per-service overrides of a Distribution service (every field optional)."""

    id: ServiceId
    listen: Listen = ""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    #: This service's outbox, overriding ``databases.outbox_db``.
    outbox_db: DatabaseURL | None = None
    #: This service's message body key file (None: its node's HOME/outbox.key). Services
    #: sharing an outbox DB need the same key.
    outbox_keyring: str | None = None


class DistributionShared(Strict):
    """What every Distribution service delivers with: its channels (tried in this order) and
    its delivery settings. Channel credentials are file names on the Distribution nodes
    (``password_file``, ``token_file``), never the secrets themselves."""

    channels: list[Channel] = Field(default_factory=list)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[Channels]) -> list[Channels]:
        names = [channel.name for channel in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"channel names given twice: {', '.join(twice)}")
        return value


class AuthenticationPolicy(Strict):
    """Settings every Authentication service must share (their counters are shared)."""

    lockout: Lockout = Field(default_factory=Lockout)
    password_hash: PasswordHash = Field(default_factory=PasswordHash)
    otp: OtpSettings = Field(default_factory=OtpSettings)
    #: One-time codes by e-mail and SMS (their length, lifetime, attempts, resend limits).
    codes: CodeSettings = Field(default_factory=CodeSettings)
    #: Token invitations: ``base_url`` is how users reach the Access Points (the link's
    #: host); its ``portal_prefix`` is ``login.portal_prefix``.
    invitations: InvitationSettings = Field(default_factory=InvitationSettings)


#: AP settings that are derived from installation-wide settings and may not be set per AP.
DERIVED_AP_FIELDS: Mapping[str, str] = {
    "session_cookie": "sessions.cookie_name",
    "reserved_prefix": "login.portal_prefix",
    "decision_headers": "the header conditions of the rules",
}


class InstallationResource(Resource):
    """A resource: what the Access Points route, and what the Policy services add for it."""

    #: Allowed requests carry a signed identity assertion (``identity_headers.assertion``)
    #: that the backend can check against the Policy services' published keys.
    identity_assertion: bool = False


class InstallationConfig(Strict):
    """Everything the Administration service publishes; validated across fields."""

    services: list[Service] = Field(default_factory=list)
    access_points: list[AccessPointEntry] = Field(default_factory=list)
    policy_services: list[PolicyEntry] = Field(default_factory=list)
    authentication_services: list[AuthenticationEntry] = Field(default_factory=list)
    distribution_services: list[DistributionEntry] = Field(default_factory=list)
    databases: DatabasesFile | None = None
    authentication: AuthenticationPolicy = Field(default_factory=AuthenticationPolicy)
    distribution: DistributionShared = Field(default_factory=DistributionShared)
    resources: list[InstallationResource] = Field(default_factory=list)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    login: LoginSettings = Field(default_factory=LoginSettings)
    identity_headers: IdentityHeaders = Field(default_factory=IdentityHeaders)
    rules: dict[RuleName, RuleSpec] = Field(default_factory=dict)
    global_rule: RuleSpec = "public"
    resource_rules: dict[ResourceId, RuleSpec | None] = Field(
        default_factory=dict, description="resource id -> rule; missing or null: authenticated"
    )
    #: The OAuth 2.0 / OpenID Connect provider: issuer, lifetimes, signing and the clients
    #: (their secret hashes only). Authentication services get it with the signing keys'
    #: public half; Policy services without the secret hashes.
    oauth: OAuthSettings = Field(default_factory=OAuthSettings)
    #: How long the Policy, Authentication and Distribution services wait for their
    #: databases through a failover (``failover_wait``), as in their own configurations.
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)

    @model_validator(mode="after")
    def _cross_check(self) -> InstallationConfig:
        problems = list(cross_field_problems(self))
        if problems:
            raise problems_error(type(self).__name__, problems, "config")
        return self

    def service(self, service_id: str) -> Service | None:
        # Every view names its peers by id: a scan per lookup made cutting the views of
        # 100 services quadratic (4,600 scans, 6 ms of each publish).
        index = self._by_id
        if index[0] is not self.services:  # a model_copy(update=...) copied it: made anew
            del self.__dict__["_by_id"]
            index = self._by_id
        return index[1].get(service_id)

    @functools.cached_property
    def _by_id(self) -> tuple[list[Service], dict[str, Service]]:
        """``services`` by id, for the list it was made from (a cached property: model
        equality and dumps leave it out)."""
        return self.services, {s.id: s for s in reversed(self.services)}

    def endpoint(self, service_id: str) -> str:
        service = self.service(service_id)
        if service is None:
            raise KeyError(service_id)
        return service.endpoint

    def rule_set(self) -> RuleSet:
        """The compiled rules (valid: the model was checked when it was built)."""
        rule_set, _ = check_rule_set(self.rules, self.global_rule, self.resource_rules_of_all())
        assert rule_set is not None
        return rule_set

    def resource_rules_of_all(self) -> dict[str, RuleSpec | None]:
        """Every resource's own rule in resource order; None (authenticated) when not given."""
        return {res.id: self.resource_rules.get(res.id) for res in self.resources}

    def public_resources(self) -> frozenset[str]:
        """Resources whose effective rule (global rule and own rule) is plain ``public``."""
        effective = self.rule_set().effective
        return frozenset(rid for rid, cond in effective.items() if isinstance(cond, Public))

    def database_of(self, service_id: str) -> str | None:
        """The database URL a Policy (session DB) or Authentication (user DB) service uses;
        None: its node's default (HOME/databases.yaml, else HOME/gatehouse.db)."""
        return database_of(self, service_id)[1]


def listen_from_endpoint(endpoint: str) -> str:
    """``HOST:PORT`` of an endpoint URL (the scheme's default port when none is given)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cross_field_problems(config: InstallationConfig) -> Iterator[tuple[Loc, str]]:
    """Every inconsistency between fields, as (location, message); empty when valid."""
    roles = {s.id: s.role for s in config.services}
    yield from _service_problems(config)
    yield from _entry_problems(config, roles)
    yield from _resource_problems(config)
    rule_set, rule_problems = check_rule_set(
        config.rules, config.global_rule, config.resource_rules_of_all()
    )
    for loc, message in rule_problems:
        yield (("resource_rules", *loc[1:]) if loc[:1] == ("resources",) else loc), message
    yield from _access_point_rule_problems(config, roles)
    needing = []
    if rule_set is not None:
        effective = rule_set.effective
        needing = [rid for rid, cond in effective.items() if not isinstance(cond, Public)]
    yield from _ordered_list_problems(config, roles, needing)
    yield from _database_problems(config)
    yield from _oath_db_problems(config)
    yield from _outbox_db_problems(config)
    yield from _invitation_problems(config)
    yield from _oauth_problems(config)


def _service_problems(config: InstallationConfig) -> Iterator[tuple[Loc, str]]:
    ids: set[str] = set()
    endpoints: dict[str, str] = {}
    for index, service in enumerate(config.services):
        if service.id in ids:
            yield ("services", index, "id"), f"duplicate service id {service.id!r}"
        ids.add(service.id)
        if service.role == "distribution" and urlsplit(service.endpoint).path not in ("", "/"):
            # The Authentication services call it at its root (``/internal/v1/...``).
            message = "a distribution service's endpoint is http(s)://HOST[:PORT], no path"
            yield ("services", index, "endpoint"), message
        endpoint = service.endpoint.rstrip("/")
        if endpoint in endpoints:
            yield (
                ("services", index, "endpoint"),
                f"same endpoint as service {endpoints[endpoint]!r}",
            )
        else:
            endpoints[endpoint] = service.id


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _wrong_role(service_id: str, roles: Mapping[str, str], role: str) -> str | None:
    """Why ``service_id`` cannot be used as a ``role`` service, or None if it can."""
    actual = roles.get(service_id)
    if actual is None:
        return f"unknown {ROLE_NAMES[role]} {service_id!r}"
    if actual != role:
        return f"{service_id!r} is {_a(ROLE_NAMES[actual])}, not {_a(ROLE_NAMES[role])}"
    return None


def _entry_problems(
    config: InstallationConfig, roles: Mapping[str, str]
) -> Iterator[tuple[Loc, str]]:
    sections = (
        ("access_points", "access_point", [e.id for e in config.access_points], True),
        ("policy_services", "policy", [e.id for e in config.policy_services], True),
        (
            "authentication_services",
            "authentication",
            [e.id for e in config.authentication_services],
            False,
        ),
        (
            "distribution_services",
            "distribution",
            [e.id for e in config.distribution_services],
            False,
        ),
    )
    for section, role, ids, required in sections:
        seen: set[str] = set()
        for index, service_id in enumerate(ids):
            problem = _wrong_role(service_id, roles, role)
            if problem:
                yield (section, index, "id"), problem
            elif service_id in seen:
                yield (section, index, "id"), f"duplicate entry for {service_id!r}"
            seen.add(service_id)
        if not required:
            continue
        for index, service in enumerate(config.services):
            if service.role == role and service.id not in seen:
                message = f"{ROLE_NAMES[role]} {service.id!r} has no entry in {section}"
                yield ("services", index), message
    for index, entry in enumerate(config.access_points):
        for name, source in DERIVED_AP_FIELDS.items():
            if name in entry.model_fields_set:
                message = f"set for every Access Point by {source}; remove it here"
                yield ("access_points", index, name), message
        if entry.tls is not None and config.sessions.cookie_domain:
            # With TLS the AP reads the session cookie as __Host-NAME, which is host-only.
            message = (
                "an Access Point with TLS uses a host-only __Host- session cookie; "
                "sessions.cookie_domain cannot apply (remove it, or terminate TLS in front)"
            )
            yield ("access_points", index, "tls"), message


def _ordered_list_problems(
    config: InstallationConfig, roles: Mapping[str, str], needing: list[str]
) -> Iterator[tuple[Loc, str]]:
    lists: list[tuple[Loc, list[str], str]] = [
        (("access_points", i, "policy_services"), ap.policy_services, "policy")
        for i, ap in enumerate(config.access_points)
    ]
    lists += [
        (("policy_services", i, "authentication"), ps.authentication, "authentication")
        for i, ps in enumerate(config.policy_services)
    ]
    lists += [
        (("authentication_services", i, "distribution"), auth.distribution, "distribution")
        for i, auth in enumerate(config.authentication_services)
        if auth.distribution is not None
    ]
    for loc, listed, role in lists:
        for index, service_id in enumerate(listed):
            problem = _wrong_role(service_id, roles, role)
            if problem:
                yield (*loc, index), problem
            elif service_id in listed[:index]:
                yield (*loc, index), f"{service_id!r} is listed twice"
        if role == "policy" and not listed and needing:
            yield loc, "empty, but these resources need a Policy service: " + ", ".join(needing)


def _resource_problems(config: InstallationConfig) -> Iterator[tuple[Loc, str]]:
    seen: set[str] = set()
    for index, res in enumerate(config.resources):
        if res.id in seen:
            yield ("resources", index, "id"), f"duplicate resource id {res.id!r}"
        seen.add(res.id)
        if "public" in res.model_fields_set:
            yield (
                ("resources", index, "public"),
                f"decided by the rules: write resource_rules: {{{res.id}: public}} instead",
            )
        if res.identity_assertion and config.identity_headers.assertion is None:
            yield (
                ("resources", index, "identity_assertion"),
                "needs a header: identity_headers.assertion is null",
            )
    for resource_id in config.resource_rules:
        if resource_id not in seen:
            yield ("resource_rules", resource_id), f"no resource with id {resource_id!r}"


def _access_point_rule_problems(
    config: InstallationConfig, roles: Mapping[str, str]
) -> Iterator[tuple[Loc, str]]:
    specs: list[tuple[Loc, object]] = [(("rules", n), spec) for n, spec in config.rules.items()]
    specs.append((("global_rule",), config.global_rule))
    specs += [(("resource_rules", rid), spec) for rid, spec in config.resource_rules.items()]
    for loc, spec in specs:
        for ap_loc, ap_id in _access_point_references(spec, loc):
            if roles.get(ap_id) != "access_point":
                yield ap_loc, f"unknown access point {ap_id!r}"


def _access_point_references(spec: object, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """Every ``access_point: [ID]`` entry inside a rule, with its location."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "access_point" and isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, str):
                        yield (*loc, key, index), item
            else:
                yield from _access_point_references(value, (*loc, str(key)))
    elif isinstance(spec, list):
        for index, item in enumerate(spec):
            yield from _access_point_references(item, (*loc, index))


def database_of(config: InstallationConfig, service_id: str) -> tuple[Loc, str | None]:
    """Where a Policy or Authentication service's database is set, and its URL.

    The URL is None when the service uses its node's default (HOME/databases.yaml or
    HOME/gatehouse.db). Policy services use the session DB, Authentication services the user DB.
    """
    dbs = config.databases
    for index, ps in enumerate(config.policy_services):
        if ps.id == service_id:
            if ps.session_db is not None:
                return ("policy_services", index, "session_db"), ps.session_db
            if dbs is not None and dbs.session_db is not None:
                return ("databases", "session_db"), dbs.session_db
            return ("databases", "user_db"), dbs.user_db if dbs else None
    for index, auth in enumerate(config.authentication_services):
        if auth.id == service_id and auth.user_db is not None:
            return ("authentication_services", index, "user_db"), auth.user_db
    return ("databases", "user_db"), dbs.user_db if dbs else None


def _oath_db_problems(config: InstallationConfig) -> Iterator[tuple[Loc, str]]:
    """A one-time password is accepted once per OATH DB: Authentication services on several
    nodes cannot each have a SQLite file. (Unset, each node's HOME/databases.yaml says.)"""
    dbs = config.databases
    groups: dict[tuple[Loc, str], list[Service]] = {}
    for service in config.services:
        if service.role != "authentication":
            continue
        loc: Loc = ("databases", "oath_db")
        url = dbs.oath_db if dbs else None
        for index, auth in enumerate(config.authentication_services):
            if auth.id == service.id and auth.oath_db is not None:
                loc, url = ("authentication_services", index, "oath_db"), auth.oath_db
        if url is not None and url.startswith("sqlite"):
            groups.setdefault((loc, url), []).append(service)
    for (loc, _url), services in groups.items():
        if len({s.node for s in services}) > 1:
            where = ", ".join(f"{s.id} on {s.node}" for s in services)
            yield loc, f"SQLite cannot be shared across nodes ({where}); use PostgreSQL"


def outbox_db_of(config: InstallationConfig, service_id: str) -> tuple[Loc, str | None]:
    """Where a Distribution service's outbox DB is set, and its URL (None: its node's
    default, HOME/databases.yaml's outbox_db or HOME/outbox.db)."""
    for index, entry in enumerate(config.distribution_services):
        if entry.id == service_id and entry.outbox_db is not None:
            return ("distribution_services", index, "outbox_db"), entry.outbox_db
    dbs = config.databases
    return ("databases", "outbox_db"), dbs.outbox_db if dbs else None


def distribution_of(config: InstallationConfig, service_id: str) -> list[str]:
    """The ids of the Distribution services an Authentication service sends through,
    preferred first: its entry's ``distribution``, else every one in ``services`` order."""
    for entry in config.authentication_services:
        if entry.id == service_id and entry.distribution is not None:
            return list(entry.distribution)
    return [s.id for s in config.services if s.role == "distribution"]


def _invitation_problems(config: InstallationConfig) -> Iterator[tuple[Loc, str]]:
    """An invitation link's path is the Policy portal's: written once, in login."""
    if "portal_prefix" in config.authentication.invitations.model_fields_set:
        message = "set for every Authentication service by login.portal_prefix; remove it here"
        yield ("authentication", "invitations", "portal_prefix"), message
    try:
        InvitationSettings(portal_prefix=config.login.portal_prefix)
    except ValidationError as exc:
        yield ("login", "portal_prefix"), str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


def _outbox_db_problems(config: InstallationConfig) -> Iterator[tuple[Loc, str]]:
    """Distribution services share their outbox (the work, the leases, the idempotency keys)
    only through one database: not through SQLite, nor each node's own default."""
    groups: dict[tuple[Loc, str | None], list[Service]] = {}
    for service in config.services:
        if service.role == "distribution":
            loc, url = outbox_db_of(config, service.id)
            if url is None or url.startswith("sqlite"):
                groups.setdefault((loc, url), []).append(service)
    for (loc, url), services in groups.items():
        if len({s.node for s in services}) > 1:
            where = ", ".join(f"{s.id} on {s.node}" for s in services)
            if url is None:
                message = (
                    f"distribution services on several nodes ({where}) must share their "
                    "outbox: set outbox_db to a PostgreSQL URL"
                )
            else:
                message = f"SQLite cannot be shared across nodes ({where}); use PostgreSQL"
            yield loc, message


def _database_problems(config: InstallationConfig) -> Iterator[tuple[Loc, str]]:
    """Services of one role on several nodes must share their data: not through SQLite."""
    groups: dict[tuple[str, Loc, str | None], list[Service]] = {}
    for service in config.services:
        if service.role in ("policy", "authentication"):
            loc, url = database_of(config, service.id)
            groups.setdefault((service.role, loc, url), []).append(service)
    for (role, loc, url), services in groups.items():
        if (url is not None and not url.startswith("sqlite")) or len(
            {s.node for s in services}
        ) < 2:
            continue
        where = ", ".join(f"{s.id} on {s.node}" for s in services)
        data = "sessions" if role == "policy" else "users and lockout counters"
        if url is None:
            yield (
                ("databases",),
                (
                    f"{ROLE_NAMES[role]}s on several nodes ({where}) must share their {data}: "
                    "set user_db to a PostgreSQL URL"
                ),
            )
        else:
            yield loc, f"SQLite cannot be shared across nodes ({where}); use PostgreSQL"


def _oauth_problems(config: InstallationConfig) -> Iterator[tuple[Loc, str]]:
    """Keys Admin can make; an OAuth2 DB that every Authentication service shares (a code
    issued by one instance is exchanged at any other)."""
    for index, alg in enumerate(config.oauth.signing.algorithms):
        if alg == "EdDSA":
            message = "EdDSA keys are not made by the Administration service yet: ES256, RS256"
            yield ("oauth", "signing", "algorithms", index), message
    url = config.databases.oauth2_db if config.databases else None
    nodes = {s.node for s in config.services if s.role == "authentication"}
    if url is not None and url.startswith("sqlite") and len(nodes) > 1:
        message = (
            f"SQLite cannot be shared across nodes ({', '.join(sorted(nodes))}); use PostgreSQL"
        )
        yield ("databases", "oauth2_db"), message

"""The Policy service's configuration: process settings, sessions, login portal and access rules.

``load_file(PolicyConfig, path)`` validates everything, the rules included: a rule error is
reported with its field path (``resources.admin-app.all[0].rule: unknown rule 'stafff'``).
The rules stay as written (plain YAML data) in the model; :mod:`gatehouse.policy.decision`
compiles them into a :class:`~gatehouse.policy.decision.CompiledPolicy`. The rule language
is described in :mod:`gatehouse.policy.rules_compile`.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gatehouse.config.access_point import (
    DEFAULT_IDENTITY_HEADERS,
    HeaderName,
    HostPattern,
    IPNetwork,
    parse_listen,
)
from gatehouse.config.base import Strict
from gatehouse.config.database import DatabaseSettings
from gatehouse.config.failover import FailoverSettings
from gatehouse.config.loader import problems_error
from gatehouse.config.oauth import PolicyOAuth
from gatehouse.config.units import Seconds
from gatehouse.metrics.settings import MetricsSettings
from gatehouse.policy.rules_compile import BUILTIN_RULES, check_rule_set

RuleSpec = JsonValue
"""A condition as written: ``"public"``, ``"authenticated"`` or a one-key mapping."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_RESOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DB_URL = re.compile(r"^[a-z][a-z0-9+.-]*://")


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _endpoint(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {value!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a URL: {value!r} (expected http(s)://host[:port])")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"endpoint URL may not have a query, fragment or credentials: {value!r}")
    return value


def _rule_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"not a rule name: {value!r} (letters, digits, '.', '_', '-')")
    if value in BUILTIN_RULES:
        raise ValueError(f"{value!r} is a built-in rule and cannot be redefined")
    return value


def _resource_id(value: str) -> str:
    if not _RESOURCE_ID.match(value):
        raise ValueError(f"not a resource id: {value!r} (lowercase letters, digits, '.', '_', '-')")
    return value


def _db_url(value: str) -> str:
    if not _DB_URL.match(value):
        raise ValueError(f"not a database URL: {value!r} (e.g. sqlite+aiosqlite:///path)")
    return value


EndpointURL = Annotated[str, AfterValidator(_endpoint)]
RuleName = Annotated[str, AfterValidator(_rule_name)]
ResourceId = Annotated[str, AfterValidator(_resource_id)]
Duration = Annotated[Seconds, Field(gt=0)]
#: The longest an identity assertion may live, seconds.
MAX_ASSERTION_TTL = 60.0


class PolicySettings(Strict):
    """The Policy service process."""

    id: str = "ps1"
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:8101"
    #: The metrics listener (``GET /metrics``); read at start.
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    authentication: list[EndpointURL] = Field(
        default_factory=lambda: ["http://127.0.0.1:8201"], min_length=1
    )
    session_db: Annotated[str, AfterValidator(_db_url)] | None = None
    #: Proxies whose X-Forwarded-* the portal believes: none by default. Over mutual TLS an
    #: Access Point's are believed because its certificate says it is one.
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)
    admin_token_file: str | None = None
    decision_ttl: Duration = 30.0
    #: Lifetime of a signed identity assertion (resources in ``identity_assertion``).
    assertion_ttl: Duration = MAX_ASSERTION_TTL
    #: How calls to the Authentication services fail over (per attempt: 5 s, an argon2id
    #: verification under load takes a while; probes and fail-back as documented).
    failover: FailoverSettings = Field(default_factory=lambda: FailoverSettings(timeout=5.0))

    @field_validator("assertion_ttl")
    @classmethod
    def _check_assertion_ttl(cls, value: float) -> float:
        if value > MAX_ASSERTION_TTL:
            raise ValueError(
                f"at most {MAX_ASSERTION_TTL:g}s ({value:g}s): an assertion is a bearer token"
            )
        return value


class SessionSettings(Strict):
    """Session cookie and lifetimes (idle: since last use; absolute: since login)."""

    cookie_name: str = "gatehouse_session"
    cookie_domain: str | None = None
    # absolute_timeout comes first so that idle_timeout's validator can compare.
    absolute_timeout: Duration = 12 * 3600.0
    idle_timeout: Duration = 30 * 60.0

    @field_validator("cookie_name")
    @classmethod
    def _check_cookie_name(cls, value: str) -> str:
        if not _COOKIE_NAME.match(value):
            raise ValueError(f"not a valid cookie name: {value!r}")
        return value

    @field_validator("idle_timeout")
    @classmethod
    def _check_idle(cls, value: float, info: ValidationInfo) -> float:
        absolute = info.data.get("absolute_timeout")
        if absolute is not None and value > absolute:
            raise ValueError(f"must not exceed absolute_timeout ({value:g}s > {absolute:g}s)")
        return value


class LoginSettings(Strict):
    """The login portal."""

    portal_prefix: str = "/_gatehouse/"
    title: str = "Gatehouse"
    #: Hosts (names or *.domain patterns) a login may return to besides the one it came in on;
    #: a bare "*" is ignored on purpose (it would make the portal an open redirect).
    allowed_redirect_hosts: list[HostPattern] = Field(default_factory=list)
    #: The key signing CSRF tokens; every Policy service of an installation must share it.
    #: Default: HOME/policy-csrf.key, created on first start.
    csrf_key_file: str | None = None

    @field_validator("portal_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not (value.startswith("/") and value.endswith("/") and len(value) > 2):
            raise ValueError("must start and end with '/', e.g. /_gatehouse/")
        return value


class IdentityHeaders(Strict):
    """Names of the identity headers sent to backends on allow; null leaves one out."""

    user: HeaderName | None = DEFAULT_IDENTITY_HEADERS[0]
    groups: HeaderName | None = DEFAULT_IDENTITY_HEADERS[1]
    email: HeaderName | None = DEFAULT_IDENTITY_HEADERS[2]
    name: HeaderName | None = DEFAULT_IDENTITY_HEADERS[3]
    #: The signed identity assertion, for resources listed in ``identity_assertion``.
    assertion: HeaderName | None = DEFAULT_IDENTITY_HEADERS[4]
    #: The authentication methods the session ran, e.g. ``password,otp``.
    auth_methods: HeaderName | None = DEFAULT_IDENTITY_HEADERS[5]

    @field_validator("groups", "email", "name", "assertion", "auth_methods")
    @classmethod
    def _distinct(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        for other, seen in info.data.items():
            if isinstance(seen, str) and seen.lower() == value.lower():
                raise ValueError(f"same header as {other!r}: {value!r}")
        return value


class PolicyConfig(Strict):
    """A whole Policy service configuration file."""

    policy: PolicySettings = Field(default_factory=PolicySettings)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    login: LoginSettings = Field(default_factory=LoginSettings)
    identity_headers: IdentityHeaders = Field(default_factory=IdentityHeaders)
    rules: dict[RuleName, RuleSpec] = Field(default_factory=dict)
    global_rule: RuleSpec = "public"
    resources: dict[ResourceId, RuleSpec | None] = Field(
        default_factory=dict, description="resource id -> rule; null means authenticated"
    )
    identity_assertion: list[ResourceId] = Field(
        default_factory=list,
        description="resources whose backends get a signed identity assertion on allow",
    )
    #: The OAuth 2.0 / OpenID Connect provider's pages (gatehouse.policy.oauth_flow): issuer,
    #: the clients' public facts and the published key set; never a secret.
    oauth: PolicyOAuth = Field(default_factory=PolicyOAuth)
    #: How long work on the session DB waits for it through a failover (read at start).
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)

    @model_validator(mode="after")
    def _check_rules(self) -> PolicyConfig:
        _, problems = check_rule_set(self.rules, self.global_rule, self.resources)
        if problems:
            raise problems_error(type(self).__name__, problems, "rule")
        return self

    @model_validator(mode="after")
    def _check_identity_assertion(self) -> PolicyConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for index, resource_id in enumerate(self.identity_assertion):
            if resource_id not in self.resources:
                problems.append((("identity_assertion", index), f"no resource {resource_id!r}"))
        if self.identity_assertion and self.identity_headers.assertion is None:
            problems.append(
                (("identity_headers", "assertion"), "null, but identity_assertion lists resources")
            )
        if problems:
            raise problems_error(type(self).__name__, problems)
        return self

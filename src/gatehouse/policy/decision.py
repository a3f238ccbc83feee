"""Access decisions: may this request through this Access Point reach this resource?

Pure and synchronous — the Policy service looks the session up, then asks::

    policy = compile_policy(config)              # once per config version
    decision = decide(policy, request, session, now)
    match decision:
        case Allow(headers=headers, ttl=ttl): ...       # forward, inject headers
        case Deny(ttl=ttl): ...                         # 403
        case Authenticate(methods=methods, step_up=step_up): ...   # 303 to the portal

The effective rule of a resource is ``all: [global_rule, resource rule]``, evaluated with
three-valued logic (:mod:`gatehouse.policy.rules`). TRUE → :class:`Allow`; FALSE →
:class:`Deny`; NEEDS_AUTH → :class:`Authenticate`: without a session ``step_up=False`` and
``methods`` are those to run in order, starting with :data:`PRIMARY_METHOD`; with a session
``step_up=True`` and ``methods`` are the ones the session still lacks. An unknown resource id
is denied. A session already expired at ``now`` counts as no session.

``ttl`` (seconds, never negative) is how long the Access Point may cache the answer:
the configured ``decision_ttl``, cut at the next edge of a time window the rules consulted
and, for :class:`Allow` with a session, at the session's idle and absolute expiry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gatehouse.policy.rules import (
    AllOf,
    AnyOf,
    BearerToken,
    Condition,
    EvalContext,
    Not,
    RuleRef,
    TokenScopesAny,
    Tri,
)
from gatehouse.policy.rules_compile import AUTH_METHODS, RuleSet, compile_rule_set

if TYPE_CHECKING:  # config.policy imports the rules compiler; avoid the import cycle
    from gatehouse.config.policy import PolicyConfig

PRIMARY_METHOD = "password"
"""The method that establishes a session; the first of a fresh login's methods."""

_UNSAFE = dict.fromkeys([*range(0x09), *range(0x0A, 0x20), 0x7F])


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """One request, as the Access Point describes it (``headers``: lowercase names)."""

    resource: str
    method: str
    path: str
    client_ip: str
    headers: Mapping[str, str] = field(default_factory=dict)
    access_point: str = ""


@dataclass(frozen=True, slots=True)
class SessionView:
    """What a decision needs of a valid session (aware datetimes)."""

    username: str
    groups: frozenset[str]
    email: str | None
    display_name: str | None
    methods: frozenset[str]
    idle_expires_at: datetime
    absolute_expires_at: datetime


@dataclass(frozen=True, slots=True)
class Allow:
    """Forward the request, adding ``headers`` (identity headers; none without a session)."""

    headers: tuple[tuple[str, str], ...]
    ttl: float

    def to_json(self) -> dict[str, object]:
        """The ``DECISION`` wire form (docs/internal-api.md)."""
        return {"decision": "allow", "headers": dict(self.headers), "ttl": self.ttl}


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse the request (403)."""

    ttl: float

    def to_json(self) -> dict[str, object]:
        return {"decision": "deny", "ttl": self.ttl}


#: The methods the portal runs after the password, each its own ``step``.
SECOND_FACTORS = frozenset({"otp", "email_otp", "sms_otp"})


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Send the user to the login portal to run ``methods`` (in order)."""

    methods: tuple[str, ...]
    step_up: bool

    @property
    def step(self) -> str | None:
        """The portal's marker for a login that must also run a second factor: the first of
        ``otp``, ``email_otp``, ``sms_otp`` the rule asks for (a rule asking for two gets the
        second as a step-up once the first is done)."""
        for method in self.methods:
            if method in SECOND_FACTORS:
                return method
        return None

    def to_json(self, login_url: str) -> dict[str, object]:
        return {
            "decision": "authenticate",
            "methods": list(self.methods),
            "step_up": self.step_up,
            "login_url": login_url,
        }


Decision = Allow | Deny | Authenticate


@dataclass(frozen=True, slots=True)
class IdentityHeaderNames:
    """Header names for the session's identity; None leaves one out."""

    user: str | None = "Remote-User"
    groups: str | None = "Remote-Groups"
    email: str | None = "Remote-Email"
    name: str | None = "Remote-Name"
    #: The session's authentication methods, comma-separated (``password,otp``).
    methods: str | None = "Remote-Auth-Methods"


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """Everything :func:`decide` needs, compiled once per config version."""

    rules: RuleSet
    decision_ttl: float = 30.0
    identity_headers: IdentityHeaderNames = IdentityHeaderNames()
    #: Resources whose rule reads a bearer token (``token_scopes_any``): only their
    #: decisions introspect one.
    token_resources: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        reading = frozenset(rid for rid, rule in self.rules.effective.items() if _reads_token(rule))
        object.__setattr__(self, "token_resources", reading)

    @classmethod
    def from_config(cls, config: PolicyConfig, source: str = "") -> CompiledPolicy:
        """Compile ``config``'s rules; raises ConfigError (field paths) if they are invalid."""
        names = config.identity_headers
        return cls(
            rules=compile_rule_set(config.rules, config.global_rule, config.resources, source),
            decision_ttl=config.policy.decision_ttl,
            identity_headers=IdentityHeaderNames(
                names.user, names.groups, names.email, names.name, names.auth_methods
            ),
        )

    @property
    def resource_ids(self) -> frozenset[str]:
        return frozenset(self.rules.effective)

    @property
    def reads_tokens(self) -> bool:
        """Whether a rule reads bearer tokens (``token_scopes_any``)."""
        return bool(self.token_resources)

    @property
    def decision_headers(self) -> frozenset[str]:
        """Lowercase request headers the rules read: the AP must send these with a request."""
        return self.rules.header_names


def _reads_token(condition: Condition) -> bool:
    if isinstance(condition, TokenScopesAny):
        return True
    if isinstance(condition, AllOf | AnyOf):
        return any(_reads_token(part) for part in condition.conditions)
    if isinstance(condition, Not | RuleRef):
        return _reads_token(condition.condition)
    return False


def compile_policy(config: PolicyConfig, source: str = "") -> CompiledPolicy:
    """Same as :meth:`CompiledPolicy.from_config`."""
    return CompiledPolicy.from_config(config, source)


def header_safe(value: str) -> str:
    """``value`` without control characters (CR, LF, NUL, …; tab kept), trimmed."""
    return value.translate(_UNSAFE).strip(" \t")


def identity_headers(
    names: IdentityHeaderNames, session: SessionView
) -> tuple[tuple[str, str], ...]:
    """The identity headers for ``session``; absent or empty values are left out."""
    groups = sorted({g for g in (header_safe(g) for g in session.groups) if g})
    values = (
        (names.user, header_safe(session.username)),
        (names.groups, ",".join(groups)),
        (names.email, header_safe(session.email or "")),
        (names.name, header_safe(session.display_name or "")),
        (names.methods, ",".join(ordered_methods(session.methods))),
    )
    return tuple((name, value) for name, value in values if name and value)


def ordered_methods(methods: frozenset[str]) -> list[str]:
    """A session's methods in a stable order: the known ones as :data:`AUTH_METHODS` lists
    them, then any other (header-safe) name alphabetically."""
    known = [m for m in AUTH_METHODS if m in methods]
    others = sorted({m for m in (header_safe(m) for m in methods) if m and m not in known})
    return [*known, *(m for m in others if "," not in m)]


def decide(
    policy: CompiledPolicy,
    request: DecisionInput,
    session: SessionView | None,
    now: datetime,
    token: BearerToken | None = None,
    token_expires_at: datetime | None = None,
) -> Decision:
    """Decide ``request`` at the aware instant ``now``; ``token`` is the request's bearer
    token as introspected (``token_scopes_any``), its answer cached by the Policy service
    until ``token_expires_at`` at the latest, which bounds the decision's ``ttl`` too."""
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    now = now.astimezone(UTC)
    rule = policy.rules.effective.get(request.resource)
    if rule is None:
        return Deny(ttl=max(0.0, policy.decision_ttl))
    if session is not None and (
        now >= session.idle_expires_at or now >= session.absolute_expires_at
    ):
        session = None
    ctx = EvalContext(
        now=now,
        principal=session,
        method=request.method,
        client_ip=request.client_ip,
        headers=request.headers,
        access_point=request.access_point,
        token=token,
    )
    verdict = rule.evaluate(ctx)
    ttl = policy.decision_ttl
    if ctx.changes_at is not None:
        ttl = min(ttl, _seconds_until(ctx.changes_at, now))
    if token is not None and token_expires_at is not None:
        ttl = min(ttl, _seconds_until(token_expires_at, now))
    if verdict.value is Tri.TRUE:
        if session is None:
            return Allow(headers=(), ttl=max(0.0, ttl))
        ttl = min(
            ttl,
            _seconds_until(session.idle_expires_at, now),
            _seconds_until(session.absolute_expires_at, now),
        )
        return Allow(headers=identity_headers(policy.identity_headers, session), ttl=max(0.0, ttl))
    if verdict.value is Tri.NEEDS_AUTH:
        if session is None:
            extra = tuple(m for m in verdict.methods if m != PRIMARY_METHOD)
            return Authenticate(methods=(PRIMARY_METHOD, *extra), step_up=False)
        if verdict.methods:
            return Authenticate(methods=verdict.methods, step_up=True)
    return Deny(ttl=max(0.0, ttl))


def _seconds_until(instant: datetime, now: datetime) -> float:
    # Subtracting in UTC: within one zone Python subtracts wall times, ignoring DST.
    return (instant.astimezone(UTC) - now).total_seconds()

"""The access rules engine: three-valued verdicts, the evaluation context and the conditions.

Rules are compiled once per config version (:mod:`gatehouse.policy.rules_compile`) into a tree
of small frozen condition objects; evaluating one is a chain of ``evaluate(ctx)`` calls with no
name lookups, parsing or regex compiling on the request path.

Evaluation is three-valued (Kleene logic), so that "log in first" is told apart from "no":

- :attr:`Tri.TRUE` / :attr:`Tri.FALSE` — decided;
- :attr:`Tri.NEEDS_AUTH` — the answer depends on an identity the request does not (yet)
  have: identity conditions (``authenticated``, ``users``, ``groups_*``, ``auth_methods``)
  without a session, or ``auth_methods`` with a session lacking some methods (step-up).

``all`` is FALSE if any part is FALSE, else NEEDS_AUTH if any part is, else TRUE; ``any`` is
TRUE if any part is TRUE, else NEEDS_AUTH if any part is, else FALSE; ``not`` swaps TRUE and
FALSE and keeps NEEDS_AUTH. So ``all: [authenticated, {ip: [10.0.0.0/8]}]`` from outside the
network is FALSE (logging in would not help), not NEEDS_AUTH.

A NEEDS_AUTH :class:`Verdict` carries ``methods``: the authentication methods still required,
in rule order (empty = any session will do). ``all`` unites its parts' requirements; ``any``
keeps the smallest one (the first on ties).

Time conditions report, through :meth:`EvalContext.limit`, the earliest instant at which they
could change value; the evaluator records the minimum over the conditions it consulted in
``ctx.changes_at`` (short-circuiting is sound: a result only depends on what was consulted).

Use::

    ctx = EvalContext(now=now, principal=session, method="GET", client_ip="10.1.2.3",
                      headers={"x-client-cert": "CN=a"}, access_point="ap1")
    verdict = condition.evaluate(ctx)      # Verdict(value=Tri.TRUE, methods=())
    ctx.changes_at                          # datetime | None
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gatehouse.policy.rules_regex import HeaderRegex

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NO_HEADERS: Mapping[str, str] = {}


class Tri(enum.Enum):
    """A three-valued (Kleene) truth value."""

    FALSE = "false"
    TRUE = "true"
    NEEDS_AUTH = "needs_auth"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The value of a condition; for NEEDS_AUTH, the methods still required (rule order)."""

    value: Tri
    methods: tuple[str, ...] = ()


TRUE = Verdict(Tri.TRUE)
FALSE = Verdict(Tri.FALSE)
NEEDS_SESSION = Verdict(Tri.NEEDS_AUTH)


class Principal(Protocol):
    """The identity a session carries (:class:`gatehouse.policy.decision.SessionView` is one)."""

    @property
    def username(self) -> str: ...

    @property
    def groups(self) -> frozenset[str]: ...

    @property
    def methods(self) -> frozenset[str]: ...


class BearerToken(Protocol):
    """A bearer token the request carried, as introspection saw it
    (:class:`gatehouse.authentication.oauth_calls.BearerAnswer` is one)."""

    @property
    def active(self) -> bool: ...

    @property
    def scopes(self) -> frozenset[str]: ...


class EvalContext:
    """Everything conditions look at, for one evaluation; collects ``changes_at``."""

    __slots__ = (
        "_ip",
        "_ip_parsed",
        "access_point",
        "changes_at",
        "client_ip",
        "headers",
        "method",
        "now",
        "principal",
        "token",
    )

    def __init__(
        self,
        *,
        now: datetime,
        principal: Principal | None = None,
        method: str = "GET",
        client_ip: str = "",
        headers: Mapping[str, str] = _NO_HEADERS,
        access_point: str = "",
        token: BearerToken | None = None,
    ) -> None:
        if now.utcoffset() is None:
            raise ValueError("now must be a timezone-aware datetime")
        self.now = now
        self.principal = principal
        #: The request's ``Authorization: Bearer`` token, introspected (None: none sent).
        self.token = token
        self.method = method
        self.client_ip = client_ip
        self.headers = headers
        self.access_point = access_point
        self.changes_at: datetime | None = None
        self._ip: IPAddress | None = None
        self._ip_parsed = False

    @property
    def ip(self) -> IPAddress | None:
        """The client address (IPv4-mapped IPv6 unwrapped), or None when unparsable."""
        if not self._ip_parsed:
            self._ip_parsed = True
            try:
                addr = ipaddress.ip_address(self.client_ip.strip())
            except ValueError:
                addr = None
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            self._ip = addr
        return self._ip

    def limit(self, instant: datetime) -> None:
        """Record that a consulted condition may change value at ``instant``."""
        if self.changes_at is None or instant < self.changes_at:
            self.changes_at = instant


class Condition(Protocol):
    """A compiled condition."""

    def evaluate(self, ctx: EvalContext, /) -> Verdict: ...


def evaluate(condition: Condition, ctx: EvalContext) -> Verdict:
    """Evaluate ``condition``; ``ctx.changes_at`` then holds its earliest possible change."""
    return condition.evaluate(ctx)


# -- identity-free conditions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Public:
    """Always TRUE: anyone, with or without a session."""

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        return TRUE


@dataclass(frozen=True, slots=True)
class ClientIP:
    """The client address is in one of the networks (IPv4 and IPv6)."""

    networks: tuple[Network, ...]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        ip = ctx.ip
        if ip is None:
            return FALSE
        for net in self.networks:
            if ip in net:
                return TRUE
        return FALSE


@dataclass(frozen=True, slots=True)
class Methods:
    """The HTTP request method is one of these (upper case)."""

    methods: frozenset[str]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        return TRUE if ctx.method in self.methods else FALSE


@dataclass(frozen=True, slots=True)
class HeaderMatches:
    """A request header (lowercase ``name``) is present and the pattern matches in it.

    RE2 search in the value's first :data:`~gatehouse.policy.rules_regex.MATCH_LIMIT`
    characters: linear time, whatever the pattern and the value.
    """

    name: str
    pattern: HeaderRegex

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        value = ctx.headers.get(self.name)
        if value is None:
            return FALSE
        return TRUE if self.pattern.found_in(value) else FALSE


@dataclass(frozen=True, slots=True)
class AccessPoints:
    """The request came through one of these Access Points."""

    ids: frozenset[str]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        return TRUE if ctx.access_point in self.ids else FALSE


@dataclass(frozen=True, slots=True)
class TokenScopesAny:
    """The request carries an active bearer token (``Authorization: Bearer``, issued by this
    installation's OAuth provider) with at least one of these scopes. No token, an inactive
    one or one without such a scope: FALSE (a client, not a person: no sign-in helps)."""

    scopes: frozenset[str]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        token = ctx.token
        if token is None or not token.active:
            return FALSE
        return FALSE if self.scopes.isdisjoint(token.scopes) else TRUE


# -- identity conditions: NEEDS_AUTH without a session ---------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """There is a valid session."""

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        return NEEDS_SESSION if ctx.principal is None else TRUE


@dataclass(frozen=True, slots=True)
class Users:
    """The session's user is one of these."""

    names: frozenset[str]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return NEEDS_SESSION
        return TRUE if principal.username in self.names else FALSE


@dataclass(frozen=True, slots=True)
class GroupsAny:
    """The session's user is in at least one of these groups."""

    groups: frozenset[str]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return NEEDS_SESSION
        return FALSE if self.groups.isdisjoint(principal.groups) else TRUE


@dataclass(frozen=True, slots=True)
class GroupsAll:
    """The session's user is in every one of these groups."""

    groups: frozenset[str]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return NEEDS_SESSION
        return TRUE if self.groups <= principal.groups else FALSE


@dataclass(frozen=True, slots=True)
class AuthMethods:
    """The session was authenticated with all of these methods; NEEDS_AUTH lists the missing."""

    methods: tuple[str, ...]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        principal = ctx.principal
        if principal is None:
            return Verdict(Tri.NEEDS_AUTH, self.methods)
        have = principal.methods
        missing = tuple(m for m in self.methods if m not in have)
        return Verdict(Tri.NEEDS_AUTH, missing) if missing else TRUE


# -- combinators ----------------------------------------------------------------------------


def _unite(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(m for m in second if m not in first)


@dataclass(frozen=True, slots=True)
class AllOf:
    """Kleene AND: FALSE wins, then NEEDS_AUTH (requirements united), else TRUE."""

    conditions: tuple[Condition, ...]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        pending: Verdict | None = None
        for condition in self.conditions:
            verdict = condition.evaluate(ctx)
            value = verdict.value
            if value is Tri.FALSE:
                return FALSE
            if value is Tri.NEEDS_AUTH:
                if pending is None:
                    pending = verdict
                elif verdict.methods:
                    pending = Verdict(Tri.NEEDS_AUTH, _unite(pending.methods, verdict.methods))
        return TRUE if pending is None else pending


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Kleene OR: TRUE wins, then NEEDS_AUTH (smallest requirement), else FALSE."""

    conditions: tuple[Condition, ...]

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        best: Verdict | None = None
        for condition in self.conditions:
            verdict = condition.evaluate(ctx)
            value = verdict.value
            if value is Tri.TRUE:
                return TRUE
            if value is Tri.NEEDS_AUTH and (
                best is None or len(verdict.methods) < len(best.methods)
            ):
                best = verdict
        return FALSE if best is None else best


@dataclass(frozen=True, slots=True)
class Not:
    """Kleene NOT: TRUE and FALSE swap, NEEDS_AUTH stays (with its requirement)."""

    condition: Condition

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        verdict = self.condition.evaluate(ctx)
        value = verdict.value
        if value is Tri.TRUE:
            return FALSE
        if value is Tri.FALSE:
            return TRUE
        return verdict


@dataclass(frozen=True, slots=True)
class RuleRef:
    """A reference to a named rule, resolved at compile time (the name is kept for display)."""

    name: str
    condition: Condition

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        return self.condition.evaluate(ctx)


PUBLIC = Public()
AUTHENTICATED = Authenticated()

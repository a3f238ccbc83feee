"""Compile rules as written in YAML into condition trees, reporting errors with field paths.

A condition is a string shorthand (``public``, ``authenticated``) or a mapping with exactly one
key::

    authenticated: true             users: [alice, bob]
    groups_any: [a, b]              groups_all: [a, b]
    ip: [10.0.0.0/8, "2001:db8::/32", 192.0.2.7]
    time: {days: [mon, fri], from: "08:00", to: "18:00", timezone: Europe/Stockholm}
    methods: [GET, HEAD]            header: {name: X-Client-Cert, matches: "^CN=.*$"}
    access_point: [ap1, ap2]        auth_methods: [password]
    token_scopes_any: [api.read, api.write]
    all: [COND, ...]                any: [COND, ...]
    not: COND                       rule: NAME

``auth_methods`` names the methods Gatehouse runs (:data:`AUTH_METHODS`: ``password``, ``otp``
— a one-time password from an OATH token —, ``email_otp`` and ``sms_otp`` — a one-time code
sent by e-mail or by SMS); a session has them when it signed in with them.

``token_scopes_any`` is met by a request whose ``Authorization: Bearer`` token is an active
access token of this installation's OAuth provider with one of the scopes (the Policy service
introspects it, cached for at most 30 s); it makes the Access Points send ``Authorization``
with decision requests.

``time`` defaults: every day, the whole day (``to`` may be ``"24:00"``), zone UTC. ``header``
searches with RE2 in the value's first 8 KiB (:mod:`gatehouse.policy.rules_regex`; anchor the
pattern to match the whole value; backreferences and lookaround are refused); an absent header
is FALSE. ``public`` and ``authenticated`` are also usable as ``{rule: public}``; they cannot be
redefined. Lists must not be empty.

:func:`compile_rule_set` compiles the named rules, the global rule and the per-resource rules
together and raises :class:`~gatehouse.errors.ConfigError` listing every problem as
``(path, message)``, e.g. ``resources.admin-app.all[0].rule: unknown rule 'stafff'``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from gatehouse.config.loader import field_path
from gatehouse.errors import ConfigError
from gatehouse.policy.rules import (
    AUTHENTICATED,
    PUBLIC,
    AccessPoints,
    AllOf,
    AnyOf,
    AuthMethods,
    ClientIP,
    Condition,
    GroupsAll,
    GroupsAny,
    HeaderMatches,
    Methods,
    Network,
    Not,
    Public,
    RuleRef,
    TokenScopesAny,
    Users,
)
from gatehouse.policy.rules_regex import UnsupportedRegex, compile_header_regex
from gatehouse.policy.rules_time import ALL_DAYS, DAY, TimeWindow, load_zone, parse_clock, parse_day

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]

BUILTIN_RULES: Mapping[str, Condition] = MappingProxyType(
    {"public": PUBLIC, "authenticated": AUTHENTICATED}
)
MAX_DEPTH = 64

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_AUTH_METHOD = re.compile(r"^[a-z][a-z0-9_-]*$")
#: The request header a bearer token comes in (``token_scopes_any``).
AUTHORIZATION = "authorization"
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")
#: The authentication methods a rule may ask for: the ones the portal can run.
AUTH_METHODS: tuple[str, ...] = ("password", "otp", "email_otp", "sms_otp")


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Compiled rules of one config version.

    ``effective`` maps each resource id to ``all: [global_rule, resource rule]``;
    ``header_names`` are the (lowercase) request headers any rule looks at — the names an
    Access Point must pass along in decision requests.
    """

    named: Mapping[str, Condition]
    global_rule: Condition
    resources: Mapping[str, Condition]
    effective: Mapping[str, Condition]
    header_names: frozenset[str]


def compile_rule_set(
    rules: Mapping[str, object],
    global_rule: object = "public",
    resources: Mapping[str, object] | None = None,
    source: str = "",
    methods: Sequence[str] | None = AUTH_METHODS,
) -> RuleSet:
    """Compile everything; a resource rule of ``None`` means ``authenticated``.

    ``methods``: the authentication methods rules may name (None: any well-formed name, for
    the engine's own tests).

    Raises:
        ConfigError: with one ``(field path, message)`` per problem.
    """
    rule_set, problems = check_rule_set(rules, global_rule, resources, methods)
    if rule_set is None:
        raise ConfigError([(field_path(loc), msg) for loc, msg in problems], source)
    return rule_set


def check_rule_set(
    rules: Mapping[str, object],
    global_rule: object = "public",
    resources: Mapping[str, object] | None = None,
    methods: Sequence[str] | None = AUTH_METHODS,
) -> tuple[RuleSet | None, list[Problem]]:
    """Like :func:`compile_rule_set`, but returns the problems with their locations as tuples."""
    compiler = _Compiler(rules, methods)
    named = {name: compiler.named(name, ("rules", name)) for name in rules}
    global_condition = compiler.condition(global_rule, ("global_rule",))
    own: dict[str, Condition | None] = {}
    for resource_id, spec in (resources or {}).items():
        loc: Loc = ("resources", resource_id)
        own[resource_id] = AUTHENTICATED if spec is None else compiler.condition(spec, loc)
    if compiler.problems or global_condition is None:
        return None, compiler.problems
    resource_rules = {rid: cond for rid, cond in own.items() if cond is not None}
    effective = {
        rid: cond if isinstance(global_condition, Public) else AllOf((global_condition, cond))
        for rid, cond in resource_rules.items()
    }
    rule_set = RuleSet(
        named=MappingProxyType({k: v for k, v in named.items() if v is not None}),
        global_rule=global_condition,
        resources=MappingProxyType(resource_rules),
        effective=MappingProxyType(effective),
        header_names=frozenset(compiler.header_names),
    )
    return rule_set, []


class _Invalid(Exception):
    """A problem already recorded; unwinds the compilation of one condition."""


class _Compiler:
    def __init__(self, specs: Mapping[str, object], methods: Sequence[str] | None) -> None:
        self.specs = specs
        self.known_methods = methods
        self.problems: list[Problem] = []
        self.header_names: set[str] = set()
        self.done: dict[str, Condition] = {}
        self.failed: set[str] = set()
        self.depths: dict[str, int] = {}
        self.stack: list[str] = []
        self.depth = 0
        self.kinds: dict[str, Callable[[object, Loc], Condition]] = {
            "authenticated": self._authenticated,
            "public": self._public,
            "users": self._users,
            "groups_any": self._groups_any,
            "groups_all": self._groups_all,
            "ip": self._ip,
            "time": self._time,
            "methods": self._methods,
            "header": self._header,
            "access_point": self._access_point,
            "auth_methods": self._auth_methods,
            "token_scopes_any": self._token_scopes_any,
            "all": self._all,
            "any": self._any,
            "not": self._not,
            "rule": self._rule,
        }

    def fail(self, loc: Loc, message: str) -> _Invalid:
        self.problems.append((loc, message))
        return _Invalid()

    # -- entry points --------------------------------------------------------------------

    def named(self, name: str, loc: Loc) -> Condition | None:
        """Compile a named rule once; None when it (or something it uses) is invalid."""
        if name in self.done:
            return self.done[name]
        if name in self.failed:
            return None
        if name in BUILTIN_RULES:
            self.fail(loc, f"{name!r} is a built-in rule and cannot be redefined")
            self.failed.add(name)
            return None
        before, depth = len(self.problems), self.depth
        self.stack.append(name)
        self.depth = 0  # a rule's own nesting is judged alone, its uses where they are
        condition = self.condition(self.specs[name], ("rules", name))
        self.depth = depth
        self.stack.pop()
        if condition is None or len(self.problems) > before:
            self.failed.add(name)
            return None
        self.done[name] = condition
        self.depths[name] = self._depth(condition)
        return condition

    def _depth(self, condition: Condition) -> int:
        """Evaluation depth; named rules count with their own depth, computed once."""
        if isinstance(condition, RuleRef):
            return 1 + self.depths[condition.name]
        if isinstance(condition, AllOf | AnyOf):
            return 1 + max(self._depth(part) for part in condition.conditions)
        if isinstance(condition, Not):
            return 1 + self._depth(condition.condition)
        return 1

    def condition(self, spec: object, loc: Loc) -> Condition | None:
        try:
            return self._condition(spec, loc)
        except _Invalid:
            return None

    # -- one condition -------------------------------------------------------------------

    def _condition(self, spec: object, loc: Loc) -> Condition:
        if isinstance(spec, str):
            if spec in BUILTIN_RULES:
                return BUILTIN_RULES[spec]
            hint = f"; write {{rule: {spec}}} to use the named rule" if spec in self.specs else ""
            raise self.fail(loc, f"unknown condition {spec!r}{hint}")
        if not isinstance(spec, Mapping):
            raise self.fail(
                loc, "expected a condition: 'public', 'authenticated' or a mapping with one key"
            )
        if len(spec) != 1:
            keys = ", ".join(str(k) for k in spec) or "none"
            raise self.fail(loc, f"a condition is a mapping with exactly one key (got: {keys})")
        ((kind, value),) = spec.items()
        build = self.kinds.get(kind) if isinstance(kind, str) else None
        if build is None:
            expected = ", ".join(self.kinds)
            raise self.fail((*loc, str(kind)), f"unknown condition (expected one of: {expected})")
        if self.depth >= MAX_DEPTH:
            raise self.fail(loc, f"conditions nested more than {MAX_DEPTH} deep")
        self.depth += 1
        try:
            return build(value, (*loc, kind))
        finally:
            self.depth -= 1

    def _flag(self, value: object, loc: Loc, name: str, condition: Condition) -> Condition:
        if value is not True:
            raise self.fail(loc, f"must be true (use {{not: {name}}} for the opposite)")
        return condition

    def _authenticated(self, value: object, loc: Loc) -> Condition:
        return self._flag(value, loc, "authenticated", AUTHENTICATED)

    def _public(self, value: object, loc: Loc) -> Condition:
        return self._flag(value, loc, "public", PUBLIC)

    def _list(self, value: object, loc: Loc, what: str) -> list[object]:
        if not isinstance(value, list) or not value:
            raise self.fail(loc, f"expected a non-empty list of {what}")
        return value

    def _names(self, value: object, loc: Loc, what: str) -> list[str]:
        items = self._list(value, loc, what)
        bad = [i for i, item in enumerate(items) if not isinstance(item, str) or not item.strip()]
        for i in bad:
            self.fail((*loc, i), f"expected a non-empty string, got {items[i]!r}")
        if bad:
            raise _Invalid()
        return [str(item).strip() for item in items]

    def _users(self, value: object, loc: Loc) -> Condition:
        return Users(frozenset(self._names(value, loc, "user names")))

    def _groups_any(self, value: object, loc: Loc) -> Condition:
        return GroupsAny(frozenset(self._names(value, loc, "group names")))

    def _groups_all(self, value: object, loc: Loc) -> Condition:
        return GroupsAll(frozenset(self._names(value, loc, "group names")))

    def _access_point(self, value: object, loc: Loc) -> Condition:
        return AccessPoints(frozenset(self._names(value, loc, "Access Point ids")))

    def _matching(
        self, value: object, loc: Loc, what: str, pattern: re.Pattern[str], message: str
    ) -> list[str]:
        items = self._names(value, loc, what)
        bad = [i for i, item in enumerate(items) if not pattern.match(item)]
        for i in bad:
            self.fail((*loc, i), message.format(items[i]))
        if bad:
            raise _Invalid()
        return items

    def _methods(self, value: object, loc: Loc) -> Condition:
        msg = "not an HTTP method: {!r}"
        items = self._matching(value, loc, "HTTP methods", _TOKEN, msg)
        return Methods(frozenset(item.upper() for item in items))

    def _auth_methods(self, value: object, loc: Loc) -> Condition:
        msg = "not an authentication method: {!r} (lowercase letters, digits, '_' or '-')"
        items = self._matching(value, loc, "authentication methods", _AUTH_METHOD, msg)
        known = self.known_methods
        if known is not None:
            unknown = [i for i, item in enumerate(items) if item not in known]
            for i in unknown:
                expected = ", ".join(known)
                self.fail(
                    (*loc, i),
                    f"unknown authentication method {items[i]!r} (expected one of: {expected})",
                )
            if unknown:
                raise _Invalid()
        return AuthMethods(tuple(dict.fromkeys(items)))

    def _token_scopes_any(self, value: object, loc: Loc) -> Condition:
        msg = "not an OAuth scope: {!r} (RFC 6749 §3.3 characters, no spaces)"
        items = self._matching(value, loc, "OAuth scopes", _SCOPE, msg)
        self.header_names.add(AUTHORIZATION)
        return TokenScopesAny(frozenset(items))

    def _ip(self, value: object, loc: Loc) -> Condition:
        items = self._names(value, loc, "IP networks")
        networks: list[Network] = []
        for i, item in enumerate(items):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.fail((*loc, i), f"not an IP network: {item!r} (use CIDR, e.g. 10.0.0.0/8)")
        if len(networks) != len(items):
            raise _Invalid()
        return ClientIP(tuple(networks))

    def _fields(
        self, value: object, loc: Loc, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> Mapping[str, object]:
        if not isinstance(value, Mapping):
            raise self.fail(loc, f"expected a mapping with keys {', '.join(allowed)}")
        ok = True
        for key in value:
            if key not in allowed:
                ok = False
                self.fail((*loc, str(key)), "unknown field")
        for key in required:
            if key not in value:
                ok = False
                self.fail((*loc, key), "field required")
        if not ok:
            raise _Invalid()
        return value

    def _header(self, value: object, loc: Loc) -> Condition:
        fields = self._fields(value, loc, ("name", "matches"), ("name", "matches"))
        name, pattern = fields["name"], fields["matches"]
        ok = True
        if not isinstance(name, str) or not _TOKEN.match(name):
            ok = False
            self.fail((*loc, "name"), f"not a valid HTTP header name: {name!r}")
        compiled = None
        if not isinstance(pattern, str):
            self.fail((*loc, "matches"), f"expected a regular expression, got {pattern!r}")
        else:
            try:
                compiled = compile_header_regex(pattern)
            except UnsupportedRegex as exc:
                self.fail((*loc, "matches"), str(exc))
        if not ok or compiled is None:
            raise _Invalid()
        lower = str(name).lower()
        self.header_names.add(lower)
        return HeaderMatches(lower, compiled)

    def _time(self, value: object, loc: Loc) -> Condition:
        fields = self._fields(value, loc, ("days", "from", "to", "timezone"))
        before = len(self.problems)
        days = ALL_DAYS
        if "days" in fields:
            names = self._list(fields["days"], (*loc, "days"), "days")
            parsed: set[int] = set()
            for i, name in enumerate(names):
                try:
                    parsed.add(parse_day(name))
                except ValueError as exc:
                    self.fail((*loc, "days", i), str(exc))
            days = frozenset(parsed)
        start, end = 0, DAY
        try:
            if "from" in fields:
                start = parse_clock(fields["from"])
        except ValueError as exc:
            self.fail((*loc, "from"), str(exc))
        try:
            if "to" in fields:
                end = parse_clock(fields["to"], allow_end_of_day=True)
        except ValueError as exc:
            self.fail((*loc, "to"), str(exc))
        zone = None
        try:
            zone = load_zone(fields.get("timezone", "UTC"))
        except ValueError as exc:
            self.fail((*loc, "timezone"), str(exc))
        if len(self.problems) > before or zone is None:
            raise _Invalid()
        if start == end:
            raise self.fail(loc, "'from' and 'to' must differ")
        return TimeWindow(days=days, start=start, end=end, zone=zone)

    def _combined(self, value: object, loc: Loc) -> tuple[Condition, ...]:
        items = self._list(value, loc, "conditions")
        parts = [self.condition(item, (*loc, i)) for i, item in enumerate(items)]
        if any(part is None for part in parts):
            raise _Invalid()
        return tuple(part for part in parts if part is not None)

    def _all(self, value: object, loc: Loc) -> Condition:
        parts = self._combined(value, loc)
        return parts[0] if len(parts) == 1 else AllOf(parts)

    def _any(self, value: object, loc: Loc) -> Condition:
        parts = self._combined(value, loc)
        return parts[0] if len(parts) == 1 else AnyOf(parts)

    def _not(self, value: object, loc: Loc) -> Condition:
        return Not(self._condition(value, loc))

    def _rule(self, value: object, loc: Loc) -> Condition:
        if not isinstance(value, str):
            raise self.fail(loc, f"expected a rule name, got {value!r}")
        if value in BUILTIN_RULES:
            return BUILTIN_RULES[value]
        if value in self.stack:
            cycle = [*self.stack[self.stack.index(value) :], value]
            raise self.fail(loc, f"rule cycle: {' -> '.join(cycle)}")
        if value not in self.specs:
            raise self.fail(loc, f"unknown rule {value!r}")
        condition = self.named(value, ("rules", value))
        if condition is None:
            raise _Invalid()  # reported where the rule is defined
        if self.depth + self.depths[value] > MAX_DEPTH:
            raise self.fail(
                loc, f"conditions nested more than {MAX_DEPTH} deep (with rule {value!r})"
            )
        return RuleRef(value, condition)

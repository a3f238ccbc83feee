"""Brute-force protection: attempt counters per key, reserved before a password is checked.

A key counts the password checks one client may still make: ``ip:ADDRESS`` per client
address, ``user:NAME`` per account, ``dev:NAME:ID`` per trusted device of an account (a
browser that signed in to it before, see ``docs/operations.md``) and ``unknown:N`` for names
that are not accounts (one of :data:`UNKNOWN_BUCKETS` buckets, so they lock like accounts but
cost a bounded number of rows). Device ids are issued here, at a successful sign-in, and
recorded as ``td:NAME:ID`` rows (:func:`trust`) that live :data:`DEVICE_LIFETIME`: an id
that was never issued for that account, or has expired, is not trusted, whoever sends it.

Every attempt is *reserved* before the argon2 work starts: one atomic upsert
(``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``, SQLite >= 3.35 and PostgreSQL) counts it
and says whether it may go on, so simultaneous attempts on any number of Authentication
services check at most ``max_failures`` passwords before the key locks. The attempt that
reaches ``max_failures`` locks the key for ``lock``; each further attempt (possible once a
lock is over) doubles the lock, up to ``lock_max``. While locked an attempt is refused and
not counted. A row *expires* ``window`` after its last counted attempt, or ``window`` after
the lock that attempt set ends; an expired row counts as no row and is purged (:func:`purge`).

A success deletes the account's (or device's) counter and *releases* its own reservation on
the address (one less), so one valid account can neither launder an attacker's address nor
lock its own users out of a shared address.

The rules are pure functions (:func:`reserve_rule`, :func:`release_rule`, :func:`check`); the
database functions do the same in SQL and a property test holds them to each other.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Delete,
    and_,
    bindparam,
    case,
    delete,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gatehouse.storage.models import LoginFailure
from gatehouse.storage.types import UTCDateTime

#: Names that are not accounts share this many counters (``unknown:0`` ... ``unknown:4095``).
UNKNOWN_BUCKETS = 4096
#: How long a device id stays trusted after the sign-in that issued or renewed it.
DEVICE_LIFETIME = timedelta(days=90)
#: Doublings past ``max_failures`` are capped long before this; it only bounds the SQL.
_MAX_STEPS = 40


@dataclass(frozen=True, slots=True)
class Rule:
    max_failures: int
    window: timedelta
    lock: timedelta
    lock_max: timedelta

    @classmethod
    def of(
        cls, max_failures: int, window: float, lock: float, lock_max: float | None = None
    ) -> Rule:
        """``lock_max`` defaults to four times ``lock`` and is never below it."""
        cap = 4 * lock if lock_max is None else max(lock, lock_max)
        return cls(
            max_failures, timedelta(seconds=window), timedelta(seconds=lock), timedelta(seconds=cap)
        )

    def delay(self, count: int) -> timedelta | None:
        """The lock that the attempt making the count ``count`` sets (None: no lock)."""
        if count < self.max_failures:
            return None
        doublings = count - self.max_failures
        if doublings >= _MAX_STEPS:
            return self.lock_max
        doubled: timedelta = self.lock * (2**doublings)
        return min(self.lock_max, doubled)

    def steps(self) -> list[tuple[int, timedelta]]:
        """``(count, lock)`` from ``max_failures`` up to the first count locked for
        ``lock_max``, which every higher count is too."""
        out: list[tuple[int, timedelta]] = []
        count = self.max_failures
        while True:
            delay = self.delay(count)
            assert delay is not None
            out.append((count, delay))
            if delay >= self.lock_max or len(out) > _MAX_STEPS:
                return out
            count += 1

    def expiry(self, count: int) -> timedelta:
        """How long after an attempt making ``count`` its row lives: a window past the end
        of the lock it set (so the next attempt after a lock doubles it)."""
        delay = self.delay(count)
        return self.window + delay if delay is not None else self.window


@dataclass(frozen=True, slots=True)
class Counter:
    """A key's stored state (a ``login_failures`` row)."""

    count: int
    first_at: datetime
    locked_until: datetime | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    locked: bool
    #: Whole seconds until the lock ends (0 when not locked).
    retry_after: int = 0


OPEN = Verdict(False)


def account_key(username: str) -> str:
    return f"user:{username}"


def device_key(username: str, device: str) -> str:
    """``device`` is the id from a device cookie (11 URL-safe characters): at most 80 chars."""
    return f"dev:{username}:{device}"


def trust_key(username: str, device: str) -> str:
    return f"td:{username}:{device}"


def new_device_id() -> str:
    """11 URL-safe characters (64 random bits)."""
    return secrets.token_urlsafe(8)


def unknown_key(username: str) -> str:
    digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).digest()
    return f"unknown:{int.from_bytes(digest[:8], 'big') % UNKNOWN_BUCKETS}"


def canonical_ip(text: str) -> str:
    """One spelling per address: compressed, IPv4-mapped IPv6 as plain IPv4 (ValueError if
    ``text`` is not an address)."""
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def ip_key(address: str) -> str:
    return f"ip:{canonical_ip(address)}"


# -- rules ---------------------------------------------------------------------------------


def check(counter: Counter | None, now: datetime) -> Verdict:
    """Is the key locked at ``now``, and for how long still?"""
    if counter is None or counter.locked_until is None or counter.locked_until <= now:
        return OPEN
    seconds = (counter.locked_until - now).total_seconds()
    return Verdict(True, max(1, math.ceil(seconds)))


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """Locked when any key is locked, until the last lock ends."""
    locked = [v for v in verdicts if v.locked]
    return max(locked, key=lambda v: v.retry_after) if locked else OPEN


def reserve_rule(counter: Counter | None, now: datetime, rule: Rule) -> tuple[Counter, bool]:
    """The key's state after an attempt at ``now``, and whether that attempt may go on."""
    if check(counter, now).locked:
        assert counter is not None
        return counter, False
    if counter is None or counter.expires_at <= now:
        count, first_at = 1, now
    else:
        count, first_at = counter.count + 1, counter.first_at
    delay = rule.delay(count)
    locked_until = now + delay if delay is not None else None
    return Counter(count, first_at, locked_until, now + rule.expiry(count)), True


def release_rule(counter: Counter, rule: Rule) -> Counter | None:
    """The key's state once one reserved attempt succeeded (None: the row goes)."""
    count = counter.count - 1
    if count <= 0:
        return None
    locked_until = counter.locked_until if count >= rule.max_failures else None
    return Counter(count, counter.first_at, locked_until, counter.expires_at)


def after_failure(counter: Counter | None, now: datetime, rule: Rule) -> Counter:
    """The key's state after one more counted attempt at ``now`` (refused ones count not)."""
    return reserve_rule(counter, now, rule)[0]


# -- database ------------------------------------------------------------------------------

_F = LoginFailure
_COLUMNS = (_F.count, _F.first_at, _F.locked_until, _F.expires_at)


def _at(moment: datetime) -> ColumnElement[datetime]:
    return literal(moment, UTCDateTime())


async def load(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, Counter]:
    query = select(_F.key, *_COLUMNS).where(_F.key.in_(list(keys)))
    rows = (await conn.execute(query)).all()
    return {
        key: Counter(count, first, locked, expires) for key, count, first, locked, expires in rows
    }


async def check_keys(conn: AsyncConnection, keys: Iterable[str], now: datetime) -> Verdict:
    counters: Mapping[str, Counter] = await load(conn, keys)
    return combine(check(counter, now) for counter in counters.values())


def new_attempt() -> str:
    """An attempt id: what a reservation writes on the counters it counts."""
    return secrets.token_urlsafe(12)


async def attempts(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, tuple[int, str]]:
    """``key -> (count, last counted attempt id)`` of the keys that have a row."""
    query = select(_F.key, _F.count, _F.attempt).where(_F.key.in_(list(keys)))
    return {key: (count, attempt) for key, count, attempt in (await conn.execute(query)).all()}


def _when(name: str) -> BindParameter[datetime]:
    return bindparam(name, type_=UTCDateTime())


def _insert(dialect: str) -> Any:
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


@functools.lru_cache(maxsize=32)
def _reserve_statement(dialect: str, rule: Rule) -> Any:
    """:func:`reserve`'s upsert for ``rule``, built once: the times it writes are parameters
    (``b_now``, ``lock_N`` and ``expires_N`` for the steps, ``window_end``, ``first_lock``,
    ``first_expires``), so a sign-in binds values instead of building the expression (and
    SQLAlchemy's cache key) again."""
    now_ = _when("b_now")
    locked = and_(_F.locked_until.is_not(None), _F.locked_until > now_)
    expired = _F.expires_at <= now_
    count = case((locked, _F.count), (expired, 1), else_=_F.count + 1)
    steps = rule.steps()
    last = len(steps) - 1
    locked_until = case(
        (locked, _F.locked_until),
        *((count == n, _when(f"lock_{i}")) for i, (n, _) in enumerate(steps[:-1])),
        (count >= steps[-1][0], _when(f"lock_{last}")),
        else_=null(),
    )
    expires_at = case(
        (locked, _F.expires_at),
        *((count == n, _when(f"expires_{i}")) for i, (n, _) in enumerate(steps[:-1])),
        (count >= steps[-1][0], _when(f"expires_{last}")),
        else_=_when("window_end"),
    )
    token = bindparam("b_token", type_=_F.attempt.type)
    return (
        _insert(dialect)(_F)
        .values(
            key=bindparam("b_key", type_=_F.key.type),
            count=1,
            first_at=now_,
            locked_until=_when("first_lock"),
            expires_at=_when("first_expires"),
            attempt=token,
        )
        .on_conflict_do_update(
            index_elements=[_F.key],
            set_={
                "count": count,
                "first_at": case((locked, _F.first_at), (expired, now_), else_=_F.first_at),
                "locked_until": locked_until,
                "expires_at": expires_at,
                "attempt": case((locked, _F.attempt), else_=token),
            },
        )
        .returning(*_COLUMNS, _F.attempt)
    )


@functools.lru_cache(maxsize=32)
def _reserve_offsets(rule: Rule) -> tuple[tuple[str, timedelta], ...]:
    """The time parameters of :func:`_reserve_statement` as offsets from now, worked out once
    per rule (``first_lock`` is absent when the first attempt sets no lock)."""
    first_delay = rule.delay(1)
    offsets = [("first_expires", rule.expiry(1)), ("window_end", rule.window)]
    if first_delay is not None:
        offsets.append(("first_lock", first_delay))
    for i, (n, delay) in enumerate(rule.steps()):
        offsets += [(f"lock_{i}", delay), (f"expires_{i}", rule.expiry(n))]
    return tuple(offsets)


def _reserve_values(key: str, now: datetime, rule: Rule, token: str) -> dict[str, object]:
    """The parameters of :func:`_reserve_statement` for one attempt."""
    values: dict[str, object] = {"b_key": key, "b_token": token, "b_now": now, "first_lock": None}
    for name, offset in _reserve_offsets(rule):
        values[name] = now + offset
    return values


async def reserve(
    conn: AsyncConnection, key: str, now: datetime, rule: Rule, token: str | None = None
) -> tuple[Counter, bool]:
    """:func:`reserve_rule` as one atomic upsert: the new state, and whether this attempt
    was counted (it may check a password) or refused (the key is locked). ``token``: the
    attempt's id (:func:`new_attempt`; a new one when None), left on a counted key's row."""
    token = token or new_attempt()
    statement = _reserve_statement(conn.dialect.name, rule)
    result = await conn.execute(statement, _reserve_values(key, now, rule, token))
    count_, first_at, locked_until_, expires_at_, attempt = result.one()
    counter = Counter(count_, first_at, locked_until_, expires_at_)
    if attempt == token and check(counter, now).locked:
        note_lockout(key)
    return counter, attempt == token


#: The lockout metric's scope label of each kind of key (by its prefix).
_SCOPES = {"ip": "ip", "user": "account", "unknown": "account", "dev": "device"}


def note_lockout(key: str) -> None:
    """Count a counted attempt that locked ``key`` (``gatehouse_authentication_lockouts``)."""
    from gatehouse.metrics.service import LOCKOUTS

    LOCKOUTS.labels(_SCOPES.get(key.split(":", 1)[0], "other")).inc()


async def record_failure(conn: AsyncConnection, key: str, now: datetime, rule: Rule) -> Counter:
    """Count one attempt on ``key`` (as :func:`reserve`); returns the new state."""
    return (await reserve(conn, key, now, rule))[0]


@functools.lru_cache(maxsize=32)
def _release_statements(max_failures: int) -> tuple[Delete, Any, Delete]:
    """:func:`release`'s statements for a rule's ``max_failures``, built once: drop a row
    whose count this release ends, else give one back (returning what is left), and drop a
    row that a concurrent release left at zero."""
    key = bindparam("b_key", type_=_F.key.type)
    remaining = _F.count - 1
    give_back = (
        update(_F)
        .where(_F.key == key)
        .values(
            count=remaining,
            locked_until=case((remaining < max_failures, null()), else_=_F.locked_until),
        )
        .returning(_F.count)
    )
    drop_last = delete(_F).where(_F.key == key).where(_F.count <= 1)
    return drop_last, give_back, delete(_F).where(_F.key == key).where(_F.count <= 0)


async def release(conn: AsyncConnection, key: str, rule: Rule) -> None:
    """:func:`release_rule`: give back one reserved attempt of ``key``. The usual case (an
    address whose only count was this attempt) is one statement."""
    drop_last, give_back, drop_empty = _release_statements(rule.max_failures)
    values = {"b_key": key}
    if (await conn.execute(drop_last, values)).rowcount:
        return
    left = (await conn.execute(give_back, values)).scalar_one_or_none()
    if left is not None and left <= 0:
        await conn.execute(drop_empty, values)


_FORGET = delete(_F).where(_F.key == bindparam("b_key", type_=_F.key.type))


async def forget(conn: AsyncConnection, key: str) -> None:
    """Delete ``key``'s counter (a success starts the account's or the device's over)."""
    await conn.execute(_FORGET, {"b_key": key})


async def reset(conn: AsyncConnection, key: str) -> None:
    """Forget ``key``; for an account key, its trusted devices and their counters too."""
    await conn.execute(delete(_F).where(_F.key == key))
    if key.startswith("user:"):
        name = key.removeprefix("user:")
        for prefix in (f"dev:{name}:", f"td:{name}:"):
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            await conn.execute(delete(_F).where(_F.key.like(escaped + "%", escape="\\")))


async def trusted(conn: AsyncConnection, username: str, device: str, now: datetime) -> bool:
    """Was ``device`` issued for ``username`` (by :func:`trust`) and is it still valid?"""
    query = select(_F.expires_at).where(_F.key == trust_key(username, device))
    expires_at = (await conn.execute(query)).scalar_one_or_none()
    return expires_at is not None and expires_at > now


async def trusted_until(conn: AsyncConnection, username: str, device: str) -> datetime | None:
    """Until when ``device`` is trusted for ``username`` (None: it is not)."""
    query = select(_F.expires_at).where(_F.key == trust_key(username, device))
    value: datetime | None = (await conn.execute(query)).scalar_one_or_none()
    return value


@functools.lru_cache(maxsize=4)
def _trust_statement(dialect: str) -> Any:
    expires_at = _when("b_expires_at")
    return (
        _insert(dialect)(_F)
        .values(
            key=bindparam("b_key", type_=_F.key.type),
            count=0,
            first_at=_when("b_now"),
            locked_until=None,
            expires_at=expires_at,
            attempt="",
        )
        .on_conflict_do_update(index_elements=[_F.key], set_={"expires_at": expires_at})
    )


async def trust(conn: AsyncConnection, username: str, device: str, now: datetime) -> None:
    """Record (or renew) ``device`` as a trusted device of ``username``."""
    values = {
        "b_key": trust_key(username, device),
        "b_now": now,
        "b_expires_at": now + DEVICE_LIFETIME,
    }
    await conn.execute(_trust_statement(conn.dialect.name), values)


async def purge(conn: AsyncConnection, now: datetime) -> int:
    """Delete every expired row (past its window and its lock); returns how many."""
    result = await conn.execute(delete(_F).where(_F.expires_at <= _at(now)))
    return int(getattr(result, "rowcount", 0) or 0)

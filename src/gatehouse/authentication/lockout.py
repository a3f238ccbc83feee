"""Brute-force protection: failed-login counters per account and per client IP.

A key (``user:NAME`` or ``ip:ADDRESS``) counts failures within a window that starts at its
first failure. The failure that reaches ``max_failures`` locks the key for ``lock`` seconds;
while locked, no password is checked. A failure after the window or after a lock has ended
starts a new count. A successful login clears the account's counter but not the IP's, so
one valid account cannot launder an attacker's address.

The rules are pure functions (:func:`check`, :func:`after_failure`). The database versions do
the same in one atomic statement each (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``,
SQLite >= 3.35 and PostgreSQL), so several Authentication services share counters safely.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, literal, null, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gatehouse.storage.models import LoginFailure
from gatehouse.storage.types import UTCDateTime


@dataclass(frozen=True, slots=True)
class Rule:
    max_failures: int
    window: timedelta
    lock: timedelta

    @classmethod
    def of(cls, max_failures: int, window: float, lock: float) -> Rule:
        return cls(max_failures, timedelta(seconds=window), timedelta(seconds=lock))


@dataclass(frozen=True, slots=True)
class Counter:
    """A key's stored state (a ``login_failures`` row)."""

    count: int
    first_at: datetime
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class Verdict:
    locked: bool
    #: Whole seconds until the lock ends (0 when not locked).
    retry_after: int = 0


OPEN = Verdict(False)


def account_key(username: str) -> str:
    return f"user:{username}"


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


def starts_over(counter: Counter, now: datetime, rule: Rule) -> bool:
    """A failure at ``now`` starts a new count: the window has passed or a lock has ended."""
    window_over = counter.first_at <= now - rule.window
    lock_over = counter.locked_until is not None and counter.locked_until <= now
    return window_over or lock_over


def after_failure(counter: Counter | None, now: datetime, rule: Rule) -> Counter:
    """The key's state after one more failure at ``now``."""
    if counter is None or starts_over(counter, now, rule):
        count, first_at, locked_until = 1, now, None
    else:
        count, first_at, locked_until = counter.count + 1, counter.first_at, counter.locked_until
    if count >= rule.max_failures:
        locked_until = now + rule.lock
    return Counter(count, first_at, locked_until)


# -- database ------------------------------------------------------------------------------

_F = LoginFailure
_COLUMNS = (_F.count, _F.first_at, _F.locked_until)


async def load(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, Counter]:
    query = select(_F.key, *_COLUMNS).where(_F.key.in_(list(keys)))
    rows = (await conn.execute(query)).all()
    return {
        key: Counter(count, first_at, locked_until) for key, count, first_at, locked_until in rows
    }


async def check_keys(conn: AsyncConnection, keys: Iterable[str], now: datetime) -> Verdict:
    counters: Mapping[str, Counter] = await load(conn, keys)
    return combine(check(counter, now) for counter in counters.values())


async def record_failure(conn: AsyncConnection, key: str, now: datetime, rule: Rule) -> Counter:
    """:func:`after_failure` as one atomic upsert; returns the new state."""
    now_ = literal(now, UTCDateTime())
    lock_until = literal(now + rule.lock, UTCDateTime())
    over = or_(
        _F.first_at <= literal(now - rule.window, UTCDateTime()),
        and_(_F.locked_until.is_not(None), _F.locked_until <= now_),
    )
    count = case((over, 1), else_=_F.count + 1)
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    first_locks = rule.max_failures <= 1
    statement = (
        insert(_F)
        .values(
            key=key,
            count=1,
            first_at=now,
            locked_until=now + rule.lock if first_locks else None,
        )
        .on_conflict_do_update(
            index_elements=[_F.key],
            set_={
                "count": count,
                "first_at": case((over, now_), else_=_F.first_at),
                "locked_until": case(
                    (count >= rule.max_failures, lock_until),
                    (over, null()),
                    else_=_F.locked_until,
                ),
            },
        )
        .returning(*_COLUMNS)
    )
    count_, first_at, locked_until = (await conn.execute(statement)).one()
    return Counter(count_, first_at, locked_until)


async def reset(conn: AsyncConnection, key: str) -> None:
    await conn.execute(delete(_F).where(_F.key == key))

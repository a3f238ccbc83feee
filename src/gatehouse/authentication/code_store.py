"""The OATH DB's one-time codes (``oath_codes``) and resend throttle (``oath_code_sends``):
every change that single use and the limits rely on is one statement or one locked
transaction, committed before the method returns.

- A code is accepted once (:meth:`CodeStore.consume`): one conditional ``UPDATE`` sets
  ``consumed_at`` where the code is unconsumed, unexpired and has attempts left, or was
  consumed by this same submission (``attempt``: a retry on another Authentication service
  after the first died between its commit and its answer is answered ok again). The row count
  decides, so of any number of services given one code at once exactly one accepts it.
- A wrong code counts one failure on every live code of the user and method
  (:meth:`CodeStore.fail`, one ``UPDATE ... RETURNING``); at ``max_attempts`` a code is dead.
- A send (:meth:`CodeStore.create`) first locks the user's throttle row with a write (``UPDATE
  ... SET version = version + 1``: PostgreSQL's row lock, SQLite's single writer), then reads
  it, decides (:func:`gatehouse.authentication.codes.throttle`) and inserts the code in the same
  transaction: two sends at once are counted one after the other. The caller's ``send_key`` is
  unique, so a retry of one send finds the code it made instead of making another.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, literal, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.authentication.codes import Throttle, throttle
from gatehouse.authentication.config import CodeSettings
from gatehouse.oath.models import OathCode, OathCodeSends
from gatehouse.storage.engine import translate_errors
from gatehouse.storage.retry import NO_WAIT, Waiting, waits
from gatehouse.storage.types import UTCDateTime

_C = OathCode
_S = OathCodeSends
_COLUMNS = tuple(OathCode.__table__.columns)
#: Rows are kept this long past their expiry (the answer "expired" rather than "invalid"),
#: then purged.
KEEP_EXPIRED = timedelta(hours=1)
#: Codes of one user and method looked at per check (a user has at most ``resend_max`` a
#: window; older ones are long expired).
MAX_CANDIDATES = 50
_CREATE_TRIES = 8


@dataclass(frozen=True, slots=True)
class CodeRow:
    """A code as stored (never the code: its hash, and while unsubmitted its sealed copy)."""

    id: int
    username: str
    method: str
    send_key: str
    key_id: str
    code_hash: bytes = field(repr=False)
    sealed: bytes | None = field(repr=False)
    digits: int
    message_id: str | None
    recipient_hint: str
    created_at: datetime
    expires_at: datetime
    failures: int
    consumed_at: datetime | None
    attempt: str | None


@dataclass(frozen=True, slots=True)
class NewCode:
    username: str
    method: str
    send_key: str
    key_id: str
    code_hash: bytes = field(repr=False)
    sealed: bytes = field(repr=False)
    digits: int
    recipient_hint: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Created:
    """The send's code: made now (``new``) or by an earlier try of the same send."""

    row: CodeRow
    new: bool


def _row(row: Mapping[Any, Any]) -> CodeRow:
    return CodeRow(**{column.name: row[column.name] for column in _COLUMNS})


def _at(moment: datetime) -> Any:
    return literal(moment, UTCDateTime())


def _rowcount(result: CursorResult[Any]) -> int:
    return int(result.rowcount or 0)


class _Again(Exception):
    """A concurrent first send for the same user or key: try the transaction again."""


class CodeStore:
    """The code tables of one OATH DB; driver errors meaning "database unavailable" are
    raised as :class:`~gatehouse.storage.errors.DatabaseUnavailable`.

    ``waiting`` (``database.failover_wait``): every method waits for an unavailable database
    (a primary being replaced), run again whole; each is harmless to repeat (a send finds the
    code of its ``send_key``, a consumption is accepted again for its ``attempt``) except
    :meth:`fail`, whose count carries its check's id and is resolved by reading it back."""

    def __init__(self, engine: AsyncEngine, waiting: Waiting = NO_WAIT) -> None:
        self.engine = engine
        self.waiting = waiting

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with translate_errors(), self.engine.begin() as conn:
            yield conn

    # -- sending ---------------------------------------------------------------------------

    @waits
    async def by_send_key(self, send_key: str) -> CodeRow | None:
        async with self._transaction() as conn:
            found = (await conn.execute(select(*_COLUMNS).where(_C.send_key == send_key))).first()
        return None if found is None else _row(found._mapping)

    @waits
    async def create(self, new: NewCode, settings: CodeSettings, now: float) -> Created | Throttle:
        """Store ``new`` if the throttle allows one more code for its user now (``now``: Unix
        time), counting it; the code an earlier try of the same ``send_key`` made (not
        counted again); or the throttle's refusal."""
        for _ in range(_CREATE_TRIES):
            try:
                return await self._create_once(new, settings, now)
            except (_Again, IntegrityError):
                continue
        raise _Again("the resend throttle row kept changing")  # pragma: no cover

    async def _create_once(
        self, new: NewCode, settings: CodeSettings, now: float
    ) -> Created | Throttle:
        async with self._transaction() as conn:
            bump = update(_S).where(_S.username == new.username).values(version=_S.version + 1)
            locked = _rowcount(await conn.execute(bump)) == 1
            existing = (
                await conn.execute(select(*_COLUMNS).where(_C.send_key == new.send_key))
            ).first()
            if existing is not None:
                return Created(_row(existing._mapping), new=False)
            sends: list[float] = []
            if locked:
                stored = await conn.scalar(select(_S.sends).where(_S.username == new.username))
                sends = [float(t) for t in stored or [] if isinstance(t, int | float)]
            decision = throttle(sends, now, settings)
            if not decision.allowed:
                return decision
            if locked:
                change = update(_S).where(_S.username == new.username)
                await conn.execute(change.values(sends=list(decision.sends)))
            else:
                # The user's first send: a concurrent one inserting too makes this fail
                # (IntegrityError), and the next try finds the row and locks it.
                await conn.execute(
                    insert(_S).values(username=new.username, sends=list(decision.sends), version=1)
                )
            values = {
                "username": new.username,
                "method": new.method,
                "send_key": new.send_key,
                "key_id": new.key_id,
                "code_hash": new.code_hash,
                "sealed": new.sealed,
                "digits": new.digits,
                "message_id": None,
                "recipient_hint": new.recipient_hint,
                "created_at": new.created_at,
                "expires_at": new.expires_at,
                "failures": 0,
                "consumed_at": None,
                "attempt": None,
            }
            created = (await conn.execute(insert(_C).values(**values).returning(*_COLUMNS))).one()
        return Created(_row(created._mapping), new=True)

    @waits
    async def accepted(self, code_id: int, message_id: str) -> bool:
        """The Distribution service accepted the code's message: remember its id and erase
        the sealed copy (nothing but the hash is left). False if another id is recorded."""
        statement = (
            update(_C)
            .where(_C.id == code_id, or_(_C.message_id.is_(None), _C.message_id == message_id))
            .values(message_id=message_id, sealed=None)
        )
        async with self._transaction() as conn:
            return _rowcount(await conn.execute(statement)) == 1

    @waits
    async def abandon(self, code_id: int) -> None:
        """The message cannot be delivered (refused by Distribution): the code is dead."""
        statement = update(_C).where(_C.id == code_id).values(sealed=None, failures=1_000_000)
        async with self._transaction() as conn:
            await conn.execute(statement)

    @waits
    async def by_message(self, username: str, message_id: str) -> CodeRow | None:
        query = select(*_COLUMNS).where(_C.username == username, _C.message_id == message_id)
        async with self._transaction() as conn:
            found = (await conn.execute(query)).first()
        return None if found is None else _row(found._mapping)

    @waits
    async def latest(
        self, username: str, method: str, now: datetime, max_attempts: int
    ) -> CodeRow | None:
        """The user's newest code for ``method`` whose message was accepted and that can still
        be used (unconsumed, unexpired, attempts left)."""
        query = (
            select(*_COLUMNS)
            .where(
                _C.username == username,
                _C.method == method,
                _C.message_id.is_not(None),
                _C.consumed_at.is_(None),
                _C.expires_at > _at(now),
                _C.failures < max_attempts,
            )
            .order_by(_C.id.desc())
            .limit(1)
        )
        async with self._transaction() as conn:
            found = (await conn.execute(query)).first()
        return None if found is None else _row(found._mapping)

    # -- checking --------------------------------------------------------------------------

    @waits
    async def candidates(self, username: str, method: str) -> list[CodeRow]:
        """The user's codes for ``method`` not purged yet, newest first."""
        query = (
            select(*_COLUMNS)
            .where(_C.username == username, _C.method == method)
            .order_by(_C.id.desc())
            .limit(MAX_CANDIDATES)
        )
        async with self._transaction() as conn:
            return [_row(r._mapping) for r in (await conn.execute(query)).all()]

    @waits
    async def consume(self, code_id: int, attempt: str, now: datetime, max_attempts: int) -> bool:
        """Accept the code once: True for the one caller that consumed it (or a retry of the
        submission that did), False when it was consumed by another, expired or is dead."""
        at = _at(now)
        fresh = and_(_C.consumed_at.is_(None), _C.expires_at > at, _C.failures < max_attempts)
        retried = and_(_C.consumed_at.is_not(None), _C.attempt == attempt)
        statement = (
            update(_C)
            .where(_C.id == code_id, or_(fresh, retried))
            .values(consumed_at=func.coalesce(_C.consumed_at, at), attempt=attempt, sealed=None)
        )
        async with self._transaction() as conn:
            return _rowcount(await conn.execute(statement)) == 1

    async def fail(
        self, username: str, method: str, now: datetime, max_attempts: int
    ) -> Sequence[int]:
        """Count a wrong code on every live code of the user and method; their new counts
        (empty: none was live). The rows counted carry this check's id (``attempt``, which
        only a consumption reads, and only on a consumed code), so a count whose commit was
        cut off by a failover is read back, not counted twice."""
        check = f"fail:{secrets.token_urlsafe(16)}"
        statement = (
            update(_C)
            .where(
                _C.username == username,
                _C.method == method,
                _C.consumed_at.is_(None),
                _C.expires_at > _at(now),
                _C.failures < max_attempts,
            )
            .values(failures=_C.failures + 1, attempt=check)
            .returning(_C.failures)
        )
        counted = select(_C.failures).where(
            _C.username == username, _C.method == method, _C.attempt == check
        )

        async def write(conn: AsyncConnection) -> Sequence[int]:
            return [int(r.failures) for r in (await conn.execute(statement)).all()]

        async def resolve(conn: AsyncConnection) -> Sequence[int] | None:
            found = [int(r.failures) for r in (await conn.execute(counted)).all()]
            return found or None  # none: not committed (or nothing was live: count again)

        return await self.waiting.run(self._transaction, write, resolve)

    # -- housekeeping ----------------------------------------------------------------------

    @waits
    async def purge(self, now: datetime) -> int:
        """Erase what is left to erase of expired codes, delete those long expired; returns
        how many rows went."""
        async with self._transaction() as conn:
            await conn.execute(
                update(_C)
                .where(_C.expires_at <= _at(now), _C.sealed.is_not(None))
                .values(sealed=None)
            )
            gone = await conn.execute(delete(_C).where(_C.expires_at <= _at(now - KEEP_EXPIRED)))
        return _rowcount(gone)


__all__ = ["KEEP_EXPIRED", "CodeRow", "CodeStore", "Created", "NewCode"]

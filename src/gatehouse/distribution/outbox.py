"""The outbox: accepted messages in the outbox DB, and the atomic updates delivery relies on.

A message is accepted once its row is committed (:meth:`Outbox.submit` returns after the
commit). A caller's key is unique: a second submit with it answers the existing message.

Delivery workers of any number of Distribution services share the table through leases.
:meth:`Outbox.claim` takes due messages and sets ``lease_owner``/``lease_until`` in one
statement: on PostgreSQL the candidates are selected ``FOR UPDATE SKIP LOCKED`` (two services
never wait on each other nor take the same row), on SQLite the one conditional ``UPDATE`` runs
alone (one writer at a time). A message whose lease ran out (its service died) is due again.
Every later change of a claimed row names the lease owner, so a service that lost its lease
changes nothing but the ``sent`` mark (a message it did deliver was delivered).

Bodies are erased (``body_ciphertext`` NULL) in the same update that marks a message sent or
expired.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.distribution.calls import Status
from gatehouse.distribution.models import ERROR_LENGTH, PENDING, OutboxMessage
from gatehouse.storage.engine import translate_errors
from gatehouse.storage.retry import NO_WAIT, Waiting, waits
from gatehouse.storage.types import UTCDateTime

__all__ = ["MessageRow", "NewMessage", "Outbox", "new_message_id"]

_M = OutboxMessage
_COLUMNS = tuple(OutboxMessage.__table__.columns)
_INSERT = insert(_M)


def new_message_id() -> str:
    """128 random bits, URL-safe (22 characters); never starting with ``-`` so that it can
    be given to a command line as it is (``gatehouse outbox show ID``)."""
    while True:
        message_id = secrets.token_urlsafe(16)
        if not message_id.startswith("-"):
            return message_id


@dataclass(frozen=True, slots=True)
class NewMessage:
    id: str
    key: str
    purpose: str
    username: str | None
    email: str | None
    phone: str | None
    body_key_id: str
    body_ciphertext: bytes = field(repr=False)
    #: The caller's order of channel kinds, or None for the configured order.
    channels: tuple[str, ...] | None
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message as stored (``body_ciphertext`` left out of the repr)."""

    id: str
    key: str
    purpose: str
    username: str | None
    email: str | None
    phone: str | None
    body_key_id: str | None
    body_ciphertext: bytes | None = field(repr=False)
    channels: tuple[str, ...] | None
    status: Status
    attempts: int
    rounds: int
    next_attempt_at: datetime
    expires_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    sent_channel: str | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


def row_to_message(row: Mapping[Any, Any]) -> MessageRow:
    channels = row["channels"]
    blob = row["body_ciphertext"]
    return MessageRow(
        id=row["id"],
        key=row["key"],
        purpose=row["purpose"],
        username=row["username"],
        email=row["email"],
        phone=row["phone"],
        body_key_id=row["body_key_id"],
        body_ciphertext=bytes(blob) if blob is not None else None,
        channels=tuple(channels.split(",")) if channels else None,
        status=cast(Status, row["status"]),
        attempts=int(row["attempts"]),
        rounds=int(row["rounds"]),
        next_attempt_at=row["next_attempt_at"],
        expires_at=row["expires_at"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
        sent_channel=row["sent_channel"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
    )


def _at(moment: datetime) -> ColumnElement[datetime]:
    return literal(moment, UTCDateTime())


def _free(now: datetime) -> ColumnElement[bool]:
    """Not leased, or leased by a service whose lease ran out."""
    return or_(_M.lease_until.is_(None), _M.lease_until <= _at(now))


def _short(error: str) -> str:
    return error if len(error) <= ERROR_LENGTH else error[: ERROR_LENGTH - 3] + "..."


def _rowcount(result: CursorResult[Any]) -> int:
    return int(result.rowcount or 0)


class Outbox:
    """The ``outbox_messages`` table of one outbox DB. Every method is one transaction,
    committed before it returns; "database unavailable" driver errors are raised as
    :class:`~gatehouse.storage.errors.DatabaseUnavailable`.

    ``waiting`` (the Distribution service's ``database.failover_wait``): every method waits
    for an unavailable database (a primary being replaced), its transaction run again whole.
    An insert whose commit was cut off is resolved by reading its message ids (chosen before
    the write): a message is accepted once, and answered as new. The other writes are
    conditional on the lease or the status, so harmless to repeat: a repeat changes and
    returns only what is left to change (a message expired by a commit that was cut off is
    not returned again, so its one audit event is not written; messages claimed by one are
    delivered once their lease runs out)."""

    def __init__(self, engine: AsyncEngine, waiting: Waiting = NO_WAIT) -> None:
        self.engine = engine
        self.waiting = waiting
        # SQLite takes one writer at a time and makes the others sleep and retry (the busy
        # timeout, in steps of milliseconds): the writes of this process go one by one
        # instead. PostgreSQL needs no such thing.
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock()
        self._pending: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []
        self._inserter: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        if self._sqlite:
            async with self._write_lock, translate_errors(), self.engine.begin() as conn:
                yield conn
            return
        async with translate_errors(), self.engine.begin() as conn:
            yield conn

    # -- accepting -------------------------------------------------------------------------

    async def submit(
        self, message: NewMessage, lease: tuple[str, datetime] | None = None
    ) -> tuple[MessageRow, bool]:
        """Store ``message`` (due now), or find the one stored with its key.

        ``lease``: ``(owner, until)``, the message is stored already claimed by ``owner``
        (the service that accepts it and has a worker free delivers it at once, without a
        claim of its own; should it die, the lease runs out as for any claim).

        Returns:
            The stored row and whether it is new (False: the key was known; the row is the
            earlier message's, whatever this one says).
        """
        values = {
            "id": message.id,
            "key": message.key,
            "purpose": message.purpose,
            "username": message.username,
            "email": message.email,
            "phone": message.phone,
            "body_key_id": message.body_key_id,
            "body_ciphertext": message.body_ciphertext,
            "channels": ",".join(message.channels) if message.channels is not None else None,
            "status": "accepted",
            "attempts": 0,
            "rounds": 0,
            "next_attempt_at": message.created_at,
            "expires_at": message.expires_at,
            "created_at": message.created_at,
            "lease_owner": lease[0] if lease is not None else None,
            "lease_until": lease[1] if lease is not None else None,
        }
        if not await self._insert(values):
            existing = await self.by_key(message.key)
            if existing is None:  # not the key: the id (a 128-bit random collision)?
                raise RuntimeError(f"message {message.id} refused by the outbox DB")
            return existing, False
        stored: dict[str, Any] = {column.name: None for column in _COLUMNS}
        stored.update(values)
        return row_to_message(stored), True

    async def _insert(self, values: dict[str, Any]) -> bool:
        """Insert one row, committed before this returns; False if its key (or id) exists.

        Group commit: rows submitted while a transaction is under way are inserted together
        in the next one (one commit for all of them), each caller answered once it is
        committed. Concurrent submissions pay one commit between them, not one each.
        """
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((values, done))
        if self._inserter is None or self._inserter.done():
            self._inserter = asyncio.create_task(self._insert_pending())
        return await done

    async def _insert_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                # One statement built once (its compiled form cached), the rows bound.
                await self._insert_rows([values for values, _ in batch])
            except IntegrityError:
                # A key given twice: each row alone, so that only that one is refused.
                for values, done in batch:
                    try:
                        await self._insert_rows([values])
                    except IntegrityError:
                        _settle(done, False)
                    except Exception as error:
                        _settle(done, error)
                    else:
                        _settle(done, True)
            except BaseException as error:
                for _, done in batch:
                    _settle(done, error)
                if isinstance(error, asyncio.CancelledError):
                    raise
            else:
                for _, done in batch:
                    _settle(done, True)

    async def _insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` in one transaction, waiting through a failover; a commit cut off is
        resolved by reading whether the rows' ids are stored (all or none of them are)."""
        ids = [values["id"] for values in rows]

        async def write(conn: AsyncConnection) -> bool:
            await conn.execute(_INSERT, rows)
            return True

        async def resolve(conn: AsyncConnection) -> bool | None:
            found = (await conn.execute(select(_M.id).where(_M.id.in_(ids)))).first()
            return True if found is not None else None

        await self.waiting.run(self._transaction, write, resolve)

    @waits
    async def by_key(self, key: str) -> MessageRow | None:
        async with self._transaction() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(_M.key == key))).first()
        return None if row is None else row_to_message(row._mapping)

    @waits
    async def get(self, message_id: str) -> MessageRow | None:
        async with self._transaction() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(_M.id == message_id))).first()
        return None if row is None else row_to_message(row._mapping)

    @waits
    async def list_messages(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[MessageRow]:
        """The newest messages first (only those with ``status`` if given)."""
        query = select(*_COLUMNS).order_by(_M.created_at.desc(), _M.id).limit(limit)
        if status is not None:
            query = query.where(_M.status == status)
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [row_to_message(row._mapping) for row in rows]

    @waits
    async def counts(self) -> dict[str, int]:
        """Messages per status."""
        query = select(_M.status, func.count()).group_by(_M.status)
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        return {str(status): int(count) for status, count in rows}

    # -- delivery --------------------------------------------------------------------------

    @waits
    async def claim(self, owner: str, limit: int, lease: float, now: datetime) -> list[MessageRow]:
        """Lease up to ``limit`` due messages (oldest due first) to ``owner`` until
        ``now + lease``; the rows as leased."""
        if limit <= 0:
            return []
        params = {
            "now": now,
            "limit": limit,
            "owner": owner,
            "until": now + timedelta(seconds=lease),
        }
        async with self._transaction() as conn:
            rows = (await conn.execute(_CLAIM, params)).all()
        return sorted((row_to_message(row._mapping) for row in rows), key=_due_order)

    @waits
    async def next_due(self) -> datetime | None:
        """When the earliest pending message is due (None: nothing pending)."""
        query = select(func.min(_M.next_attempt_at)).where(_M.status.in_(PENDING))
        async with self._transaction() as conn:
            value: datetime | None = (await conn.execute(query)).scalar()
        return value

    async def mark_sent(self, message_id: str, channel: str, attempts: int, now: datetime) -> bool:
        """The message went out over ``channel`` after ``attempts`` more channel attempts:
        sent, body erased. Whoever holds the lease: it was delivered. False if it was marked
        sent already (by another service that delivered it too)."""
        return await self.mark_all_sent([(message_id, channel, attempts)], now) == 1

    @waits
    async def mark_all_sent(self, sent: Sequence[tuple[str, str, int]], now: datetime) -> int:
        """:meth:`mark_sent` for several ``(id, channel, attempts)`` in one transaction (one
        statement per channel and attempt count); how many were marked."""
        groups: dict[tuple[str, int], list[str]] = {}
        for message_id, channel, attempts in sent:
            groups.setdefault((channel, attempts), []).append(message_id)
        marked = 0
        async with self._transaction() as conn:
            for (channel, attempts), ids in groups.items():
                params = {"ids": ids, "channel": channel, "attempts": attempts, "now": now}
                marked += _rowcount(await conn.execute(_MARK_SENT, params))
        return marked

    @waits
    async def mark_failed(
        self,
        message_id: str,
        owner: str,
        attempts: int,
        error: str,
        next_attempt_at: datetime,
    ) -> bool:
        """Every channel failed this round: due again at ``next_attempt_at``. Only while
        ``owner`` holds the lease."""
        statement = (
            update(_M)
            .where(_M.id == message_id, _M.lease_owner == owner, _M.status.in_(PENDING))
            .values(
                status="failed",
                attempts=_M.attempts + attempts,
                rounds=_M.rounds + 1,
                last_error=_short(error),
                next_attempt_at=_at(next_attempt_at),
                lease_owner=null(),
                lease_until=null(),
            )
        )
        async with self._transaction() as conn:
            return _rowcount(await conn.execute(statement)) == 1

    @waits
    async def extend(self, message_id: str, owner: str, until: datetime) -> bool:
        """Lengthen ``owner``'s lease on a message it is delivering; False if it lost it."""
        statement = (
            update(_M)
            .where(_M.id == message_id, _M.lease_owner == owner, _M.status.in_(PENDING))
            .values(lease_until=_at(until))
        )
        async with self._transaction() as conn:
            return _rowcount(await conn.execute(statement)) == 1

    @waits
    async def release(self, message_id: str, owner: str, attempts: int = 0) -> bool:
        """Give a claimed message back untried (this service stops, or a channel that was
        tried is counted in ``attempts``): due again at once for any service."""
        statement = (
            update(_M)
            .where(_M.id == message_id, _M.lease_owner == owner, _M.status.in_(PENDING))
            .values(attempts=_M.attempts + attempts, lease_owner=null(), lease_until=null())
        )
        async with self._transaction() as conn:
            return _rowcount(await conn.execute(statement)) == 1

    @waits
    async def expire(
        self, now: datetime, *, owner: str | None = None, message_id: str | None = None
    ) -> list[MessageRow]:
        """Dead-letter pending messages whose expiry has passed and that nobody else is
        delivering (free, or leased to ``owner``; only ``message_id`` if given): status
        ``expired``, body erased. The rows expired, each returned to one caller only (for
        the one audit event)."""
        free = _free(now) if owner is None else or_(_free(now), _M.lease_owner == owner)
        condition = and_(_M.status.in_(PENDING), _M.expires_at <= _at(now), free)
        if message_id is not None:
            condition = and_(condition, _M.id == message_id)
        statement = (
            update(_M)
            .where(condition)
            .values(
                status="expired",
                body_ciphertext=null(),
                lease_owner=null(),
                lease_until=null(),
            )
            .returning(*_COLUMNS)
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(statement)).all()
        return [row_to_message(row._mapping) for row in rows]

    @waits
    async def retry(self, message_id: str, now: datetime) -> MessageRow | None:
        """An administrator's retry: a ``failed`` message due again now, its backoff reset.
        Only before its expiry (a code is useless after it, and an expired message's body is
        erased); None if the message is not pending (or does not exist)."""
        statement = (
            update(_M)
            .where(
                _M.id == message_id,
                _M.status.in_(PENDING),
                _M.expires_at > _at(now),
            )
            .values(next_attempt_at=_at(now), rounds=0)
            .returning(*_COLUMNS)
        )
        async with self._transaction() as conn:
            row = (await conn.execute(statement)).first()
        return None if row is None else row_to_message(row._mapping)

    @waits
    async def purge(self, before: datetime, batch: int = 1000) -> int:
        """Delete sent and expired messages created before ``before`` (at most ``batch``)."""
        old = (
            select(_M.id)
            .where(_M.status.in_(("sent", "expired")), _M.created_at < _at(before))
            .limit(batch)
        )
        statement = delete(_M).where(_M.id.in_(old.scalar_subquery()))
        async with self._transaction() as conn:
            return _rowcount(await conn.execute(statement))

    @waits
    async def bodies(self) -> Sequence[tuple[str, bytes | None]]:
        """Every message id and its ciphertext (tests: erased bodies)."""
        async with self._transaction() as conn:
            rows = (await conn.execute(select(_M.id, _M.body_ciphertext))).all()
        return [(str(r[0]), bytes(r[1]) if r[1] is not None else None) for r in rows]


def _due_now() -> ColumnElement[bool]:
    now = bindparam("now", type_=UTCDateTime())
    free = or_(_M.lease_until.is_(None), _M.lease_until <= now)
    return and_(_M.status.in_(PENDING), _M.next_attempt_at <= now, _M.expires_at > now, free)


#: :meth:`Outbox.claim`, built once: a statement made per call costs more than running it.
_CLAIM = (
    update(_M)
    .where(
        _M.id.in_(
            select(_M.id)
            .where(_due_now())
            .order_by(_M.next_attempt_at)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer anyway
            .scalar_subquery()
        ),
        _due_now(),
    )
    .values(lease_owner=bindparam("owner"), lease_until=bindparam("until", type_=UTCDateTime()))
    .returning(*_COLUMNS)
)

_MARK_SENT = (
    update(_M)
    .where(_M.id.in_(bindparam("ids", expanding=True)), _M.status != "sent")
    .values(
        status="sent",
        sent_channel=bindparam("channel"),
        sent_at=bindparam("now", type_=UTCDateTime()),
        attempts=_M.attempts + bindparam("attempts"),
        body_ciphertext=null(),
        lease_owner=null(),
        lease_until=null(),
        last_error=null(),
    )
)


def _settle(done: asyncio.Future[bool], outcome: bool | BaseException) -> None:
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


def _due_order(message: MessageRow) -> tuple[datetime, str]:
    return message.next_attempt_at, message.id

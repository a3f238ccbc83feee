"""The OATH DB's tokens: the admin operations, and the atomic updates that validation relies on.

A code is used once across every Authentication service sharing the database: the accepted
TOTP step or HOTP counter is consumed by one conditional ``UPDATE`` (``... WHERE id = :id AND
last_step < :step``), committed before the method returns, and the row count says whether this
caller won. PostgreSQL re-checks the condition of a row a concurrent transaction changed, and
SQLite runs one writer at a time, so of any number of simultaneous callers exactly one wins.
Failures are counted and the token locked in the same way: one ``UPDATE ... RETURNING``.

A token *answers* (:func:`usable`) when it is ``active``, or ``locked`` with a lock that has
run out (``locked_until`` passed; NULL means until an administrator unlocks it). A success
clears the failures and an expired lock; a failure after an expired lock locks again at once.
``pending`` tokens (enrolment not confirmed) only answer :meth:`TokenStore.activate_totp` and
never lock, so unlocking cannot skip a confirmation; a user has at most one pending token
(:meth:`TokenStore.replace_pending`). Seeds are stored as the caller's ciphertext with the id of
the key that made it; this module never sees a seed.

Validation may name the submission (``attempt``) that consumes a step or counter; it is kept
with the token (``last_attempt``), and the same submission asking again is accepted again
without moving anything (a retry after the first answer was lost), any other is refused.
``oath_users`` holds an administrator's "enrol at the next login" flag per user.

GatehouseError
 └── TokenStoreError      a token operation cannot be done
      ├── TokenExists     the serial is taken
      ├── TokenNotFound   no token has that serial (or id)
      ├── TokenAssigned   the token belongs to someone else
      └── InvalidToken    a field is out of range (type, digits, serial, ...)
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
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

from gatehouse.errors import GatehouseError
from gatehouse.oath.models import (
    ALGORITHMS,
    DIGITS,
    KEY_ID_LENGTH,
    NO_STEP,
    PERIODS,
    SERIAL_LENGTH,
    TOKEN_STATES,
    TOKEN_TYPES,
    Algorithm,
    OathToken,
    OathUser,
    TokenState,
    TokenType,
)
from gatehouse.storage.directory import valid_username
from gatehouse.storage.engine import translate_errors
from gatehouse.storage.retry import NO_WAIT, Waiting, waits
from gatehouse.storage.types import UTCDateTime, utcnow

#: A counter is stored as the next one expected, so the last usable one is one below the top.
MAX_COUNTER = 2**63 - 2
#: Rows per INSERT of an import (all in one transaction): the progress an import reports.
IMPORT_BATCH = 500
_SERIAL = re.compile(r"^[!-~]+$")  # printable ASCII, no spaces


class TokenStoreError(GatehouseError):
    """A token operation that cannot be done."""


class TokenExists(TokenStoreError):
    """A token with that serial exists already."""


class TokenNotFound(TokenStoreError):
    """No token has that serial (or id)."""


class TokenAssigned(TokenStoreError):
    """The token is assigned to another user (unassign it first)."""


class InvalidToken(TokenStoreError):
    """A token field is out of range."""


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A token as stored; ``seed_ciphertext`` is left out of the repr."""

    id: int
    serial: str
    owner: str | None
    type: TokenType
    algorithm: Algorithm
    digits: int
    period: int
    seed_key_id: str
    seed_ciphertext: bytes = field(repr=False)
    counter: int
    last_step: int
    drift: int
    failures: int
    state: TokenState
    locked_until: datetime | None
    description: str
    created_at: datetime
    last_used_at: datetime | None
    #: The submission that consumed ``last_step`` or the last counter (None: none named).
    last_attempt: str | None = None


@dataclass(frozen=True, slots=True)
class FailureResult:
    """A token's count after one more failure, and whether it is locked now."""

    failures: int
    state: TokenState
    locked_until: datetime | None

    @property
    def locked(self) -> bool:
        return self.state == "locked"


# -- pure helpers --------------------------------------------------------------------------


def row_to_token(row: Mapping[Any, Any]) -> TokenRow:
    """A :class:`TokenRow` from a row of ``oath_tokens`` (a result's ``_mapping``)."""
    return TokenRow(
        id=int(row["id"]),
        serial=row["serial"],
        owner=row["owner"],
        type=cast(TokenType, row["type"]),
        algorithm=cast(Algorithm, row["algorithm"]),
        digits=int(row["digits"]),
        period=int(row["period"]),
        seed_key_id=row["seed_key_id"],
        seed_ciphertext=bytes(row["seed_ciphertext"]),
        counter=int(row["counter"]),
        last_step=int(row["last_step"]),
        drift=int(row["drift"]),
        failures=int(row["failures"]),
        state=cast(TokenState, row["state"]),
        locked_until=row["locked_until"],
        description=row["description"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        last_attempt=row.get("last_attempt"),
    )


def usable(token: TokenRow, now: datetime) -> bool:
    """Does the token answer at ``now``: active, or locked by a lock that has run out?
    (The SQL of :meth:`TokenStore.consume_totp` and :meth:`TokenStore.active_for`.)"""
    if token.state == "active":
        return True
    return token.state == "locked" and token.locked_until is not None and token.locked_until <= now


def check_serial(serial: str) -> str:
    if not (1 <= len(serial) <= SERIAL_LENGTH and _SERIAL.match(serial)):
        raise InvalidToken(
            f"invalid serial {serial!r}: use 1-{SERIAL_LENGTH} printable ASCII characters "
            "without spaces"
        )
    return serial


def check_owner(owner: str) -> str:
    if not valid_username(owner):
        raise InvalidToken(f"invalid owner {owner!r}: not a valid username")
    return owner


def check_state(state: str) -> TokenState:
    if state not in TOKEN_STATES:
        raise InvalidToken(f"invalid state {state!r}: one of {', '.join(TOKEN_STATES)}")
    return cast(TokenState, state)


def check_fields(
    *,
    serial: str,
    type: str,
    algorithm: str,
    digits: int,
    period: int,
    seed_key_id: str,
    owner: str | None,
    state: str,
    counter: int,
) -> None:
    """Raise :class:`InvalidToken` naming the first field out of range."""
    check_serial(serial)
    if type not in TOKEN_TYPES:
        raise InvalidToken(f"invalid type {type!r}: one of {', '.join(TOKEN_TYPES)}")
    if algorithm not in ALGORITHMS:
        raise InvalidToken(f"invalid algorithm {algorithm!r}: one of {', '.join(ALGORITHMS)}")
    if digits not in DIGITS:
        raise InvalidToken(f"invalid digits {digits!r}: 6 or 8")
    if period not in PERIODS:
        raise InvalidToken(f"invalid period {period!r}: 30 or 60 seconds")
    if not 1 <= len(seed_key_id) <= KEY_ID_LENGTH:
        raise InvalidToken(f"invalid seed key id: 1-{KEY_ID_LENGTH} characters")
    if owner is not None:
        check_owner(owner)
    check_state(state)
    if not 0 <= counter <= MAX_COUNTER:
        raise InvalidToken(f"invalid counter {counter}: 0 to {MAX_COUNTER}")


# -- statements ----------------------------------------------------------------------------

_T = OathToken
_COLUMNS = tuple(OathToken.__table__.columns)


@functools.cache
def _owner_status_queries() -> tuple[Any, Any]:
    """:meth:`OathStore.owner_status`'s two selects, bound to ``b_owner``."""
    owner: Any = bindparam("b_owner", type_=_T.owner.type)
    tokens = select(*_COLUMNS).where(_T.owner == owner).order_by(_T.serial)
    required = select(OathUser.enrol_required).where(OathUser.username == owner)
    return tokens, required


def _at(moment: datetime) -> ColumnElement[datetime]:
    return literal(moment, UTCDateTime())


def _usable_at(now: datetime) -> ColumnElement[bool]:
    """:func:`usable` in SQL."""
    expired_lock = and_(
        _T.state == "locked", _T.locked_until.is_not(None), _T.locked_until <= _at(now)
    )
    return or_(_T.state == "active", expired_lock)


def _rowcount(result: CursorResult[Any]) -> int:
    return int(result.rowcount or 0)


def _same_attempt(attempt: str | None) -> ColumnElement[bool]:
    """The token's last consumption was made by ``attempt`` (never true for None)."""
    if attempt is None:
        return literal(False)
    return _T.last_attempt == attempt


def _accepted(when: datetime, attempt: str | None) -> dict[str, Any]:
    """What accepting a code writes, whatever the token's type: the token is active, its
    failures and lock are cleared, and the time and the attempt are kept (a retry of that
    attempt is then recognised, :func:`_same_attempt`)."""
    return {
        "state": "active",
        "failures": 0,
        "locked_until": None,
        "last_used_at": when,
        "last_attempt": attempt,
    }


class TokenStore:
    """The ``oath_tokens`` table of one OATH DB. Every method is one transaction, committed
    before it returns; driver errors that mean "database unavailable" are raised as
    :class:`~gatehouse.storage.errors.DatabaseUnavailable`.

    ``waiting`` (an Authentication service's ``database.failover_wait``): the reads and the
    validation writes wait for an unavailable database (a primary being replaced), each run
    again whole. The conditional consumptions are harmless to repeat (the same ``attempt``
    is accepted again), a failure names its check (``failure_attempt``) and a resync reads
    its own values back, so a commit cut off by the failover is never applied twice. The
    administration methods do not wait (one attempt, as before)."""

    def __init__(self, engine: AsyncEngine, waiting: Waiting = NO_WAIT) -> None:
        self.engine = engine
        self.waiting = waiting

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with translate_errors(), self.engine.begin() as conn:
            yield conn

    # -- administration --------------------------------------------------------------------

    async def add(
        self,
        serial: str,
        *,
        type: TokenType,
        seed_key_id: str,
        seed_ciphertext: bytes,
        algorithm: Algorithm = "sha1",
        digits: int = 6,
        period: int = 30,
        owner: str | None = None,
        state: TokenState = "active",
        counter: int = 0,
        description: str = "",
        now: datetime | None = None,
    ) -> TokenRow:
        """Store a new token.

        Raises:
            TokenExists: the serial is taken.
            InvalidToken: a field is out of range.
        """
        token = NewToken(
            serial,
            type,
            seed_key_id,
            seed_ciphertext,
            algorithm=algorithm,
            digits=digits,
            period=period,
            owner=owner,
            state=state,
            counter=counter,
            description=description,
        )
        _check_new(token)
        statement = insert(_T).values(**_new_row(token, now or utcnow())).returning(*_COLUMNS)
        try:
            async with self._transaction() as conn:
                row = (await conn.execute(statement)).one()
        except IntegrityError as error:
            raise _refused(serial, error) from None
        return row_to_token(row._mapping)

    @waits
    async def find(self, serial: str) -> TokenRow | None:
        return await self._first(select(*_COLUMNS).where(_T.serial == serial))

    async def get(self, serial: str) -> TokenRow:
        """Raises :class:`TokenNotFound`."""
        token = await self.find(serial)
        if token is None:
            raise _not_found(serial)
        return token

    @waits
    async def by_id(self, token_id: int) -> TokenRow | None:
        return await self._first(select(*_COLUMNS).where(_T.id == token_id))

    @waits
    async def list_tokens(
        self, owner: str | None = None, *, unassigned: bool = False
    ) -> list[TokenRow]:
        """Every token by serial; only ``owner``'s, or only the unassigned ones."""
        query = select(*_COLUMNS).order_by(_T.serial)
        if owner is not None:
            query = query.where(_T.owner == owner)
        elif unassigned:
            query = query.where(_T.owner.is_(None))
        return await self._all(query)

    @waits
    async def active_for(self, owner: str, *, now: datetime | None = None) -> list[TokenRow]:
        """``owner``'s tokens that may answer a code now (:func:`usable`), oldest first."""
        query = (
            select(*_COLUMNS).where(_T.owner == owner, _usable_at(now or utcnow())).order_by(_T.id)
        )
        return await self._all(query)

    async def assign(self, serial: str, owner: str) -> TokenRow:
        """Give the token to ``owner`` (a no-op if it is theirs already).

        Raises:
            TokenAssigned: it belongs to someone else.
            TokenNotFound: no such token.
        """
        check_owner(owner)
        statement = (
            update(_T)
            .where(_T.serial == serial, or_(_T.owner.is_(None), _T.owner == owner))
            .values(owner=owner)
            .returning(*_COLUMNS)
        )
        current = None
        async with self._transaction() as conn:
            row = (await conn.execute(statement)).first()
            if row is None:
                query = select(_T.owner).where(_T.serial == serial)
                current = (await conn.execute(query)).first()
        if row is not None:
            return row_to_token(row._mapping)
        if current is None:
            raise _not_found(serial)
        raise TokenAssigned(f"token {serial!r} is assigned to {current.owner!r}; unassign it first")

    async def unassign(self, serial: str) -> TokenRow:
        """Raises :class:`TokenNotFound`."""
        return await self._update(serial, owner=None)

    async def set_state(self, serial: str, state: TokenState) -> TokenRow:
        """Set the state by hand. Any lock time is cleared (an administrator's ``locked``
        lasts until unlocked), and ``active`` also clears the failures.

        Raises:
            TokenNotFound: no such token.
            InvalidToken: not a state.
        """
        check_state(state)
        values: dict[str, Any] = {"state": state, "locked_until": None}
        if state == "active":
            values["failures"] = 0
        return await self._update(serial, **values)

    async def unlock(self, serial: str) -> TokenRow:
        """Clear the failures and any lock: a locked token becomes active, a disabled or
        pending one keeps its state. Raises :class:`TokenNotFound`."""
        return await self._update(
            serial,
            state=case((_T.state == "locked", "active"), else_=_T.state),
            failures=0,
            locked_until=None,
        )

    async def delete(self, serial: str) -> None:
        """Raises :class:`TokenNotFound`."""
        async with self._transaction() as conn:
            result = await conn.execute(delete(_T).where(_T.serial == serial))
        if _rowcount(result) == 0:
            raise _not_found(serial)

    async def replace_seed(
        self,
        serial: str,
        key_id: str,
        ciphertext: bytes,
        *,
        old_key_id: str,
        old_ciphertext: bytes | None = None,
    ) -> bool:
        """Store a seed re-encrypted under ``key_id`` (a rekey), if the token's seed is still
        the one read (encrypted under ``old_key_id``, and ``old_ciphertext`` when given).
        False when it changed meanwhile or the token is gone."""
        if not 1 <= len(key_id) <= KEY_ID_LENGTH:
            raise InvalidToken(f"invalid seed key id: 1-{KEY_ID_LENGTH} characters")
        statement = (
            update(_T)
            .where(_T.serial == serial, _T.seed_key_id == old_key_id)
            .values(seed_key_id=key_id, seed_ciphertext=ciphertext)
        )
        if old_ciphertext is not None:
            statement = statement.where(_T.seed_ciphertext == old_ciphertext)
        return await self._changed_one(statement)

    # -- validation: each one conditional statement ------------------------------------------

    @waits
    async def consume_totp(
        self,
        token_id: int,
        step: int,
        drift: int,
        *,
        now: datetime | None = None,
        attempt: str | None = None,
    ) -> bool:
        """Accept TOTP time step ``step`` once: True for the one caller that moved
        ``last_step`` up to it (the token answering, see :func:`usable`), False when that step
        or a later one was accepted already, or the token does not answer. With ``attempt``,
        also True when ``step`` was consumed by that same attempt (a retry of it)."""
        when = now or utcnow()
        at_step = literal(step, BigInteger())
        statement = (
            update(_T)
            .where(
                _T.id == token_id,
                _T.type == "totp",
                or_(_T.last_step < at_step, and_(_T.last_step == at_step, _same_attempt(attempt))),
                _usable_at(when),
            )
            .values(last_step=step, drift=drift, **_accepted(when, attempt))
        )
        return await self._changed_one(statement)

    @waits
    async def consume_hotp(
        self,
        token_id: int,
        counter: int,
        *,
        now: datetime | None = None,
        attempt: str | None = None,
    ) -> bool:
        """Accept HOTP counter ``counter`` once (the next one expected becomes
        ``counter + 1``): True for the one caller that did, False when that counter or a later
        one was accepted already, or the token does not answer. With ``attempt``, also True
        when ``counter`` was the last one accepted, by that same attempt (a retry of it)."""
        if not 0 <= counter <= MAX_COUNTER:
            raise ValueError(f"counter {counter} out of range")
        when = now or utcnow()
        retried = and_(_T.counter == literal(counter + 1, BigInteger()), _same_attempt(attempt))
        statement = (
            update(_T)
            .where(
                _T.id == token_id,
                _T.type == "hotp",
                or_(_T.counter <= literal(counter, BigInteger()), retried),
                _usable_at(when),
            )
            .values(counter=counter + 1, **_accepted(when, attempt))
        )
        return await self._changed_one(statement)

    @waits
    async def activate_totp(
        self,
        token_id: int,
        step: int,
        drift: int,
        *,
        now: datetime | None = None,
        attempt: str | None = None,
    ) -> bool:
        """Confirm a pending TOTP enrolment with the code of ``step``: the token becomes
        active and ``step`` is consumed, once (as :meth:`consume_totp`; with ``attempt``, the
        same attempt asking again is True again). The owner's enrolment requirement
        (:meth:`require_enrolment`) is cleared in the same transaction."""
        when = now or utcnow()
        at_step = literal(step, BigInteger())
        confirms = and_(_T.state == "pending", _T.last_step < at_step)
        retried = and_(_T.state == "active", _T.last_step == at_step, _same_attempt(attempt))
        statement = (
            update(_T)
            .where(_T.id == token_id, _T.type == "totp", or_(confirms, retried))
            .values(last_step=step, drift=drift, **_accepted(when, attempt))
            .returning(_T.owner)
        )
        _U = OathUser
        async with self._transaction() as conn:
            row = (await conn.execute(statement)).first()
            if row is not None and row.owner is not None:
                clear = update(_U).where(_U.username == row.owner).values(enrol_required=False)
                await conn.execute(clear)
        return row is not None

    # -- self-enrolment and the per-user flag -------------------------------------------------

    @waits
    async def replace_pending(
        self,
        owner: str,
        serial: str,
        *,
        seed_key_id: str,
        seed_ciphertext: bytes,
        algorithm: Algorithm = "sha1",
        digits: int = 6,
        period: int = 30,
        description: str = "",
        now: datetime | None = None,
    ) -> TokenRow:
        """Store a new pending TOTP token for ``owner`` and delete the owner's earlier pending
        ones, in one transaction (a user has one enrolment in progress at most).

        Raises:
            TokenExists: the serial is taken.
            InvalidToken: a field is out of range.
        """
        token = NewToken(
            serial,
            "totp",
            seed_key_id,
            seed_ciphertext,
            algorithm=algorithm,
            digits=digits,
            period=period,
            owner=owner,
            state="pending",
            counter=0,
            description=description,
        )
        _check_new(token)
        statement = (
            insert(_T)
            .values(**_new_row(token, now or utcnow()), last_attempt=None)
            .returning(*_COLUMNS)
        )
        earlier = delete(_T).where(_T.owner == owner, _T.state == "pending")
        try:
            async with self._transaction() as conn:
                await conn.execute(earlier)
                row = (await conn.execute(statement)).one()
        except IntegrityError as error:
            raise _refused(serial, error) from None
        return row_to_token(row._mapping)

    @waits
    async def pending_for(self, owner: str) -> TokenRow | None:
        """``owner``'s pending token (the newest, should there be several)."""
        query = (
            select(*_COLUMNS)
            .where(_T.owner == owner, _T.state == "pending")
            .order_by(_T.id.desc())
            .limit(1)
        )
        return await self._first(query)

    async def require_enrolment(self, username: str, required: bool) -> None:
        """Set (or clear) the administrator's "enrol a token at the next login" flag."""
        check_owner(username)
        _U = OathUser
        change = update(_U).where(_U.username == username).values(enrol_required=required)
        for _ in range(2):  # a concurrent first insert makes ours fail: update it then
            try:
                async with self._transaction() as conn:
                    if _rowcount(await conn.execute(change)) == 0:
                        row = {"username": username, "enrol_required": required}
                        await conn.execute(insert(_U).values(**row))
                return
            except IntegrityError:
                continue
        raise TokenStoreError(f"could not set the enrolment flag of {username!r}")

    @waits
    async def owner_status(self, owner: str) -> tuple[list[TokenRow], bool]:
        """``owner``'s tokens (:meth:`list_tokens`) and whether an administrator requires an
        enrolment (:meth:`enrolment_required`), read in one transaction with statements
        built once: what every sign-in with one-time passwords asks."""
        tokens_of, required_of = _owner_status_queries()
        values = {"b_owner": owner}
        async with self._transaction() as conn:
            rows = (await conn.execute(tokens_of, values)).all()
            required = (await conn.execute(required_of, values)).scalar()
        return [row_to_token(row._mapping) for row in rows], bool(required)

    @waits
    async def enrolment_required(self, username: str) -> bool:
        """Does an administrator require ``username`` to enrol a token?"""
        query = select(OathUser.enrol_required).where(OathUser.username == username)
        async with self._transaction() as conn:
            value = (await conn.execute(query)).scalar()
        return bool(value)

    async def record_failure(
        self,
        token_id: int,
        max_failures: int,
        lock_seconds: float | None,
        *,
        now: datetime | None = None,
        attempt: str | None = None,
    ) -> FailureResult:
        """Count one failed code. The failure that makes the count reach ``max_failures``
        locks the token (active, or locked with an expired lock) for ``lock_seconds`` (None:
        until an administrator unlocks it), in the same statement. A lock still running is
        left as it is; disabled and pending tokens count but never lock.

        ``attempt`` names the check (a new id when not given); it is stored with the count
        (``failure_attempt``) and a token that holds it already is not counted again but read:
        a check whose commit was cut off by a failover and that is run again, or that the
        Policy service retries on another Authentication service, counts once.

        Raises:
            TokenNotFound: no token has that id.
        """
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        when = now or utcnow()
        check = attempt or secrets.token_urlsafe(16)
        at = _at(when)
        failures = _T.failures + 1
        lock_running = and_(
            _T.state == "locked", or_(_T.locked_until.is_(None), _T.locked_until > at)
        )
        locks = and_(_T.state.in_(("active", "locked")), failures >= max_failures)
        until = _at(when + timedelta(seconds=lock_seconds)) if lock_seconds is not None else null()
        statement = (
            update(_T)
            .where(
                _T.id == token_id,
                or_(_T.failure_attempt.is_(None), _T.failure_attempt != check),
            )
            .values(
                failures=failures,
                state=case((locks, "locked"), else_=_T.state),
                locked_until=case(
                    (lock_running, _T.locked_until), (locks, until), else_=_T.locked_until
                ),
                failure_attempt=check,
            )
            .returning(_T.failures, _T.state, _T.locked_until)
        )
        counted = select(_T.failures, _T.state, _T.locked_until).where(
            _T.id == token_id, _T.failure_attempt == check
        )

        async def write(conn: AsyncConnection) -> Any:
            row = (await conn.execute(statement)).first()
            # None: no such token, or this check counted already (read what it left).
            # (Another failure counted since replaced the id: this one counts again.)
            return row if row is not None else (await conn.execute(counted)).first()

        row = await self.waiting.run(self._transaction, write)
        if row is None:
            raise TokenNotFound(f"no token has id {token_id}")
        return FailureResult(int(row.failures), cast(TokenState, row.state), row.locked_until)

    # -- helpers ---------------------------------------------------------------------------

    async def _first(self, query: Any) -> TokenRow | None:
        """The first token ``query`` (a select of ``_COLUMNS``) finds, or None."""
        async with self._transaction() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else row_to_token(row._mapping)

    async def _all(self, query: Any) -> list[TokenRow]:
        """Every token ``query`` (a select of ``_COLUMNS``) finds, in its order."""
        async with self._transaction() as conn:
            rows = (await conn.execute(query)).all()
        return [row_to_token(row._mapping) for row in rows]

    async def _changed_one(self, statement: Any) -> bool:
        """Run ``statement`` (a conditional UPDATE of one token) in a transaction of its
        own, committed before this returns: whether it changed the row (this caller won)."""
        async with self._transaction() as conn:
            result = await conn.execute(statement)
        return _rowcount(result) == 1

    async def _update(self, serial: str, **values: Any) -> TokenRow:
        statement = update(_T).where(_T.serial == serial).values(**values).returning(*_COLUMNS)
        async with self._transaction() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            raise _not_found(serial)
        return row_to_token(row._mapping)

    # -- administration: several tokens at once, resynchronisation -------------------------

    async def add_many(
        self,
        tokens: Sequence[NewToken],
        *,
        now: datetime | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Store every token in one transaction, or none (an import is the whole file).

        The rows go in batches of :data:`IMPORT_BATCH`, still in that one transaction;
        ``progress`` is called with the number written so far after each.

        Raises:
            TokenExists: a serial is taken (the first one found is named).
            InvalidToken: a field is out of range (naming the serial).
        """
        if not tokens:
            return 0
        when = now or utcnow()
        for token in tokens:
            _check_new(token)
        serials = [token.serial for token in tokens]
        rows = [_new_row(t, when) for t in tokens]
        try:
            async with self._transaction() as conn:
                taken = (
                    await conn.execute(select(_T.serial).where(_T.serial.in_(serials)))
                ).first()
                if taken is not None:
                    raise TokenExists(f"a token with serial {taken.serial!r} exists already")
                for start in range(0, len(rows), IMPORT_BATCH):
                    batch = rows[start : start + IMPORT_BATCH]
                    await conn.execute(insert(_T), batch)
                    if progress is not None:
                        progress(start + len(batch))
        except IntegrityError as error:
            raise TokenExists(f"a token of the import exists already: {error.orig}") from None
        return len(rows)

    async def resync_counter(self, serial: str, counter_next: int) -> bool:
        """Move an HOTP token's next expected counter forward to ``counter_next`` (a resync
        from two consecutive codes); False when it is there or beyond already (the codes were
        used meanwhile). Raises :class:`TokenNotFound`."""
        if not 0 <= counter_next <= MAX_COUNTER + 1:
            raise InvalidToken(f"invalid counter {counter_next}: 0 to {MAX_COUNTER + 1}")
        statement = (
            update(_T)
            .where(
                _T.serial == serial,
                _T.type == "hotp",
                _T.counter < literal(counter_next, BigInteger()),
            )
            .values(counter=counter_next, failures=0)
        )
        done = select(_T.id).where(_T.serial == serial, _T.counter == counter_next)
        return await self._conditional(serial, statement, done)

    async def resync_step(self, serial: str, step: int, drift: int) -> bool:
        """Record a TOTP token's clock drift found from two consecutive codes, consuming
        their steps (``last_step`` = ``step``); False when ``step`` or a later one was
        accepted already. Raises :class:`TokenNotFound`."""
        statement = (
            update(_T)
            .where(
                _T.serial == serial,
                _T.type == "totp",
                _T.last_step < literal(step, BigInteger()),
            )
            .values(last_step=step, drift=drift, failures=0)
        )
        done = select(_T.id).where(
            _T.serial == serial, _T.last_step == literal(step, BigInteger()), _T.drift == drift
        )
        return await self._conditional(serial, statement, done)

    async def _conditional(self, serial: str, statement: Any, done: Any) -> bool:
        """``statement`` (a conditional UPDATE of the token), waiting through a failover:
        whether it changed the token. A commit cut off is resolved by ``done``, a query that
        finds the token only if it holds the values the update sets."""

        async def write(conn: AsyncConnection) -> bool | None:
            if _rowcount(await conn.execute(statement)) == 1:
                return True
            exists = (await conn.execute(select(_T.id).where(_T.serial == serial))).first()
            return None if exists is None else False

        async def resolve(conn: AsyncConnection) -> bool | None:
            return True if (await conn.execute(done)).first() is not None else None

        changed = await self.waiting.run(self._transaction, write, resolve)
        if changed is None:
            raise _not_found(serial)
        return changed


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token to store with :meth:`TokenStore.add_many` (its seed already encrypted)."""

    serial: str
    type: TokenType
    seed_key_id: str
    seed_ciphertext: bytes = field(repr=False)
    algorithm: Algorithm = "sha1"
    digits: int = 6
    period: int = 30
    owner: str | None = None
    state: TokenState = "active"
    counter: int = 0
    description: str = ""


def _not_found(serial: str) -> TokenNotFound:
    return TokenNotFound(f"no token has serial {serial!r}")


def _check_new(token: NewToken) -> None:
    """:func:`check_fields` of a token to store."""
    check_fields(
        serial=token.serial,
        type=token.type,
        algorithm=token.algorithm,
        digits=token.digits,
        period=token.period,
        seed_key_id=token.seed_key_id,
        owner=token.owner,
        state=token.state,
        counter=token.counter,
    )


def _new_row(token: NewToken, created_at: datetime) -> dict[str, Any]:
    """The ``oath_tokens`` row of a new token: nothing used, failed or locked yet."""
    return {
        "serial": token.serial,
        "owner": token.owner,
        "type": token.type,
        "algorithm": token.algorithm,
        "digits": token.digits,
        "period": token.period,
        "seed_key_id": token.seed_key_id,
        "seed_ciphertext": token.seed_ciphertext,
        "counter": token.counter,
        "last_step": NO_STEP,
        "drift": 0,
        "failures": 0,
        "state": token.state,
        "locked_until": None,
        "description": token.description,
        "created_at": created_at,
        "last_used_at": None,
    }


def _refused(serial: str, error: IntegrityError) -> TokenStoreError:
    """The database's refusal to store the token ``serial``: a taken serial, or another
    constraint."""
    if "serial" in str(error.orig):
        return TokenExists(f"a token with serial {serial!r} exists already")
    return InvalidToken(f"token {serial!r} refused by the database: {error.orig}")


__all__ = [
    "MAX_COUNTER",
    "FailureResult",
    "InvalidToken",
    "NewToken",
    "TokenAssigned",
    "TokenExists",
    "TokenNotFound",
    "TokenRow",
    "TokenStore",
    "TokenStoreError",
    "check_fields",
    "row_to_token",
    "usable",
]

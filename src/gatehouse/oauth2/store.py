"""The OAuth2 DB: authorization codes, token rows and consents, with the atomic updates.

A code is exchanged once across every Authentication service sharing the database: its
``used_at`` is set by one conditional ``UPDATE ... WHERE id = :id AND used_at IS NULL AND
expires_at > :now`` and the row count says whether this caller won; the tokens are inserted
in the same transaction. PostgreSQL re-checks the condition of a row a concurrent
transaction changed and SQLite runs one writer at a time, so of any number of simultaneous
callers exactly one wins. A refresh token is rotated the same way (``rotated_at``).

Secrets never reach this module: codes and refresh tokens arrive as their SHA-256
(:func:`secret_hash`), access tokens as their JWT id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.oauth2.models import OAuth2Code, OAuth2Consent, OAuth2Token
from gatehouse.storage.engine import translate_errors
from gatehouse.storage.retry import NO_WAIT, Waiting, waits
from gatehouse.storage.types import utcnow

#: SQLite connections one store uses at once (SQLAlchemy's pool keeps 5 open).
SQLITE_CONNECTIONS = 4

_C = OAuth2Code.__table__.c
_T = OAuth2Token.__table__.c
_K = OAuth2Consent.__table__.c

# The statements of the hot paths (code exchange, refresh, token lookups), built once: a
# statement built per call costs its cache key (tens of microseconds) on every request.
_FIND_CODE = select(OAuth2Code).where(_C.code_hash == bindparam("code_hash_"))
_USE_CODE = (
    update(OAuth2Code)
    .where(_C.id == bindparam("code_id_"), _C.used_at.is_(None), _C.expires_at > bindparam("now_"))
    .values(used_at=bindparam("now_"))
)
_INSERT_TOKEN = insert(OAuth2Token)
_FIND_BY_REFRESH = select(OAuth2Token).where(_T.refresh_hash == bindparam("refresh_hash_"))
_FIND_BY_JTI = select(OAuth2Token).where(_T.access_jti == bindparam("jti_"))
_REVOKED_AT = select(_T.revoked_at).where(_T.id == bindparam("token_id_"))
_TOKEN_STORED = select(_T.id).where(_T.id == bindparam("token_id_"))
_FIND_CODE_SQL = (
    "SELECT id, client_id, username, redirect_uri, scope, nonce, code_challenge,"
    " code_challenge_method, auth_time, amr, acr, sid, expires_at, used_at"
    " FROM oauth2_codes WHERE code_hash = ?"
)
_USE_CODE_SQL = (
    "UPDATE oauth2_codes SET used_at = ? WHERE id = ? AND used_at IS NULL AND expires_at > ?"
)
_ROTATE_SQL = (
    "UPDATE oauth2_tokens SET rotated_at = ?"
    " WHERE id = ? AND rotated_at IS NULL AND revoked_at IS NULL"
)
_INSERT_TOKEN_SQL = (
    "INSERT INTO oauth2_tokens (id, family_id, parent_id, client_id, username, scope, sid,"
    " access_jti, access_expires_at, refresh_hash, refresh_expires_at, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_REVOKED_AT_SQL = "SELECT revoked_at FROM oauth2_tokens WHERE id = ?"
_ROTATE = (
    update(OAuth2Token)
    .where(_T.id == bindparam("old_id_"), _T.rotated_at.is_(None), _T.revoked_at.is_(None))
    .values(rotated_at=bindparam("now_"))
)


def _sqlite_file(engine: AsyncEngine) -> str | None:
    """The path of the engine's SQLite file (None: PostgreSQL, memory, a URI with options)."""
    url = engine.url
    if engine.dialect.name != "sqlite" or url.query:
        return None
    if not url.database or url.database == ":memory:":
        return None
    return url.database


def secret_hash(value: str) -> bytes:
    """The stored form of a code or refresh token."""
    return hashlib.sha256(value.encode()).digest()


def new_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class CodeRow:
    id: str
    client_id: str
    username: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int
    amr: tuple[str, ...]
    acr: str | None
    sid: str | None
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: str
    family_id: str
    client_id: str
    username: str | None
    scope: str
    sid: str | None
    access_jti: str
    access_expires_at: datetime
    refresh_hash: bytes | None = None
    refresh_expires_at: datetime | None = None
    parent_id: str | None = None
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConsentRow:
    username: str
    client_id: str
    scopes: tuple[str, ...]
    granted_at: datetime
    revoked_at: datetime | None = None

    def covers(self, scopes: Sequence[str]) -> bool:
        return self.revoked_at is None and set(scopes) <= set(self.scopes)


@dataclass(frozen=True, slots=True)
class NewCode:
    """What :meth:`OAuth2Store.add_code` stores (``code_hash``, never the code)."""

    code_hash: bytes
    client_id: str
    username: str
    redirect_uri: str
    scope: str
    auth_time: int
    expires_at: datetime
    attempt: str
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    amr: tuple[str, ...] = ()
    acr: str | None = None
    sid: str | None = None
    id: str = field(default_factory=new_id)


def _code(row: Any) -> CodeRow:
    return CodeRow(
        id=row.id,
        client_id=row.client_id,
        username=row.username,
        redirect_uri=row.redirect_uri,
        scope=row.scope,
        nonce=row.nonce,
        code_challenge=row.code_challenge,
        code_challenge_method=row.code_challenge_method,
        auth_time=row.auth_time,
        amr=tuple(row.amr or ()),
        acr=row.acr,
        sid=row.sid,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


def _sqlite_time(text: Any) -> datetime | None:
    """A UTCDateTime as SQLite stores it (naive UTC text), read back as aware UTC."""
    return None if text is None else datetime.fromisoformat(str(text)).replace(tzinfo=UTC)


def _sqlite_text(moment: datetime) -> str:
    """A UTCDateTime as SQLAlchemy stores it in SQLite (fixed-width naive UTC text)."""
    d = moment.astimezone(UTC)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
        f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}.{d.microsecond:06d}"
    )


def _sqlite_token(token: TokenRow, now: datetime) -> tuple[Any, ...]:
    """The parameters of :data:`_INSERT_TOKEN_SQL`."""
    refresh_expires = token.refresh_expires_at
    return (
        token.id,
        token.family_id,
        token.parent_id,
        token.client_id,
        token.username,
        token.scope,
        token.sid,
        token.access_jti,
        _sqlite_text(token.access_expires_at),
        token.refresh_hash,
        None if refresh_expires is None else _sqlite_text(refresh_expires),
        _sqlite_text(now),
    )


def _sqlite_code(row: tuple[Any, ...]) -> CodeRow:
    """A row of :data:`_FIND_CODE_SQL` read by the synchronous SQLite reader."""
    expires_at = _sqlite_time(row[12])
    assert expires_at is not None
    return CodeRow(
        id=row[0],
        client_id=row[1],
        username=row[2],
        redirect_uri=row[3],
        scope=row[4],
        nonce=row[5],
        code_challenge=row[6],
        code_challenge_method=row[7],
        auth_time=int(row[8]),
        amr=tuple(json.loads(row[9]) if row[9] else ()),
        acr=row[10],
        sid=row[11],
        expires_at=expires_at,
        used_at=_sqlite_time(row[13]),
    )


def _token(row: Any) -> TokenRow:
    return TokenRow(
        id=row.id,
        family_id=row.family_id,
        client_id=row.client_id,
        username=row.username,
        scope=row.scope,
        sid=row.sid,
        access_jti=row.access_jti,
        access_expires_at=row.access_expires_at,
        refresh_hash=row.refresh_hash,
        refresh_expires_at=row.refresh_expires_at,
        parent_id=row.parent_id,
        rotated_at=row.rotated_at,
        revoked_at=row.revoked_at,
    )


def _token_values(token: TokenRow, now: datetime) -> dict[str, Any]:
    return {
        "id": token.id,
        "family_id": token.family_id,
        "parent_id": token.parent_id,
        "client_id": token.client_id,
        "username": token.username,
        "scope": token.scope,
        "sid": token.sid,
        "access_jti": token.access_jti,
        "access_expires_at": token.access_expires_at,
        "refresh_hash": token.refresh_hash,
        "refresh_expires_at": token.refresh_expires_at,
        "created_at": now,
    }


class OAuth2Store:
    """One OAuth2 DB. Every method is one transaction, committed before it returns; driver
    errors meaning "database unavailable" are raised as
    :class:`~gatehouse.storage.errors.DatabaseUnavailable`.

    ``waiting`` (the Authentication service's ``database.failover_wait``): every method waits
    for an unavailable database (a primary being replaced), its transaction run again whole.
    A code exchange, a refresh and a token insert whose commit was cut off are resolved by
    reading whether their token row (its id chosen before the write) is there: a code is
    never exchanged twice nor seen as replayed by its own exchange. The others are harmless
    to repeat (conditional updates, deletes, reads). The synchronous SQLite paths are tried
    first, as they were; only the async transaction behind them waits."""

    def __init__(self, engine: AsyncEngine, waiting: Waiting = NO_WAIT) -> None:
        self.engine = engine
        self.waiting = waiting
        #: SQLite runs one writer at a time; a second connection of this process that wants
        #: to write meanwhile gets SQLITE_BUSY and sleeps in SQLite's busy handler (up to
        #: 100 ms a turn), which made the p99 of concurrent code exchanges hundreds of ms.
        #: Write transactions of this process queue on this lock instead (other processes
        #: sharing the file still meet the busy timeout). PostgreSQL needs none.
        sqlite = engine.dialect.name == "sqlite"
        self._writer: asyncio.Lock | None = asyncio.Lock() if sqlite else None
        #: And at most this many SQLite connections at once: beyond the pool's size each
        #: request would open (a thread, the file, the pragmas) and close its own connection.
        self._slots: asyncio.Semaphore | None = (
            asyncio.Semaphore(SQLITE_CONNECTIONS) if sqlite else None
        )

        #: The revocation check of every introspection, userinfo and bearer request reads
        #: one row by primary key, a code exchange its code by unique hash. On a SQLite
        #: file these are read with a synchronous, read-only
        #: connection of this thread: a page-cached B-tree lookup takes microseconds, less
        #: than the hand-over to aiosqlite's thread it replaces. In WAL mode a reader never
        #: waits for a writer and sees every transaction committed before it (by any
        #: process), so a revocation still counts at once. On any SQLite error the read
        #: goes the usual (async) way.
        self._reader_path = _sqlite_file(engine)
        self._reader: sqlite3.Connection | None = None
        #: The two writes of a code exchange or a refresh (the conditional UPDATE and the
        #: INSERT of the tokens) go the same synchronous way on SQLite, under the writer
        #: lock, in one ``BEGIN IMMEDIATE`` transaction that never waits: if another process
        #: holds the write lock, or on any other SQLite error, it is rolled back and the
        #: usual async transaction (with the busy timeout) runs instead. A commit in WAL
        #: mode with ``synchronous = NORMAL`` (as every Gatehouse SQLite connection) does
        #: not wait for the disk.
        self._sync_writer: sqlite3.Connection | None = None

    def close(self) -> None:
        """Close the synchronous connections (the engine is the caller's to dispose of)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sync_writer is not None:
            self._sync_writer.close()
            self._sync_writer = None

    def _write_now(
        self, condition: str, params: tuple[Any, ...], token: tuple[Any, ...]
    ) -> bool | None:
        """Run ``condition`` (an UPDATE of one row) and, if it changed that row, insert the
        token row, synchronously in one transaction: whether it won, None: ask the async
        way (not SQLite, or the file is busy or failing). Call it holding the writer lock."""
        if self._reader_path is None:
            return None
        conn = self._sync_writer
        try:
            if conn is None:
                conn = sqlite3.connect(
                    self._reader_path, timeout=0, isolation_level=None, check_same_thread=False
                )
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
                self._sync_writer = conn
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return None
        try:
            if conn.execute(condition, params).rowcount != 1:
                conn.execute("ROLLBACK")
                return False
            conn.execute(_INSERT_TOKEN_SQL, token)
            conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return None
        return True

    def _read_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | bool | None:
        """One row read synchronously (None: no such row), or False: ask the async way."""
        if self._reader_path is None:
            return False
        try:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    f"file:{self._reader_path}?mode=ro",
                    uri=True,
                    timeout=0.05,
                    check_same_thread=False,
                    isolation_level=None,
                )
            row: tuple[Any, ...] | None = self._reader.execute(sql, params).fetchone()
        except sqlite3.Error:
            self.close()
            return False
        return row

    def _read_revocation(self, token_id: str) -> tuple[bool, datetime | None] | None:
        row = self._read_one(_REVOKED_AT_SQL, (token_id,))
        if row is False:
            return None
        if row is None or row is True:
            return False, None
        return True, _sqlite_time(row[0])

    @asynccontextmanager
    async def _connection(self, begin: bool = True) -> AsyncIterator[AsyncConnection]:
        opened = self.engine.begin() if begin else self.engine.connect()
        if self._slots is None:
            async with translate_errors(), opened as conn:
                yield conn
            return
        async with self._slots, translate_errors(), opened as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self._connection() as conn:
            yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that writes (queued behind this process's other writers on SQLite)."""
        if self._writer is None:
            async with self._transaction() as conn:
                yield conn
            return
        async with self._writer, self._transaction() as conn:
            yield conn

    async def _conditional_insert(
        self,
        condition: Any,
        condition_params: dict[str, Any],
        sync: tuple[str, tuple[Any, ...]],
        token: TokenRow,
        now: datetime,
    ) -> bool:
        """``condition`` (an UPDATE of one row) and, if it changed it, the token row's
        INSERT, in one transaction: whether this caller won. A commit cut off is resolved by
        reading whether the token row is there (the update ran again would say "lost")."""

        async def work(conn: AsyncConnection) -> bool:
            return await _conditional_insert(conn, condition, condition_params, token, now)

        if self._writer is None:
            return await self.waiting.run(self._transaction, work, self._stored(token.id))
        async with self._writer:
            won = self._write_now(sync[0], sync[1], _sqlite_token(token, now))
            if won is not None:
                return won
            return await self.waiting.run(self._transaction, work, self._stored(token.id))

    @staticmethod
    def _stored(token_id: str) -> Callable[[AsyncConnection], Awaitable[bool | None]]:
        """A resolve (:func:`gatehouse.storage.retry.transaction`): True when the token row
        ``token_id`` is stored (its transaction committed), None when it is not."""

        async def stored(conn: AsyncConnection) -> bool | None:
            found = (await conn.execute(_TOKEN_STORED, {"token_id_": token_id})).first()
            return True if found is not None else None

        return stored

    # -- codes -----------------------------------------------------------------------------

    @waits
    async def add_code(self, code: NewCode, now: datetime | None = None) -> None:
        """Store a code; an unused code of the same ``attempt`` (whose answer was lost, so it
        never reached the client) is replaced by it."""
        async with self._write() as conn:
            await conn.execute(
                delete(OAuth2Code).where(_C.attempt == code.attempt, _C.used_at.is_(None))
            )
            await conn.execute(
                insert(OAuth2Code).values(
                    id=code.id,
                    code_hash=code.code_hash,
                    client_id=code.client_id,
                    username=code.username,
                    redirect_uri=code.redirect_uri,
                    scope=code.scope,
                    nonce=code.nonce,
                    code_challenge=code.code_challenge,
                    code_challenge_method=code.code_challenge_method,
                    auth_time=code.auth_time,
                    amr=list(code.amr),
                    acr=code.acr,
                    sid=code.sid,
                    attempt=code.attempt,
                    created_at=now or utcnow(),
                    expires_at=code.expires_at,
                )
            )

    async def find_code(self, code_hash: bytes) -> CodeRow | None:
        row = self._read_one(_FIND_CODE_SQL, (code_hash,))
        if row is None:
            return None
        if isinstance(row, tuple):
            return _sqlite_code(row)

        async def read(conn: AsyncConnection) -> CodeRow | None:
            found = (await conn.execute(_FIND_CODE, {"code_hash_": code_hash})).first()
            return None if found is None else _code(found)

        return await self.waiting.run(self._transaction, read)

    async def exchange_code(self, code_id: str, tokens: TokenRow, now: datetime) -> bool:
        """Mark the code used and store its tokens, if it is unused and unexpired: whether
        this caller won (exactly one of any number of concurrent callers does)."""
        sync = (_USE_CODE_SQL, (_sqlite_text(now), code_id, _sqlite_text(now)))
        params = {"code_id_": code_id, "now_": now}
        return await self._conditional_insert(_USE_CODE, params, sync, tokens, now)

    @waits
    async def prune(self, before: datetime) -> int:
        """Delete codes expired before ``before`` and token rows whose access and refresh
        tokens both expired before it (nothing can be presented any more): rows deleted."""
        async with self._write() as conn:
            codes = await conn.execute(delete(OAuth2Code).where(_C.expires_at < before))
            tokens = await conn.execute(
                delete(OAuth2Token).where(
                    _T.access_expires_at < before,
                    (_T.refresh_expires_at.is_(None)) | (_T.refresh_expires_at < before),
                )
            )
        return int(codes.rowcount) + int(tokens.rowcount)

    # -- tokens ----------------------------------------------------------------------------

    async def add_tokens(self, tokens: TokenRow, now: datetime) -> None:
        async def write(conn: AsyncConnection) -> bool:
            await conn.execute(_INSERT_TOKEN, _token_values(tokens, now))
            return True

        # A commit cut off: the row (its id chosen here) is there or it is not.
        await self.waiting.run(self._write, write, self._stored(tokens.id))

    @waits
    async def find_by_refresh(self, refresh_hash: bytes) -> TokenRow | None:
        async with self._transaction() as conn:
            row = (await conn.execute(_FIND_BY_REFRESH, {"refresh_hash_": refresh_hash})).first()
        return None if row is None else _token(row)

    @waits
    async def find_by_jti(self, jti: str) -> TokenRow | None:
        async with self._transaction() as conn:
            row = (await conn.execute(_FIND_BY_JTI, {"jti_": jti})).first()
        return None if row is None else _token(row)

    async def revocation(self, token_id: str) -> tuple[bool, datetime | None]:
        """Whether the token row ``token_id`` still exists, and its ``revoked_at``: one
        primary-key SELECT of one column, outside an explicit transaction (a read needs
        none), for the per-request revocation check of a cached access token."""
        known = self._read_revocation(token_id)
        if known is not None:
            return known

        async def read(conn: AsyncConnection) -> tuple[bool, datetime | None]:
            row = (await conn.execute(_REVOKED_AT, {"token_id_": token_id})).first()
            return (False, None) if row is None else (True, row.revoked_at)

        return await self.waiting.run(lambda: self._connection(begin=False), read)

    @waits
    async def family(self, family_id: str) -> list[TokenRow]:
        async with self._transaction() as conn:
            query = select(OAuth2Token).where(_T.family_id == family_id)
            return [_token(row) for row in await conn.execute(query)]

    async def rotate_refresh(self, old_id: str, new: TokenRow, now: datetime) -> bool:
        """Mark the old refresh token used and store the new row, if the old one was neither
        used nor revoked: whether this caller won."""
        sync = (_ROTATE_SQL, (_sqlite_text(now), old_id))
        params = {"old_id_": old_id, "now_": now}
        return await self._conditional_insert(_ROTATE, params, sync, new, now)

    @waits
    async def revoke_family(self, family_id: str, now: datetime) -> int:
        """Revoke every token of a family (a code or refresh token used twice, a revocation)."""
        async with self._write() as conn:
            result = await conn.execute(
                update(OAuth2Token)
                .where(_T.family_id == family_id, _T.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return int(result.rowcount)

    @waits
    async def revoke_session(self, sid: str, now: datetime) -> int:
        """Revoke the tokens bound to a Gatehouse session (its hash): the count of rows."""
        async with self._write() as conn:
            result = await conn.execute(
                update(OAuth2Token)
                .where(_T.sid == sid, _T.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return int(result.rowcount)

    # -- consents --------------------------------------------------------------------------

    @waits
    async def consent(self, username: str, client_id: str) -> ConsentRow | None:
        async with self._transaction() as conn:
            query = select(OAuth2Consent).where(_K.username == username, _K.client_id == client_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _consent(row)

    @waits
    async def grant_consent(
        self, username: str, client_id: str, scopes: Sequence[str], now: datetime
    ) -> ConsentRow:
        """Remember that ``username`` allowed ``client_id`` these scopes (added to the scopes
        of a consent still standing; a revoked one starts over)."""
        async with self._write() as conn:
            query = select(OAuth2Consent).where(_K.username == username, _K.client_id == client_id)
            row = (await conn.execute(query)).first()
            if row is None:
                values = sorted(set(scopes))
                await conn.execute(
                    insert(OAuth2Consent).values(
                        username=username, client_id=client_id, scopes=values, granted_at=now
                    )
                )
            else:
                kept = set(row.scopes or ()) if row.revoked_at is None else set()
                values = sorted(kept | set(scopes))
                await conn.execute(
                    update(OAuth2Consent)
                    .where(_K.username == username, _K.client_id == client_id)
                    .values(scopes=values, granted_at=now, revoked_at=None)
                )
        return ConsentRow(username, client_id, tuple(values), now)

    @waits
    async def revoke_consent(self, username: str, client_id: str, now: datetime) -> bool:
        """Withdraw a consent and revoke the user's tokens for that client."""
        async with self._write() as conn:
            result = await conn.execute(
                update(OAuth2Consent)
                .where(_K.username == username, _K.client_id == client_id, _K.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await conn.execute(
                update(OAuth2Token)
                .where(_T.username == username, _T.client_id == client_id, _T.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return bool(result.rowcount)

    @waits
    async def consents(self, username: str) -> list[ConsentRow]:
        """The user's standing consents, by client id."""
        async with self._transaction() as conn:
            query = (
                select(OAuth2Consent)
                .where(_K.username == username, _K.revoked_at.is_(None))
                .order_by(_K.client_id)
            )
            return [_consent(row) for row in await conn.execute(query)]


async def _conditional_insert(
    conn: AsyncConnection, condition: Any, params: dict[str, Any], token: TokenRow, now: datetime
) -> bool:
    won = await conn.execute(condition, params)
    if won.rowcount != 1:
        return False
    await conn.execute(_INSERT_TOKEN, _token_values(token, now))
    return True


def _consent(row: Any) -> ConsentRow:
    return ConsentRow(
        row.username, row.client_id, tuple(row.scopes or ()), row.granted_at, row.revoked_at
    )


__all__ = [
    "CodeRow",
    "ConsentRow",
    "NewCode",
    "OAuth2Store",
    "TokenRow",
    "new_id",
    "secret_hash",
]

"""Login sessions: opaque random ids in a cookie, records in the session DB.

Only the SHA-256 of an id is stored (``id_hash``), so a copy of the database cannot be
replayed as cookies. A session ends at the first of its idle expiry (moved forward as it is
used, at most once per few seconds to spare the database) and its absolute expiry; an
expired session found on lookup is deleted and treated as absent. Every session that ends
(logout, revocation, expiry) is reported to ``on_end`` so the caller can tell the Access
Points to drop cached decisions.

A sign-in whose second factor is still to come is a row too, marked ``pending`` and short-lived
(:data:`PENDING_LIFETIME`): decisions never see it (:meth:`SessionStore.lookup` answers None
for it unless asked), and any Policy service can finish it. When a session's methods change
(a sign-in completes, a step-up adds ``otp``) it gets a new id: :meth:`SessionStore.rotate`
inserts the new row and deletes the old one in one transaction, and the old id ends like any
revoked session, so every Access Point drops what it cached for it.

Through a database failover every write waits for the new primary
(:meth:`~gatehouse.storage.engine.Database.run`) and is never applied twice: a session's id is
chosen before its row is written, so a sign-in or rotation whose commit was cut off is
resolved by reading whether that row is there; deletes are run again (harmless) and report
every row any attempt deleted. Decisions (:meth:`SessionStore.lookup` with ``stale_ok``) do
not wait for sessions read in the last :data:`LAST_KNOWN_LIMIT` seconds: while the database
is unavailable they are answered from that last read (bounded staleness: a revocation
committed just before the outage and not yet heard may be missed until the database is back,
when the next lookup reads it again).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import ColumnElement, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from starlette.exceptions import HTTPException

from gatehouse.cookies import TWO_SESSION_COOKIES, TwoSessionCookies, session_value
from gatehouse.storage.engine import Database
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.models import Session as SessionRow

ID_BYTES = 32
HASH_CHARS = 32
#: The longest a session's ``last_seen_at`` may lag behind its use.
TOUCH_INTERVAL = 5.0
#: Upper bound on cached sessions per Policy service (cleared, not evicted, when reached).
CACHE_MAX = 100_000
#: Why all of a user's sessions were ended (the admin API's ``reason``, the audit log's).
END_REASONS = frozenset(
    {"revoked", "user_disabled", "user_deleted", "password_changed", "groups_changed"}
)
#: How long a sign-in may wait between its password and its one-time password (or the end
#: of a token enrolment), seconds.
PENDING_LIFETIME = 600.0
#: How old a session's last read from the database may be to answer decisions while the
#: database is unavailable, seconds.
LAST_KNOWN_LIMIT = 120.0
#: How long a decision on a session not read recently waits for an unavailable database:
#: less than the Access Points' decision timeout (2 s). Then a GET or HEAD is sent to the
#: portal's wait page (the browser waits there, as long as a sign-in would); another method
#: gets 503, which the Access Point asks of its next Policy service (one that may know the
#: session, e.g. the one that made it).
DECISION_WAIT = 1.5
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")
_ID_HASH = re.compile(r"^[0-9a-f]{32}$")
_COLUMNS = tuple(column.key for column in SessionRow.__table__.columns)


#: A new session row's insert and the lookup of its id hash, built once.
_INSERT = insert(SessionRow)
_FIND = select(SessionRow.id_hash).where(SessionRow.id_hash == bindparam("id_hash"))


def new_session_id() -> str:
    """256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(ID_BYTES)


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:HASH_CHARS]


def well_formed_id(session_id: str | None) -> bool:
    return session_id is not None and _SESSION_ID.match(session_id) is not None


def well_formed_hash(id_hash: str) -> bool:
    return _ID_HASH.match(id_hash) is not None


class CookieFields(Protocol):
    """A request's headers, as Starlette's ``Headers``."""

    def getlist(self, key: str) -> list[str]: ...


def session_cookie(headers: CookieFields, name: str) -> str | None:
    """The portal's read of the session cookie: every Cookie field, by the Access Point's rule
    (:mod:`gatehouse.cookies`), so both always mean the same session.

    Raises:
        HTTPException: 400, the cookie is there more than once.
    """
    try:
        return session_value(headers.getlist("cookie"), name)
    except TwoSessionCookies:
        raise HTTPException(400, TWO_SESSION_COOKIES) from None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Idle and absolute lifetime of a session, in seconds."""

    idle: float
    absolute: float

    @property
    def touch_interval(self) -> float:
        # Short idle timeouts need fresher last-seen times than long ones.
        return min(TOUCH_INTERVAL, self.idle / 8)

    def idle_expiry(self, now: datetime, absolute_expires_at: datetime) -> datetime:
        return min(now + timedelta(seconds=self.idle), absolute_expires_at)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a new session belongs to, as the Authentication service described the user."""

    username: str
    display_name: str = ""
    email: str | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id_hash: str
    username: str
    display_name: str
    email: str | None
    groups: tuple[str, ...]
    methods: tuple[str, ...]
    created_at: datetime
    last_seen_at: datetime
    idle_expires_at: datetime
    absolute_expires_at: datetime
    client_ip: str | None
    user_agent: str | None
    #: A sign-in under way (see the module docstring); None for a session.
    pending: Mapping[str, object] | None = None

    @property
    def expires_at(self) -> datetime:
        return min(self.idle_expires_at, self.absolute_expires_at)

    def live(self, now: datetime) -> bool:
        return now < self.expires_at

    def needs_touch(self, now: datetime, timeouts: Timeouts) -> bool:
        return (now - self.last_seen_at).total_seconds() >= timeouts.touch_interval

    @classmethod
    def of(cls, row: SessionRow) -> SessionRecord:
        return cls(
            id_hash=row.id_hash,
            username=row.username,
            display_name=row.display_name,
            email=row.email,
            groups=tuple(row.groups or ()),
            methods=tuple(row.methods or ()),
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            idle_expires_at=row.idle_expires_at,
            absolute_expires_at=row.absolute_expires_at,
            client_ip=row.client_ip,
            user_agent=row.user_agent,
            pending=dict(row.pending) if row.pending is not None else None,
        )

    @property
    def identity(self) -> Identity:
        return Identity(self.username, self.display_name, self.email, self.groups)

    def info(self) -> dict[str, object]:
        """The admin API's ``SESSION_INFO``."""
        return {
            "id_hash": self.id_hash,
            "username": self.username,
            "display_name": self.display_name,
            "email": self.email,
            "groups": list(self.groups),
            "methods": list(self.methods),
            "created_at": _iso(self.created_at),
            "last_seen_at": _iso(self.last_seen_at),
            "expires_at": _iso(self.expires_at),
            "idle_expires_at": _iso(self.idle_expires_at),
            "absolute_expires_at": _iso(self.absolute_expires_at),
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "pending": self.pending is not None,
        }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


EndHook = Callable[[Sequence[SessionRecord], str], Awaitable[None]]


async def _ignore(records: Sequence[SessionRecord], reason: str) -> None:
    return None


class SessionStore:
    """The session DB, seen as sessions that are created, found, touched and ended.

    Database failures surface as :class:`~gatehouse.storage.errors.DatabaseUnavailable`.
    """

    def __init__(
        self,
        database: Database,
        timeouts: Timeouts,
        on_end: EndHook = _ignore,
        cache_ttl: float = 0.0,
    ) -> None:
        self._db = database
        self.timeouts = timeouts
        self._on_end = on_end
        #: Sessions read in the last ``cache_ttl`` seconds, by id hash. Decisions then need no
        #: database round trip; every revocation this instance hears drops its entry at once
        #: (see :meth:`forget`), and the cache is cleared when revocations may have been missed.
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, SessionRecord]] = {}
        #: Every live session read or written recently, by id hash: answers decisions while
        #: the database is unavailable (:data:`LAST_KNOWN_LIMIT`); revocations drop entries.
        self._known: dict[str, tuple[float, SessionRecord]] = {}
        # Bumped by every forget: a read that started before a revocation must not cache
        # what it read.
        self._epoch = 0

    def forget(self, id_hashes: Sequence[str]) -> None:
        self._epoch += 1
        for id_hash in id_hashes:
            self._cache.pop(id_hash, None)
            self._known.pop(id_hash, None)

    def forget_all(self) -> None:
        """Revocations may have been missed (the LISTEN connection was lost, with the
        database most often): no decision without a database read while it answers; the
        last-known copies stay for the outage (:data:`LAST_KNOWN_LIMIT`)."""
        self._epoch += 1
        self._cache.clear()

    def _last_known(self, id_hash: str, now: datetime) -> SessionRecord | None:
        entry = self._known.get(id_hash)
        if entry is None:
            return None
        read, record = entry
        if time.monotonic() - read >= LAST_KNOWN_LIMIT or not record.live(now):
            del self._known[id_hash]
            return None
        return record

    def _know(self, record: SessionRecord) -> None:
        if record.pending is not None:
            return
        if len(self._known) >= CACHE_MAX:
            self._known.clear()
        self._known[record.id_hash] = (time.monotonic(), record)

    def _cached(self, id_hash: str, now: datetime, touch: bool) -> SessionRecord | None:
        entry = self._cache.get(id_hash)
        if entry is None:
            return None
        fetched, record = entry
        fresh = time.monotonic() - fetched < self.cache_ttl
        if not fresh or not record.live(now) or (touch and record.needs_touch(now, self.timeouts)):
            del self._cache[id_hash]
            return None
        return record

    def _remember(self, record: SessionRecord) -> None:
        if self.cache_ttl > 0:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[record.id_hash] = (time.monotonic(), record)

    async def create(
        self,
        identity: Identity,
        methods: Sequence[str],
        now: datetime,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        pending: Mapping[str, object] | None = None,
    ) -> tuple[str, SessionRecord]:
        """A new session; returns its id (for the cookie only) and its record. With
        ``pending``, a sign-in under way instead, living :data:`PENDING_LIFETIME` at most."""
        session_id = new_session_id()
        row = self._row(session_id, identity, methods, now, client_ip, user_agent, pending)
        record = SessionRecord.of(row)
        values = {key: getattr(row, key) for key in _COLUMNS}

        # One Core insert, built once: a sign-in's ORM unit of work cost twice as much.
        async def write(conn: AsyncConnection) -> bool:
            await conn.execute(_INSERT, values)
            return True

        await self._db.run_core(write, resolve=self._exists(record.id_hash))
        self._know(record)
        return session_id, record

    @staticmethod
    def _exists(
        id_hash: str,
    ) -> Callable[[AsyncSession | AsyncConnection], Awaitable[bool | None]]:
        """A write's ``resolve`` (ORM or Core): whether the row with this id hash is there
        (True), else None."""

        async def check(db: AsyncSession | AsyncConnection) -> bool | None:
            found = await db.scalar(_FIND, {"id_hash": id_hash})
            return True if found is not None else None

        return check

    def _row(
        self,
        session_id: str,
        identity: Identity,
        methods: Sequence[str],
        now: datetime,
        client_ip: str | None,
        user_agent: str | None,
        pending: Mapping[str, object] | None,
        absolute: datetime | None = None,
        created_at: datetime | None = None,
    ) -> SessionRow:
        if absolute is None:
            lifetime = self.timeouts.absolute if pending is None else PENDING_LIFETIME
            absolute = now + timedelta(seconds=min(lifetime, self.timeouts.absolute))
        return SessionRow(
            id_hash=hash_session_id(session_id),
            username=identity.username,
            display_name=identity.display_name,
            email=identity.email,
            groups=list(identity.groups),
            methods=list(methods),
            created_at=now if created_at is None else created_at,
            last_seen_at=now,
            idle_expires_at=self.timeouts.idle_expiry(now, absolute),
            absolute_expires_at=absolute,
            client_ip=client_ip,
            user_agent=(user_agent or "")[:512] or None,
            pending=dict(pending) if pending is not None else None,
        )

    async def rotate(
        self,
        old: SessionRecord,
        methods: Sequence[str],
        now: datetime,
        *,
        reason: str = "rotated",
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> tuple[str, SessionRecord] | None:
        """Replace ``old`` by a session with a new id and ``methods`` (no longer pending), in
        one transaction; the old id ends (``on_end`` with ``reason``). A session keeps its
        absolute expiry; a finished sign-in starts its lifetime now. None when ``old`` is
        gone (ended, or another request rotated it first)."""
        session_id = new_session_id()
        if old.pending is None:
            absolute, created = old.absolute_expires_at, old.created_at
        else:
            absolute, created = now + timedelta(seconds=self.timeouts.absolute), now
        row = self._row(
            session_id,
            old.identity,
            methods,
            now,
            client_ip if client_ip is not None else old.client_ip,
            user_agent if user_agent is not None else old.user_agent,
            None,
            absolute,
            created,
        )
        record = SessionRecord.of(row)
        deleted = delete(SessionRow).where(SessionRow.id_hash == old.id_hash)

        async def write(db: AsyncSession) -> list[SessionRecord] | None:
            gone = await db.scalars(
                deleted.returning(SessionRow).execution_options(synchronize_session=False)
            )
            ended = [SessionRecord.of(r) for r in gone.all()]
            if not ended:
                return None
            db.add(SessionRow(**{c: getattr(row, c) for c in _COLUMNS}))
            return ended

        check = self._exists(record.id_hash)

        async def resolve(db: AsyncSession) -> list[SessionRecord] | None:
            return [old] if await check(db) else None

        ended = await self._db.run(write, resolve=resolve)
        if ended is None:
            return None
        self.forget([old.id_hash])
        self._know(record)
        await self._ended(ended, reason)
        return session_id, record

    async def lookup(
        self,
        session_id: str | None,
        now: datetime,
        *,
        touch: bool = True,
        cached: bool = True,
        pending: bool = False,
        stale_ok: bool = False,
        wait: float | None = None,
    ) -> SessionRecord | None:
        """The live session with this id, touched; ``None`` if unknown or expired.

        ``cached=False`` reads the database even when a fresh copy is cached (use it while
        revocations from other instances may be missed). A sign-in under way is None unless
        ``pending`` (the portal finishing it). An unavailable database is waited for
        (``failover_wait``); with ``stale_ok`` (decisions) a session read in the last
        :data:`LAST_KNOWN_LIMIT` seconds is answered from that read instead, untouched, and
        another waits only :data:`DECISION_WAIT` (then the decision sends a browser to the
        portal's wait page, :func:`gatehouse.policy.service.wait_url`). ``wait`` (without
        ``stale_ok``): at most that long instead of ``failover_wait``."""
        if not well_formed_id(session_id):
            return None
        assert session_id is not None
        id_hash = hash_session_id(session_id)
        if self.cache_ttl > 0 and cached:
            hit = self._cached(id_hash, now, touch)
            if hit is not None:
                return hit
        known = self._last_known(id_hash, now) if stale_ok else None
        if known is not None and self._db.outage.active:
            return known  # the database is being waited for: answer from the last read
        epoch = self._epoch

        async def read(db: AsyncSession) -> tuple[SessionRecord, bool] | None:
            row = await db.scalar(select(SessionRow).where(SessionRow.id_hash == id_hash))
            if row is None:
                return None
            record = SessionRecord.of(row)
            if record.pending is not None and not pending:
                return None  # a sign-in under way is no session
            expired = not record.live(now)
            if not expired and touch and record.needs_touch(now, self.timeouts):
                # Conditional: harmless when run again after a lost commit.
                idle = self.timeouts.idle_expiry(now, record.absolute_expires_at)
                await db.execute(
                    update(SessionRow)
                    .where(SessionRow.id_hash == id_hash, SessionRow.last_seen_at < now)
                    .values(last_seen_at=now, idle_expires_at=idle)
                    .execution_options(synchronize_session=False)
                )
                record = replace(record, last_seen_at=now, idle_expires_at=idle)
            return record, expired

        if not stale_ok:
            wait = None if wait is None else min(wait, self._db.failover_wait)
        else:
            wait = 0.0 if known is not None else min(DECISION_WAIT, self._db.failover_wait)
        try:
            found = await self._db.run(read, wait=wait)
        except DatabaseUnavailable:
            if known is None:
                raise
            return known
        if found is None:
            self._known.pop(id_hash, None)
            return None
        record, expired = found
        if expired:
            await self._delete_where(SessionRow.id_hash == id_hash, "expired")
            return None
        if epoch == self._epoch and record.pending is None:
            self._know(record)
            if cached:
                self._remember(record)
        return record

    async def warm(self, count: int) -> None:
        """Look up ``count`` unknown sessions at once, each on its own pooled connection.

        A Policy service that takes over from a failed one gets the whole burst at once;
        with the lookup compiled and prepared on every pooled connection beforehand, none of
        those requests pays for it. Changes nothing: unknown ids are not found."""
        now = datetime.now(UTC)
        await asyncio.gather(
            *(self.lookup(new_session_id(), now, touch=False, cached=False) for _ in range(count))
        )

    async def end(self, session_id: str | None, reason: str = "logout") -> SessionRecord | None:
        """Delete the session with this id (logout); returns it if it existed."""
        if not well_formed_id(session_id):
            return None
        assert session_id is not None
        ended = await self.revoke_hashes([hash_session_id(session_id)], reason)
        return ended[0] if ended else None

    async def revoke_hashes(
        self, id_hashes: Sequence[str], reason: str = "revoked"
    ) -> list[SessionRecord]:
        hashes = [h for h in id_hashes if well_formed_hash(h)]
        if not hashes:
            return []
        return await self._delete_where(SessionRow.id_hash.in_(hashes), reason)

    async def revoke_user(self, username: str, reason: str = "revoked") -> list[SessionRecord]:
        return await self.end_sessions(username, reason=reason)

    async def end_sessions(
        self, username: str, *, reason: str = "revoked", except_session: str | None = None
    ) -> list[SessionRecord]:
        """End every session of ``username`` — after a password, group or account change —
        but the one whose id hash is ``except_session`` (the session that changed its own
        password may stay). Every Access Point and Policy instance hears of it (``on_end``)."""
        condition = SessionRow.username == username
        if except_session is not None:
            condition = condition & (SessionRow.id_hash != except_session)
        return await self._delete_where(condition, reason)

    async def purge_expired(self, now: datetime) -> list[SessionRecord]:
        expired = (SessionRow.idle_expires_at <= now) | (SessionRow.absolute_expires_at <= now)
        return await self._delete_where(expired, "expired")

    async def live(self, now: datetime, username: str | None = None) -> list[SessionRecord]:
        """Live sessions, of one user or of everyone, oldest first."""
        query = select(SessionRow).where(
            SessionRow.idle_expires_at > now, SessionRow.absolute_expires_at > now
        )
        if username is not None:
            query = query.where(SessionRow.username == username)
        query = query.order_by(SessionRow.created_at, SessionRow.id_hash)

        async def read(db: AsyncSession) -> list[SessionRecord]:
            return [SessionRecord.of(row) for row in (await db.scalars(query)).all()]

        return await self._db.run(read)

    async def _delete_where(
        self, condition: ColumnElement[bool], reason: str
    ) -> list[SessionRecord]:
        deleted = delete(SessionRow).where(condition).returning(SessionRow)
        # Every row any attempt deleted: after a commit that was cut off, the next attempt
        # finds them gone, yet they ended (and must be reported) all the same.
        gone: dict[str, SessionRecord] = {}

        async def write(db: AsyncSession) -> None:
            rows = (await db.scalars(deleted.execution_options(synchronize_session=False))).all()
            gone.update((row.id_hash, SessionRecord.of(row)) for row in rows)

        await self._db.run(write)
        ended = list(gone.values())
        self.forget([r.id_hash for r in ended])
        await self._ended(ended, reason)
        return ended

    async def _ended(self, records: list[SessionRecord], reason: str) -> None:
        if records:
            await self._on_end(records, reason)

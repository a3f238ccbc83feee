"""Named administrators in the Administration service's database: the role bound to each
user, their personal API tokens and their console sessions (tables in :mod:`.tables`).

Tokens and session ids are random secrets shown once; only their SHA-256 is stored. Every
change is audited, in the same transaction, under the name of whoever made it. The last
superadmin can be neither removed nor given another role.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.administration.admins import Actor
from gatehouse.administration.admins_roles import SUPERADMIN, check_role
from gatehouse.administration.canonical import timestamp
from gatehouse.administration.errors import AdminError
from gatehouse.administration.store import token_hash
from gatehouse.administration.tables import (
    AdministratorRow,
    AuditRow,
    ConsoleSessionRow,
    PersonalTokenRow,
)
from gatehouse.internal.errors import Code
from gatehouse.storage.engine import Database
from gatehouse.storage.types import utcnow

#: Personal tokens are ``gha1_<id>_<secret>``: the prefix lets a secret scanner find one and
#: keeps it from starting with "-"; the id names it in listings and the audit log.
TOKEN_PREFIX = "gha1_"
_TOKEN = re.compile(r"gha1_([a-z0-9]{12})_([A-Za-z0-9_-]{43})\Z")
DEFAULT_TOKEN_TTL = timedelta(days=90)
MAX_TOKEN_TTL = timedelta(days=366)
MIN_TOKEN_TTL = timedelta(minutes=5)
#: A console session ends after this long without a request, and after MAX_SESSION anyway.
SESSION_IDLE = timedelta(minutes=30)
MAX_SESSION = timedelta(hours=12)
#: ``last_seen_at``/``last_used_at`` are written at most this often (not every request).
TOUCH_EVERY = timedelta(seconds=60)
MAX_DESCRIPTION = 200


class AdminNotFound(AdminError):
    code = Code.NOT_FOUND
    status = 404


class AdminConflict(AdminError):
    code = Code.CONFLICT
    status = 409


class AdminInvalid(AdminError):
    code = Code.BAD_REQUEST
    status = 400


@dataclass(frozen=True, slots=True)
class Administrator:
    name: str
    role: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class PersonalToken:
    """A personal token as listed (never its secret)."""

    id: str
    name: str
    description: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just made: ``secret`` is shown this once."""

    token: PersonalToken
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in console session; ``secret`` is the cookie's value (the CSRF tokens of
    its forms are derived from it)."""

    name: str
    role: str
    secret: str = field(repr=False)
    expires_at: datetime


def _admin(row: AdministratorRow) -> Administrator:
    return Administrator(row.name, row.role, row.created_at, row.created_by)


def _token(row: PersonalTokenRow) -> PersonalToken:
    return PersonalToken(
        row.id,
        row.name,
        row.description,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )


def parse_token(value: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed personal token; None otherwise."""
    match = _TOKEN.match(value)
    return (match[1], match[2]) if match else None


class AdminAccounts:
    """Administrators, personal tokens and console sessions on one database."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime] = utcnow,
        writer: Callable[[], AbstractAsyncContextManager[AsyncSession]] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        #: A write transaction: the Administration store's, so that its writers and these
        #: queue on one lock rather than on SQLite's (default: a plain session).
        self._write = writer or db.session

    def _audit(self, session: AsyncSession, who: str, action: str, what: str) -> None:
        session.add(AuditRow(at=self.clock(), who=who, action=action, what=what, diff=""))

    # administrators

    async def administrators(self) -> list[Administrator]:
        query = select(AdministratorRow).order_by(AdministratorRow.name)
        async with self.db.session() as session:
            return [_admin(row) for row in (await session.execute(query)).scalars()]

    async def get(self, name: str) -> Administrator | None:
        async with self.db.session() as session:
            row = await session.get(AdministratorRow, name)
            return _admin(row) if row is not None else None

    async def count(self) -> int:
        async with self.db.session() as session:
            query = select(func.count()).select_from(AdministratorRow)
            return int((await session.execute(query)).scalar_one())

    async def add(self, name: str, role: str, who: str, *, only_if_none: bool = False) -> None:
        """Bind ``role`` to the user ``name``.

        Raises:
            AdminConflict: ``name`` is an administrator already (or, with ``only_if_none``,
                any administrator exists: the bootstrap is done).
            AdminInvalid: no such role.
        """
        role = self._role(role)
        async with self._write() as session:
            if only_if_none:
                query = select(func.count()).select_from(AdministratorRow)
                if (await session.execute(query)).scalar_one():
                    raise AdminConflict(
                        "there are administrators already: the bootstrap is done; "
                        "'gatehouse admins add' makes more"
                    )
            if await session.get(AdministratorRow, name) is not None:
                raise AdminConflict(f"{name!r} is an administrator already")
            session.add(
                AdministratorRow(name=name, role=role, created_at=self.clock(), created_by=who)
            )
            action = "admin.bootstrap" if only_if_none else "admin.add"
            self._audit(session, who, action, f"made {name!r} an administrator ({role})")

    async def set_role(self, name: str, role: str, who: str) -> str:
        """Give ``name`` another role; the one it had."""
        role = self._role(role)
        async with self._write() as session:
            row = await self._row(session, name)
            old = row.role
            if old == role:
                return old
            if old == SUPERADMIN:
                await self._not_last_superadmin(session, name, "take the role of")
            row.role = role
            self._audit(session, who, "admin.set_role", f"{name!r}: role {old} -> {role}")
            return old

    async def remove(self, name: str, who: str) -> int:
        """Remove ``name``'s role, revoke their tokens and end their sessions; the number of
        tokens revoked. The user account stays (it is the user directory's)."""
        now = self.clock()
        async with self._write() as session:
            row = await self._row(session, name)
            if row.role == SUPERADMIN:
                await self._not_last_superadmin(session, name, "remove")
            await session.delete(row)
            revoked = await session.execute(
                update(PersonalTokenRow)
                .where(PersonalTokenRow.name == name, PersonalTokenRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            await session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.name == name))
            count = int(getattr(revoked, "rowcount", 0) or 0)
            what = f"removed administrator {name!r} ({row.role}); revoked {count} token(s)"
            self._audit(session, who, "admin.remove", what)
            return count

    async def _row(self, session: AsyncSession, name: str) -> AdministratorRow:
        row = await session.get(AdministratorRow, name, with_for_update=True)
        if row is None:
            raise AdminNotFound(f"{name!r} is not an administrator")
        return row

    async def _not_last_superadmin(self, session: AsyncSession, name: str, verb: str) -> None:
        query = select(func.count()).where(
            AdministratorRow.role == SUPERADMIN, AdministratorRow.name != name
        )
        if not (await session.execute(query)).scalar_one():
            raise AdminConflict(
                f"cannot {verb} {name!r}: the last superadmin (make another superadmin first)"
            )

    @staticmethod
    def _role(role: str) -> str:
        try:
            return check_role(role)
        except ValueError as exc:
            raise AdminInvalid(str(exc)) from None

    # personal tokens

    async def create_token(
        self, name: str, who: str, description: str = "", ttl: timedelta = DEFAULT_TOKEN_TTL
    ) -> NewToken:
        """A new personal token for administrator ``name``, valid for ``ttl``."""
        if not MIN_TOKEN_TTL <= ttl <= MAX_TOKEN_TTL:
            raise AdminInvalid(
                f"ttl: must be from {int(MIN_TOKEN_TTL.total_seconds() // 60)} minutes to "
                f"{MAX_TOKEN_TTL.days} days"
            )
        if len(description) > MAX_DESCRIPTION:
            raise AdminInvalid(f"description: at most {MAX_DESCRIPTION} characters")
        token_id = "".join(
            secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12)
        )
        secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = self.clock()
        async with self._write() as session:
            await self._row(session, name)
            row = PersonalTokenRow(
                id=token_id,
                hash=token_hash(secret),
                name=name,
                description=description,
                created_at=now,
                expires_at=now + ttl,
            )
            session.add(row)
            what = f"created personal token {token_id} for {name!r}, expires {timestamp(now + ttl)}"
            self._audit(session, who, "admin.token_create", what)
            await session.flush()
            return NewToken(_token(row), secret)

    async def tokens(self, name: str | None = None) -> list[PersonalToken]:
        query = select(PersonalTokenRow).order_by(PersonalTokenRow.created_at)
        if name is not None:
            query = query.where(PersonalTokenRow.name == name)
        async with self.db.session() as session:
            return [_token(row) for row in (await session.execute(query)).scalars()]

    async def revoke_token(self, token_id: str, who: str, owner: str | None = None) -> None:
        """Revoke a token (``owner``: only if it is theirs)."""
        async with self._write() as session:
            row = await session.get(PersonalTokenRow, token_id, with_for_update=True)
            if row is None or (owner is not None and row.name != owner):
                raise AdminNotFound(f"no personal token {token_id!r}")
            if row.revoked_at is None:
                row.revoked_at = self.clock()
                what = f"revoked personal token {token_id} of {row.name!r}"
                self._audit(session, who, "admin.token_revoke", what)

    async def authenticate_token(self, value: str) -> Actor | None:
        """The administrator a personal token belongs to, if it is valid now."""
        parsed = parse_token(value)
        if parsed is None:
            return None
        now = self.clock()
        async with self._write() as session:
            row = await session.get(PersonalTokenRow, parsed[0])
            if (
                row is None
                or not hmac.compare_digest(row.hash, token_hash(value))
                or row.revoked_at is not None
                or row.expires_at <= now
            ):
                return None
            admin = await session.get(AdministratorRow, row.name)
            if admin is None:
                return None
            if row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY:
                row.last_used_at = now
            return Actor(admin.name, admin.role, "token")

    # console sessions

    async def create_session(self, name: str) -> ConsoleSession:
        """A new console session for administrator ``name`` (who just signed in)."""
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        async with self._write() as session:
            admin = await self._row(session, name)
            session.add(
                ConsoleSessionRow(
                    hash=token_hash(secret),
                    name=name,
                    created_at=now,
                    expires_at=now + MAX_SESSION,
                    last_seen_at=now,
                )
            )
            # Old sessions of anyone: gone once expired.
            await session.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now)
            )
            self._audit(session, name, "console.sign_in", f"{name!r} signed in to the console")
            return ConsoleSession(name, admin.role, secret, now + MAX_SESSION)

    async def session(self, secret: str) -> ConsoleSession | None:
        """The live session of a cookie's value (its administrator's current role)."""
        now = self.clock()
        async with self._write() as session:
            row = await session.get(ConsoleSessionRow, token_hash(secret))
            if row is None:
                return None
            if row.expires_at <= now or now - row.last_seen_at > SESSION_IDLE:
                await session.delete(row)
                return None
            admin = await session.get(AdministratorRow, row.name)
            if admin is None:
                await session.delete(row)
                return None
            if now - row.last_seen_at >= TOUCH_EVERY:
                row.last_seen_at = now
            return ConsoleSession(admin.name, admin.role, secret, row.expires_at)

    async def end_session(self, secret: str) -> str | None:
        """Sign out: the session's administrator, or None if there was none."""
        async with self._write() as session:
            row = await session.get(ConsoleSessionRow, token_hash(secret))
            if row is None:
                return None
            await session.delete(row)
            self._audit(session, row.name, "console.sign_out", f"{row.name!r} signed out")
            return row.name

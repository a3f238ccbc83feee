"""Users and groups of an installation's user DB, for the console: the operations of
``gatehouse users`` and ``gatehouse groups`` (:mod:`gatehouse.authentication.users_commands`)
on the same directory functions, checks and password hashing, as coroutines.

A change that must not let an old session live on (disabling a user, a new password, a
group change) ends the user's sessions on every Access Point as the commands do
(:func:`~gatehouse.oath.token_admin.home_session_ender`); when that fails the change stays
made and :class:`SessionsNotEnded` says so. Every change is written to the user DB's audit
events (``by: console:NAME``) and to Admin's audit log under the administrator's name.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.authentication import audit, lockout, passwords
from gatehouse.authentication.users_commands import (
    check_display_name,
    check_email,
    check_phone,
    hash_password,
)
from gatehouse.errors import GatehouseError
from gatehouse.oath.token_admin import SessionEnder, home_session_ender
from gatehouse.storage import directory
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.types import utcnow

T = TypeVar("T")
#: User DBs migrated by this process (a page opens the DB per request).
_MIGRATED: set[str] = set()
#: Admin's audit log: (who, action, what).
AuditLog = Callable[[str, str, str], Awaitable[None]]


class SessionsNotEnded(GatehouseError):
    """The change was made, but the user's sessions could not be ended."""


@dataclass(frozen=True, slots=True)
class UserView:
    username: str
    display_name: str
    email: str | None
    phone: str | None
    groups: tuple[str, ...]
    enabled: bool
    #: Seconds until the account's lock ends (0: not locked).
    locked_for: int


class HomeUsers:
    """The user DB of the installation in ``home`` (migrated at first use)."""

    def __init__(
        self,
        home: Path,
        audit_log: AuditLog | None = None,
        end_sessions: SessionEnder | None = None,
    ) -> None:
        self.home = home
        self.audit_log = audit_log
        self._end_sessions = end_sessions or home_session_ender(home)
        self._db: Database | None = None
        self._lock = asyncio.Lock()

    async def db(self) -> Database:
        async with self._lock:
            if self._db is None:
                url = database_urls(self.home).user_db
                if url not in _MIGRATED:
                    await upgrade(url, "user")
                    _MIGRATED.add(url)
                self._db = Database(url)
            return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.dispose()
            self._db = None

    async def _in_session(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        db = await self.db()
        async with db.session() as session:
            return await work(session)

    async def _record(self, who: str, event: str, username: str | None, **detail: object) -> None:
        await audit.record(
            await self.db(), event, username, None, {**detail, "by": f"console:{who}"}
        )
        if self.audit_log is not None:
            what = json.dumps({"user": username, **detail}, sort_keys=True)
            await self.audit_log(who, f"user.{event.removeprefix('user_')}", what)

    async def _end(self, username: str, reason: str) -> str:
        try:
            return await self._end_sessions(username, reason)
        except GatehouseError as exc:
            raise SessionsNotEnded(
                f"the change was made, but the sessions of {username!r} were NOT ended "
                f"({exc}); end them from the user's page once the session database answers"
            ) from None

    # -- reading --------------------------------------------------------------------------

    async def users(self) -> list[UserView]:
        async def work(session: AsyncSession) -> list[UserView]:
            infos = await directory.list_users(session)
            return await self._views(session, infos)

        return await self._in_session(work)

    async def user(self, username: str) -> UserView:
        async def work(session: AsyncSession) -> UserView:
            user = await directory.get_user(session, username)
            info = directory.UserInfo.of(user)
            (view,) = await self._views(session, [info], {username: user.phone})
            return view

        return await self._in_session(work)

    async def _views(
        self,
        session: AsyncSession,
        infos: Sequence[directory.UserInfo],
        phones: dict[str, str | None] | None = None,
    ) -> list[UserView]:
        keys = {lockout.account_key(i.username): i.username for i in infos}
        counters = await lockout.load(await session.connection(), keys) if keys else {}
        now = utcnow()
        locked = {
            keys[key]: lockout.check(counter, now).retry_after for key, counter in counters.items()
        }
        return [
            UserView(
                i.username,
                i.display_name,
                i.email,
                (phones or {}).get(i.username),
                i.groups,
                i.enabled,
                locked.get(i.username, 0),
            )
            for i in infos
        ]

    async def groups(self) -> list[directory.GroupInfo]:
        return await self._in_session(directory.list_groups)

    # -- users ----------------------------------------------------------------------------

    async def add_user(
        self,
        who: str,
        username: str,
        display_name: str = "",
        email: str = "",
        phone: str = "",
        groups: Sequence[str] = (),
    ) -> str:
        """Add a user with a generated password, returned to be shown once."""
        name = directory.check_username(username)
        checked_email = check_email(email or None)
        checked_phone = check_phone(phone or None)
        shown = check_display_name(display_name or name)
        for group in groups:
            directory.check_group_name(group)
        password = passwords.generate()
        password_hash = await asyncio.to_thread(hash_password, password)

        async def work(session: AsyncSession) -> None:
            await directory.add_user(
                session,
                name,
                password_hash,
                display_name=shown,
                email=checked_email,
                phone=checked_phone,
                groups=groups,
            )

        await self._in_session(work)
        await self._record(who, "user_added", name, groups=list(groups))
        return password

    async def set_enabled(self, who: str, username: str, enabled: bool) -> str:
        """Enable or disable; a disabled user's sessions end. A line saying what happened."""

        async def work(session: AsyncSession) -> bool:
            return await directory.set_enabled(session, username, enabled)

        changed = await self._in_session(work)
        state = "enabled" if enabled else "disabled"
        if not changed:
            return f"user {username!r} was already {state}"
        await self._record(who, f"user_{state}", username)
        said = f"user {username!r} {state}"
        if not enabled:
            said += "; " + await self._end(username, "user_disabled")
        return said

    async def reset_password(self, who: str, username: str) -> tuple[str, str]:
        """A new generated password (to be shown once) and what happened to the sessions."""
        password = passwords.generate()
        password_hash = await asyncio.to_thread(hash_password, password)

        async def work(session: AsyncSession) -> None:
            await directory.set_password_hash(session, username, password_hash)

        await self._in_session(work)
        await self._record(who, "user_password_reset", username)
        # Whoever knew the old password must not stay signed in with it.
        return password, await self._end(username, "password_changed")

    async def unlock(self, who: str, username: str) -> None:
        async def work(session: AsyncSession) -> None:
            await directory.get_user(session, username)
            await lockout.reset(await session.connection(), lockout.account_key(username))

        await self._in_session(work)
        await self._record(who, "user_unlocked", username)

    async def end_sessions(self, who: str, username: str) -> str:
        directory.check_username(username)
        said = await self._end(username, "revoked")
        await self._record(who, "user_sessions_ended", username)
        return said

    # -- groups ---------------------------------------------------------------------------

    async def add_group(self, who: str, name: str) -> None:
        directory.check_group_name(name)

        async def work(session: AsyncSession) -> None:
            await directory.add_group(session, name)

        await self._in_session(work)
        await self._record(who, "group_added", None, group=name)

    async def delete_group(self, who: str, name: str) -> str:
        async def work(session: AsyncSession) -> list[str]:
            return await directory.delete_group(session, name)

        members = await self._in_session(work)
        await self._record(who, "group_deleted", None, group=name)
        for member in members:
            await self._end(member, "groups_changed")
        return f"group {name!r} deleted" + (
            f"; the sessions of its {len(members)} member(s) ended" if members else ""
        )

    async def add_member(self, who: str, group: str, username: str) -> str:
        async def work(session: AsyncSession) -> bool:
            return await directory.add_member(session, group, username)

        if not await self._in_session(work):
            return f"user {username!r} already in group {group!r}"
        await self._record(who, "group_member_added", username, group=group)
        return f"user {username!r} added to group {group!r}; " + await self._end(
            username, "groups_changed"
        )

    async def remove_member(self, who: str, group: str, username: str) -> str:
        async def work(session: AsyncSession) -> None:
            await directory.remove_member(session, group, username)

        await self._in_session(work)
        await self._record(who, "group_member_removed", username, group=group)
        return f"user {username!r} removed from group {group!r}; " + await self._end(
            username, "groups_changed"
        )

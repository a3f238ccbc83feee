"""Users and groups in the user DB: lookups for logins and the admin operations.

Passwords arrive here already hashed; hashing is the Authentication service's business.

GatehouseError
 └── DirectoryError    an admin operation cannot be done (no such user, name taken, ...)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import selectinload

from gatehouse.errors import GatehouseError
from gatehouse.storage.models import GROUP_NAME_LENGTH, USERNAME_LENGTH, Group, Membership, User
from gatehouse.storage.types import utcnow

_NAME = re.compile(r"^[A-Za-z0-9._@-]+$")


class DirectoryError(GatehouseError):
    """An admin operation on users or groups that cannot be done."""


def valid_username(name: str) -> bool:
    return 1 <= len(name) <= USERNAME_LENGTH and _NAME.match(name) is not None


def check_username(name: str) -> str:
    if not valid_username(name):
        raise DirectoryError(
            f"invalid username {name!r}: use 1-{USERNAME_LENGTH} letters, digits, "
            "'.', '_', '@' or '-'"
        )
    return name


def check_group_name(name: str) -> str:
    if not (1 <= len(name) <= GROUP_NAME_LENGTH and _NAME.match(name)):
        raise DirectoryError(
            f"invalid group name {name!r}: use 1-{GROUP_NAME_LENGTH} letters, digits, "
            "'.', '_', '@' or '-'"
        )
    return name


@dataclass(frozen=True, slots=True)
class UserInfo:
    """What other services learn about a user (``USER`` in docs/internal-api.md)."""

    username: str
    display_name: str
    email: str | None
    groups: tuple[str, ...]
    enabled: bool

    @classmethod
    def of(cls, user: User) -> UserInfo:
        return cls(
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            groups=tuple(sorted(g.name for g in user.groups)),
            enabled=user.enabled,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "username": self.username,
            "display_name": self.display_name,
            "email": self.email,
            "groups": list(self.groups),
            "enabled": self.enabled,
        }


@dataclass(frozen=True, slots=True)
class GroupInfo:
    name: str
    members: tuple[str, ...]


async def find_user(session: AsyncSession, username: str) -> User | None:
    """The user with exactly this name (groups loaded), or None."""
    if not valid_username(username):
        return None
    return (await session.execute(_find_user(), {"b_username": username})).scalar_one_or_none()


@functools.cache
def _find_user() -> Any:
    """:func:`find_user`'s query, built once (on first use, when the mappers are set up): a
    sign-in binds the name instead of building the query and its cache key again."""
    query = select(User).where(User.username == bindparam("b_username"))
    return query.options(selectinload(User.groups))


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a sign-in needs of a user row: its id, what other services learn, and the
    password hash (None: no password sign-in)."""

    user_id: int
    info: UserInfo
    password_hash: str | None


async def find_credentials(conn: AsyncConnection, username: str) -> Credentials | None:
    """:func:`find_user` for a sign-in, on a Core connection: one statement (the user joined
    with its groups' names), no ORM objects."""
    if not valid_username(username):
        return None
    rows = (await conn.execute(_find_credentials(), {"b_username": username})).all()
    if not rows:
        return None
    first = rows[0]
    groups = tuple(sorted(row.group_name for row in rows if row.group_name is not None))
    info = UserInfo(first.username, first.display_name, first.email, groups, first.enabled)
    return Credentials(first.id, info, first.password_hash)


@functools.cache
def _find_credentials() -> Any:
    users, groups = User.__table__.c, Group.__table__.c
    memberships = Membership.__table__.c
    joined = User.__table__.outerjoin(
        Membership.__table__, memberships.user_id == users.id
    ).outerjoin(Group.__table__, groups.id == memberships.group_id)
    return (
        select(
            users.id,
            users.username,
            users.display_name,
            users.email,
            users.password_hash,
            users.enabled,
            groups.name.label("group_name"),
        )
        .select_from(joined)
        .where(users.username == bindparam("b_username"))
    )


async def get_user(session: AsyncSession, username: str) -> User:
    user = await find_user(session, check_username(username))
    if user is None:
        raise DirectoryError(f"user {username!r} does not exist")
    return user


async def get_group(session: AsyncSession, name: str) -> Group:
    query = select(Group).where(Group.name == check_group_name(name))
    group = (await session.execute(query)).scalar_one_or_none()
    if group is None:
        raise DirectoryError(
            f"group {name!r} does not exist (create it with: gatehouse groups add {name})"
        )
    return group


async def _flush(session: AsyncSession, conflict: str) -> None:
    try:
        await session.flush()
    except IntegrityError:  # a concurrent admin created the same name first
        raise DirectoryError(conflict) from None


async def add_user(
    session: AsyncSession,
    username: str,
    password_hash: str | None,
    *,
    display_name: str = "",
    email: str | None = None,
    phone: str | None = None,
    groups: Sequence[str] = (),
) -> User:
    check_username(username)
    if await find_user(session, username) is not None:
        raise DirectoryError(f"user {username!r} already exists")
    members_of = [await get_group(session, name) for name in dict.fromkeys(groups)]
    user = User(
        username=username,
        display_name=display_name,
        email=email,
        phone=phone,
        password_hash=password_hash,
        enabled=True,
        groups=members_of,
    )
    session.add(user)
    await _flush(session, f"user {username!r} already exists")
    return user


async def set_password_hash(session: AsyncSession, username: str, password_hash: str) -> None:
    user = await get_user(session, username)
    user.password_hash = password_hash
    user.updated_at = utcnow()


async def set_contact(
    session: AsyncSession, username: str, changes: Mapping[str, str | None]
) -> tuple[str | None, str | None]:
    """Set the user's ``email`` and/or ``phone`` (the keys of ``changes``; None removes one;
    the caller has checked them); returns both as they are now."""
    unknown = set(changes) - {"email", "phone"}
    if unknown:
        raise ValueError(f"not contact data: {sorted(unknown)}")
    user = await get_user(session, username)
    if "email" in changes:
        user.email = changes["email"]
    if "phone" in changes:
        user.phone = changes["phone"]
    user.updated_at = utcnow()
    return user.email, user.phone


async def set_enabled(session: AsyncSession, username: str, enabled: bool) -> bool:
    """Enable or disable; returns whether anything changed."""
    user = await get_user(session, username)
    changed = user.enabled != enabled
    user.enabled = enabled
    user.updated_at = utcnow()
    return changed


async def delete_user(session: AsyncSession, username: str) -> None:
    user = await get_user(session, username)
    await session.execute(delete(Membership).where(Membership.user_id == user.id))
    await session.execute(delete(User).where(User.id == user.id))
    session.expunge(user)


async def list_users(session: AsyncSession) -> list[UserInfo]:
    query = select(User).order_by(User.username).options(selectinload(User.groups))
    return [UserInfo.of(user) for user in (await session.execute(query)).scalars()]


async def add_group(session: AsyncSession, name: str) -> None:
    check_group_name(name)
    exists = await session.execute(select(Group.id).where(Group.name == name))
    if exists.first() is not None:
        raise DirectoryError(f"group {name!r} already exists")
    session.add(Group(name=name))
    await _flush(session, f"group {name!r} already exists")


async def delete_group(session: AsyncSession, name: str) -> list[str]:
    """Delete a group; returns the user names of its members (their groups changed)."""
    group = await get_group(session, name)
    members = await session.scalars(
        select(User.username)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.group_id == group.id)
        .order_by(User.username)
    )
    usernames = list(members)
    await session.execute(delete(Membership).where(Membership.group_id == group.id))
    await session.execute(delete(Group).where(Group.id == group.id))
    session.expunge(group)
    return usernames


async def list_groups(session: AsyncSession) -> list[GroupInfo]:
    query = select(Group).order_by(Group.name).options(selectinload(Group.members))
    return [
        GroupInfo(group.name, tuple(sorted(u.username for u in group.members)))
        for group in (await session.execute(query)).scalars()
    ]


async def add_member(session: AsyncSession, group_name: str, username: str) -> bool:
    """Put a user in a group; returns False when already a member."""
    group = await get_group(session, group_name)
    user = await get_user(session, username)
    if any(g.id == group.id for g in user.groups):
        return False
    user.groups.append(group)
    await _flush(session, f"user {username!r} is already in group {group_name!r}")
    return True


async def remove_member(session: AsyncSession, group_name: str, username: str) -> None:
    group = await get_group(session, group_name)
    user = await get_user(session, username)
    if not any(g.id == group.id for g in user.groups):
        raise DirectoryError(f"user {username!r} is not in group {group_name!r}")
    user.groups = [g for g in user.groups if g.id != group.id]


async def count_users(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(User))).scalar_one())

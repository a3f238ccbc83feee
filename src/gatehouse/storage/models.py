"""The tables of the user DB and the session DB (docs/internal-api.md, "Databases").

The two databases may live at different URLs, so each has its own metadata and its own
migration branch: ``UserBase.metadata`` and ``SessionBase.metadata``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gatehouse.storage.types import UTCDateTime, utcnow

#: Constraint names are fixed so migrations can refer to them on every engine.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

USERNAME_LENGTH = 64
GROUP_NAME_LENGTH = 64
#: "+" and at most 15 digits (E.164).
PHONE_LENGTH = 16
# ``user:`` or ``ip:`` plus a username or an IPv6 address.
FAILURE_KEY_LENGTH = 80

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite so it autoincrements.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UserBase(DeclarativeBase):
    """Tables of the user DB."""

    metadata = MetaData(naming_convention=NAMING)


class SessionBase(DeclarativeBase):
    """Tables of the session DB."""

    metadata = MetaData(naming_convention=NAMING)


class User(UserBase):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    #: An E.164 number (``+4915112345678``) for codes by SMS; NULL: none on file.
    phone: Mapped[str | None] = mapped_column(String(PHONE_LENGTH))
    # NULL: the user cannot log in with a password.
    password_hash: Mapped[str | None] = mapped_column(String(512))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    groups: Mapped[list[Group]] = relationship(
        secondary="memberships", back_populates="members", order_by="Group.name"
    )


class Group(UserBase):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(GROUP_NAME_LENGTH), unique=True)

    members: Mapped[list[User]] = relationship(
        secondary="memberships", back_populates="groups", order_by="User.username"
    )


class Membership(UserBase):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class LoginFailure(UserBase):
    """Login-attempt counter of one key (``ip:``, ``user:``, ``dev:``, ``unknown:``), see
    :mod:`gatehouse.authentication.lockout`."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(FAILURE_KEY_LENGTH), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the row counts as gone (and is purged): a window past the last attempt or its lock.
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: The id of the last counted attempt, which tells a reservation it was the one counted.
    attempt: Mapped[str] = mapped_column(String(32))


class AuditEvent(UserBase):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(64))
    username: Mapped[str | None] = mapped_column(String(256), index=True)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Session(SessionBase):
    """A login session. Only the hash of the session id is stored."""

    __tablename__ = "sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), index=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    methods: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    absolute_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    #: A sign-in still under way (``{"enrol": bool, "device": id|null}``): the password is
    #: checked, a second factor is not yet. Such a row is no session for decisions; null
    #: for a session.
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)


class AssertionKey(SessionBase):
    """A Policy service's public key for identity assertions (its private key stays in its
    home); the published key set is every row not past ``not_after``."""

    __tablename__ = "assertion_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    public_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


__all__ = [
    "AssertionKey",
    "AuditEvent",
    "Group",
    "LoginFailure",
    "Membership",
    "Session",
    "SessionBase",
    "User",
    "UserBase",
]

"""The Administration service's tables (their own metadata and Alembic branch ``admin``).

They may share a database with the user DB; every name starts with ``admin_`` so they never
collide with another service's tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, LargeBinary, MetaData, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.storage.models import NAMING, BigId
from gatehouse.storage.types import UTCDateTime, utcnow

ID_LENGTH = 64
WHO_LENGTH = 256


class AdminBase(DeclarativeBase):
    """Tables of the Administration service."""

    metadata = MetaData(naming_convention=NAMING)


class DraftRow(AdminBase):
    """The one current draft (``id`` is always 1): the text being edited."""

    __tablename__ = "admin_drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(Text)
    saved_by: Mapped[str] = mapped_column(String(WHO_LENGTH))
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Ids whose removal the operator allowed when saving (see gatehouse.administration.guard).
    allow_removal: Mapped[list[str] | None] = mapped_column(JSON)


class VersionRow(AdminBase):
    """A published version: immutable once written."""

    __tablename__ = "admin_versions"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: The validated configuration as written (defaults left out).
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The text it was published from (comments included).
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(WHO_LENGTH))
    comment: Mapped[str] = mapped_column(Text, default="")
    #: The version whose content this one republished, for a rollback.
    rollback_of: Mapped[int | None] = mapped_column(Integer)
    #: Signed envelopes: service id -> envelope (see gatehouse.administration.signing).
    envelopes: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: PEM of the public key that signed them.
    public_key: Mapped[str] = mapped_column(Text)


class ServiceRow(AdminBase):
    """A service that registered with Admin, and what it last reported."""

    __tablename__ = "admin_services"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    node: Mapped[str] = mapped_column(String(ID_LENGTH))
    endpoint: Mapped[str] = mapped_column(String(512))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    running_version: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class JoinTokenRow(AdminBase):
    """A one-time token a node joins with; only its SHA-256 is stored. It names the one
    service (role and id) that may join with it; ``replace``: that service may be enrolled
    again although it is (its old certificates are revoked)."""

    __tablename__ = "admin_join_tokens"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    #: None only for tokens made before enrolment named the service (they are refused).
    service_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    replace: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(WHO_LENGTH))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_by: Mapped[str | None] = mapped_column(String(ID_LENGTH))


class CertificateRow(AdminBase):
    """A certificate the internal CA issued to a service (at enrolment or renewal); a
    revoked one is published in every view until it expires."""

    __tablename__ = "admin_certificates"

    #: The serial number in lowercase hexadecimal.
    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    role: Mapped[str] = mapped_column(String(32))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditRow(AdminBase):
    """Who changed what, when, and the difference it made."""

    __tablename__ = "admin_audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    who: Mapped[str] = mapped_column(String(WHO_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    what: Mapped[str] = mapped_column(Text)
    diff: Mapped[str] = mapped_column(Text, default="")


class OAuthKeyRow(AdminBase):
    """An OAuth signing key (gatehouse.administration.oauth_keys): its public JWK in clear,
    its private JWK only as AES-256-GCM ciphertext under Admin's key file, bound to the kid."""

    __tablename__ = "admin_oauth_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The id of the key (in HOME/oauth-keys.key) that sealed it.
    keyring_id: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    signs_from: Mapped[datetime] = mapped_column(UTCDateTime)


__all__ = [
    "AdminBase",
    "AdministratorRow",
    "AuditRow",
    "CertificateRow",
    "ConsoleSessionRow",
    "DraftRow",
    "JoinTokenRow",
    "OAuthKeyRow",
    "PersonalTokenRow",
    "ServiceRow",
    "VersionRow",
]


class AdministratorRow(AdminBase):
    """A named administrator (issue 19): a user of the user directory and the role bound to
    them here (gatehouse.administration.admins_roles)."""

    __tablename__ = "admin_administrators"

    name: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(WHO_LENGTH))


class PersonalTokenRow(AdminBase):
    """An administrator's personal API token: only its SHA-256 is stored; ``id`` is the
    public part that names it in listings and the audit log."""

    __tablename__ = "admin_personal_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsoleSessionRow(AdminBase):
    """A signed-in console session: only the SHA-256 of the cookie's value is stored."""

    __tablename__ = "admin_console_sessions"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)

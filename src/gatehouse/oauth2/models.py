"""The tables of the OAuth2 DB: authorization codes, tokens and consents.

The OAuth2 DB may be a database of its own (``oauth2_db``), so it has its own metadata and
migration branch (``oauth2``); usernames and client ids carry no foreign keys (users live in
the user DB, clients in the published configuration). Codes and refresh tokens are stored as
SHA-256 hashes only; access tokens are JWTs, known here by their ``jti``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.storage.models import NAMING, USERNAME_LENGTH
from gatehouse.storage.types import UTCDateTime, utcnow

ID_LENGTH = 32
HASH_LENGTH = 32
CLIENT_ID_LENGTH = 128
SID_LENGTH = 128
ATTEMPT_LENGTH = 128


class OAuth2Base(DeclarativeBase):
    """Tables of the OAuth2 DB."""

    metadata = MetaData(naming_convention=NAMING)


class OAuth2Code(OAuth2Base):
    """An authorization code: its hash and what the token request is checked against.

    ``used_at`` is set by one conditional ``UPDATE`` (:meth:`OAuth2Store.exchange_code`);
    ``id`` becomes the family id of the tokens issued for it, so a second use revokes them.
    ``attempt`` is the Policy service's authorization attempt (a retry replaces its code).
    """

    __tablename__ = "oauth2_codes"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(HASH_LENGTH), unique=True)
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LENGTH))
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(8))
    auth_time: Mapped[int] = mapped_column(BigInteger)
    amr: Mapped[list[Any]] = mapped_column(JSON, default=list)
    acr: Mapped[str | None] = mapped_column(String(64))
    sid: Mapped[str | None] = mapped_column(String(SID_LENGTH))
    attempt: Mapped[str] = mapped_column(String(ATTEMPT_LENGTH), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OAuth2Token(OAuth2Base):
    """An access token (its ``jti``) and the refresh token issued with it (its hash).

    Every token from one code (or one client_credentials request) shares ``family_id``;
    ``parent_id`` is the row whose refresh token was rotated into this one. A refresh token
    is used once: ``rotated_at`` is set by a conditional ``UPDATE``; presenting it again
    revokes the family (``revoked_at`` on every row).
    """

    __tablename__ = "oauth2_tokens"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LENGTH))
    username: Mapped[str | None] = mapped_column(String(USERNAME_LENGTH))
    scope: Mapped[str] = mapped_column(Text)
    sid: Mapped[str | None] = mapped_column(String(SID_LENGTH), index=True)
    access_jti: Mapped[str] = mapped_column(String(64), unique=True)
    access_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    refresh_hash: Mapped[bytes | None] = mapped_column(LargeBinary(HASH_LENGTH), unique=True)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OAuth2Consent(OAuth2Base):
    """What a user allowed a client: the scopes granted (a later grant adds to them)."""

    __tablename__ = "oauth2_consents"

    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(CLIENT_ID_LENGTH), primary_key=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


__all__ = ["OAuth2Base", "OAuth2Code", "OAuth2Consent", "OAuth2Token"]

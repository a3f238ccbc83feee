"""The outbox DB's table: one row per accepted message, its text only as ciphertext.

The outbox may be a database of its own (``outbox_db``), so it has its own metadata and its
own migration branch (``outbox``).

A row's life: ``accepted`` (due at ``next_attempt_at``) -> claimed by a delivery worker
(``lease_owner``/``lease_until`` set, status unchanged) -> ``sent`` (``sent_channel``), or
``failed`` (every channel failed this round; due again after a backoff) and again, until
``expires_at``: then ``expired`` (dead-lettered). ``body_ciphertext`` is set to NULL when the
message is sent or expires.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import CheckConstraint, Index, Integer, LargeBinary, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.storage.models import NAMING
from gatehouse.storage.types import UTCDateTime, utcnow

STATUSES: Final = ("accepted", "sent", "failed", "expired")
PURPOSES: Final = ("code", "invitation", "notice")
#: Statuses of a message still to deliver.
PENDING: Final = ("accepted", "failed")

ID_LENGTH = 64
KEY_LENGTH = 64
KEY_ID_LENGTH = 64
USERNAME_LENGTH = 256
EMAIL_LENGTH = 254
PHONE_LENGTH = 16
CHANNELS_LENGTH = 32
CHANNEL_NAME_LENGTH = 64
LEASE_OWNER_LENGTH = 128
ERROR_LENGTH = 500


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class OutboxBase(DeclarativeBase):
    """Tables of the outbox DB."""

    metadata = MetaData(naming_convention=NAMING)


class OutboxMessage(OutboxBase):
    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint(_one_of("status", STATUSES), name="status"),
        CheckConstraint(_one_of("purpose", PURPOSES), name="purpose"),
        # What a delivery worker looks for: pending messages by due time.
        Index("ix_outbox_messages_due", "status", "next_attempt_at"),
    )

    #: ``secrets.token_urlsafe(16)``; also the idempotency key towards the channels
    #: (``Message-ID: <ID@gatehouse>``, ``Idempotency-Key: ID``).
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    #: The caller's key: the same key again answers this message.
    key: Mapped[str] = mapped_column(String(KEY_LENGTH), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(USERNAME_LENGTH))
    email: Mapped[str | None] = mapped_column(String(EMAIL_LENGTH))
    phone: Mapped[str | None] = mapped_column(String(PHONE_LENGTH))
    #: The key (outside the DB) that sealed the body, so keys can be rotated.
    body_key_id: Mapped[str | None] = mapped_column(String(KEY_ID_LENGTH))
    #: Subject and text, AES-256-GCM with the message id as associated data; NULL once sent
    #: or expired.
    body_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: The caller's order of channel kinds (``email,sms``); NULL: the configured order.
    channels: Mapped[str | None] = mapped_column(String(CHANNELS_LENGTH))
    status: Mapped[str] = mapped_column(String(16), default="accepted")
    #: Channel attempts so far; rounds: times every channel failed (the backoff's exponent).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(LEASE_OWNER_LENGTH))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_channel: Mapped[str | None] = mapped_column(String(CHANNEL_NAME_LENGTH))
    #: The last failure, channel-level and short; never the text or a credential.
    last_error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


__all__ = ["PENDING", "PURPOSES", "STATUSES", "OutboxBase", "OutboxMessage"]

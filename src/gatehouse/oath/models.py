"""The table of the OATH DB: one row per HOTP/TOTP token (its seed only as ciphertext).

The OATH DB may be a database of its own (``oath_db`` in ``databases.yaml``), so it has its
own metadata and migration branch (``oath``), and ``owner`` is a username without a foreign
key to the user DB.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gatehouse.storage.models import NAMING, USERNAME_LENGTH, BigId
from gatehouse.storage.types import UTCDateTime, utcnow

TokenType = Literal["hotp", "totp"]
Algorithm = Literal["sha1", "sha256", "sha512"]
TokenState = Literal["active", "disabled", "locked", "pending"]

TOKEN_TYPES: Final = ("hotp", "totp")
ALGORITHMS: Final = ("sha1", "sha256", "sha512")
TOKEN_STATES: Final = ("active", "disabled", "locked", "pending")
DIGITS: Final = (6, 8)
PERIODS: Final = (30, 60)

SERIAL_LENGTH = 64
KEY_ID_LENGTH = 64
#: The id of the submission that consumed ``last_step`` / the counter (see ``last_attempt``).
ATTEMPT_LENGTH = 64
#: ``last_step`` of a TOTP token that never accepted a code: every real step is above it.
NO_STEP = -1


def _one_of(column: str, values: tuple[str, ...] | tuple[int, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class OathBase(DeclarativeBase):
    """Tables of the OATH DB."""

    metadata = MetaData(naming_convention=NAMING)


class OathToken(OathBase):
    """A token. ``counter`` is the next HOTP counter expected; ``last_step`` the last TOTP time
    step accepted (a step at or before it is never accepted again); ``drift`` in steps."""

    __tablename__ = "oath_tokens"
    __table_args__ = (
        CheckConstraint(_one_of("type", TOKEN_TYPES), name="type"),
        CheckConstraint(_one_of("algorithm", ALGORITHMS), name="algorithm"),
        CheckConstraint(_one_of("digits", DIGITS), name="digits"),
        CheckConstraint(_one_of("period", PERIODS), name="period"),
        CheckConstraint(_one_of("state", TOKEN_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    serial: Mapped[str] = mapped_column(String(SERIAL_LENGTH), unique=True)
    # NULL: not assigned to anyone.
    owner: Mapped[str | None] = mapped_column(String(USERNAME_LENGTH), index=True)
    type: Mapped[str] = mapped_column(String(8))
    algorithm: Mapped[str] = mapped_column(String(8))
    digits: Mapped[int] = mapped_column(Integer)
    period: Mapped[int] = mapped_column(Integer, default=30)
    #: Names the key (outside the DB) that encrypted the seed, so keys can be rotated.
    seed_key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    seed_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
    last_step: Mapped[int] = mapped_column(BigInteger, default=NO_STEP)
    drift: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default="active")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The id of the submission (the Policy service's attempt) that consumed ``last_step`` or
    #: the last counter: that same submission asking again (a retry on another service after
    #: the first died between commit and answer) is answered ok without a second acceptance.
    last_attempt: Mapped[str | None] = mapped_column(String(ATTEMPT_LENGTH))
    #: The id of the check that counted the last failure: a failure whose commit was cut off
    #: (a database failover) is found by reading it, not counted twice.
    failure_attempt: Mapped[str | None] = mapped_column(String(ATTEMPT_LENGTH))


class OathUser(OathBase):
    """What the OATH DB knows of a user apart from tokens: an administrator may require the
    user to enrol a token at the next login (cleared when the user confirms one)."""

    __tablename__ = "oath_users"

    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), primary_key=True)
    enrol_required: Mapped[bool] = mapped_column(Boolean, default=False)


#: The out-of-band methods a code row is for (issue 16).
CODE_METHODS: Final = ("email_otp", "sms_otp")
CODE_HASH_LENGTH = 32
MESSAGE_ID_LENGTH = 64


class OathCode(OathBase):
    """A one-time code sent out of band (:mod:`gatehouse.authentication.codes`): only its
    keyed hash (HMAC-SHA256 under a key derived from the seed keyring, ``key_id``) and expiry.
    ``sealed`` holds the code AES-GCM encrypted under the keyring only until the Distribution
    service accepted its message (so a retry of the send re-submits the same code), then it
    is erased. Accepted once: ``consumed_at`` and the submission that did (``attempt``) are set
    by one conditional ``UPDATE``."""

    __tablename__ = "oath_codes"
    __table_args__ = (CheckConstraint(_one_of("method", CODE_METHODS), name="method"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), index=True)
    method: Mapped[str] = mapped_column(String(16))
    #: The caller's key of this send (its idempotency key; the message's key derives from it).
    send_key: Mapped[str] = mapped_column(String(ATTEMPT_LENGTH), unique=True)
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(CODE_HASH_LENGTH))
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    digits: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_LENGTH))
    recipient_hint: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempt: Mapped[str | None] = mapped_column(String(ATTEMPT_LENGTH))


class OathCodeSends(OathBase):
    """When codes were last sent to a user (Unix times, newest last): the resend throttle,
    changed only after a write to ``version`` has locked the row (one send at a time per user)."""

    __tablename__ = "oath_code_sends"

    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), primary_key=True)
    sends: Mapped[list[float]] = mapped_column(JSON, default=list)
    version: Mapped[int] = mapped_column(Integer, default=0)


#: What became of an invitation (issue 16): ``unsent`` (its link still sealed in the row, for
#: an Authentication service to hand to Distribution), ``sent`` (accepted by Distribution; the
#: sealed link erased), ``used`` (a token was enrolled with it), ``expired`` (never sent in its
#: lifetime), ``revoked`` (by an administrator).
INVITATION_STATES: Final = ("unsent", "sent", "used", "expired", "revoked")
INVITATION_ID_LENGTH = 32
SECRET_HASH_LENGTH = 32


class OathInvitation(OathBase):
    """An invitation to enrol a TOTP token through a single-use, time-limited e-mailed link
    (:mod:`gatehouse.oath.invitations`). Only the SHA-256 of the link's secret is kept for
    good; ``sealed`` holds the secret AES-GCM encrypted under the seed keyring (``key_id``,
    the id as associated data) only until the Distribution service accepted the message."""

    __tablename__ = "oath_invitations"
    __table_args__ = (CheckConstraint(_one_of("state", INVITATION_STATES), name="state"),)

    id: Mapped[str] = mapped_column(String(INVITATION_ID_LENGTH), primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), index=True)
    email: Mapped[str] = mapped_column(String(256))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(SECRET_HASH_LENGTH), unique=True)
    key_id: Mapped[str | None] = mapped_column(String(KEY_ID_LENGTH))
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default="unsent")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    #: An Authentication service's claim on an unsent row: no other submits it before then.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_LENGTH))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The submission that used it (a retry of that same submission is answered ok again).
    used_attempt: Mapped[str | None] = mapped_column(String(ATTEMPT_LENGTH))
    serial: Mapped[str | None] = mapped_column(String(SERIAL_LENGTH))


__all__ = [
    "ALGORITHMS",
    "CODE_METHODS",
    "DIGITS",
    "INVITATION_STATES",
    "NO_STEP",
    "PERIODS",
    "TOKEN_STATES",
    "TOKEN_TYPES",
    "Algorithm",
    "OathBase",
    "OathCode",
    "OathCodeSends",
    "OathInvitation",
    "OathToken",
    "OathUser",
    "TokenState",
    "TokenType",
]

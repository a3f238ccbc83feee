"""OATH DB: oath_codes (one-time codes sent by e-mail or SMS, only their keyed hash) and
oath_code_sends (the per-user resend throttle) (gatehouse.oath.models).

Revision ID: oath_0002
Revises: oath_0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "oath_0002"
down_revision: str | None = "oath_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oath_codes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("send_key", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("digits", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("recipient_hint", sa.String(256), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("consumed_at", TS, nullable=True),
        sa.Column("attempt", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oath_codes")),
        sa.UniqueConstraint("send_key", name=op.f("uq_oath_codes_send_key")),
        sa.CheckConstraint("method IN ('email_otp', 'sms_otp')", name=op.f("ck_oath_codes_method")),
    )
    op.create_index(op.f("ix_oath_codes_username"), "oath_codes", ["username"])
    op.create_index(op.f("ix_oath_codes_expires_at"), "oath_codes", ["expires_at"])
    op.create_table(
        "oath_code_sends",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("sends", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_oath_code_sends")),
    )


def downgrade() -> None:
    op.drop_table("oath_code_sends")
    op.drop_index(op.f("ix_oath_codes_expires_at"), table_name="oath_codes")
    op.drop_index(op.f("ix_oath_codes_username"), table_name="oath_codes")
    op.drop_table("oath_codes")

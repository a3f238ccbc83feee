"""OATH DB: oath_invitations (single-use links to enrol a TOTP token, only the SHA-256 of
their secret kept) (gatehouse.oath.models).

Revision ID: oath_0003
Revises: oath_0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "oath_0003"
down_revision: str | None = "oath_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oath_invitations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("email", sa.String(256), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("claimed_until", TS, nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("used_attempt", sa.String(64), nullable=True),
        sa.Column("serial", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oath_invitations")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_oath_invitations_secret_hash")),
        sa.CheckConstraint(
            "state IN ('unsent', 'sent', 'used', 'expired', 'revoked')",
            name=op.f("ck_oath_invitations_state"),
        ),
    )
    op.create_index(op.f("ix_oath_invitations_username"), "oath_invitations", ["username"])
    op.create_index(op.f("ix_oath_invitations_expires_at"), "oath_invitations", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_oath_invitations_expires_at"), table_name="oath_invitations")
    op.drop_index(op.f("ix_oath_invitations_username"), table_name="oath_invitations")
    op.drop_table("oath_invitations")

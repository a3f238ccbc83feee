"""OATH DB: oath_tokens and oath_users (gatehouse.oath.models).

Revision ID: oath_0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "oath_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("oath",)
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oath_tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("serial", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("algorithm", sa.String(8), nullable=False),
        sa.Column("digits", sa.Integer(), nullable=False),
        sa.Column("period", sa.Integer(), nullable=False),
        sa.Column("seed_key_id", sa.String(64), nullable=False),
        sa.Column("seed_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("counter", sa.BigInteger(), nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("drift", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("locked_until", TS, nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=True),
        sa.Column("last_attempt", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oath_tokens")),
        sa.UniqueConstraint("serial", name=op.f("uq_oath_tokens_serial")),
        sa.CheckConstraint("type IN ('hotp', 'totp')", name=op.f("ck_oath_tokens_type")),
        sa.CheckConstraint(
            "algorithm IN ('sha1', 'sha256', 'sha512')", name=op.f("ck_oath_tokens_algorithm")
        ),
        sa.CheckConstraint("digits IN (6, 8)", name=op.f("ck_oath_tokens_digits")),
        sa.CheckConstraint("period IN (30, 60)", name=op.f("ck_oath_tokens_period")),
        sa.CheckConstraint(
            "state IN ('active', 'disabled', 'locked', 'pending')",
            name=op.f("ck_oath_tokens_state"),
        ),
    )
    op.create_index(op.f("ix_oath_tokens_owner"), "oath_tokens", ["owner"])
    op.create_table(
        "oath_users",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("enrol_required", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_oath_users")),
    )


def downgrade() -> None:
    op.drop_table("oath_users")
    op.drop_index(op.f("ix_oath_tokens_owner"), table_name="oath_tokens")
    op.drop_table("oath_tokens")

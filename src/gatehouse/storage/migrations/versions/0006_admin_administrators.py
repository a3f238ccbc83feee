"""Admin DB: named administrators, their personal API tokens and console sessions (hashes only).

Revision ID: admin_0005
Revises: admin_0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "admin_0005"
down_revision: str | None = "admin_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_administrators",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_admin_administrators")),
    )
    op.create_table(
        "admin_personal_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_personal_tokens")),
        sa.UniqueConstraint("hash", name=op.f("uq_admin_personal_tokens_hash")),
    )
    op.create_index(
        op.f("ix_admin_personal_tokens_name"), "admin_personal_tokens", ["name"], unique=False
    )
    op.create_table(
        "admin_console_sessions",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_admin_console_sessions")),
    )
    op.create_index(
        op.f("ix_admin_console_sessions_name"), "admin_console_sessions", ["name"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_admin_console_sessions_name"), table_name="admin_console_sessions")
    op.drop_table("admin_console_sessions")
    op.drop_index(op.f("ix_admin_personal_tokens_name"), table_name="admin_personal_tokens")
    op.drop_table("admin_personal_tokens")
    op.drop_table("admin_administrators")

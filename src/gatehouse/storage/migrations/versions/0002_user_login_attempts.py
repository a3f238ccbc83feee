"""User DB: login counters reserve attempts before the password check and expire.

``login_failures`` gains ``expires_at`` (indexed, for the purge) and ``attempt`` (which
reservation was counted last). Existing counters are dropped: they hold no expiry, and a
counter only ever lives minutes to hours.

Revision ID: user_0002
Revises: user_0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "user_0002"
down_revision: str | None = "user_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.execute("DELETE FROM login_failures")
    with op.batch_alter_table("login_failures") as batch:
        batch.add_column(sa.Column("expires_at", TS, nullable=False))
        batch.add_column(sa.Column("attempt", sa.String(32), nullable=False))
        batch.create_index(op.f("ix_login_failures_expires_at"), ["expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("login_failures") as batch:
        batch.drop_index(op.f("ix_login_failures_expires_at"))
        batch.drop_column("attempt")
        batch.drop_column("expires_at")

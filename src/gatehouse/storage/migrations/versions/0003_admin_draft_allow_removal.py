"""Admin DB: the removals an operator allowed with the draft (gatehouse.administration.guard).

Revision ID: admin_0002
Revises: admin_0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "admin_0002"
down_revision: str | None = "admin_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("admin_drafts") as batch:
        batch.add_column(sa.Column("allow_removal", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("admin_drafts") as batch:
        batch.drop_column("allow_removal")

"""OATH DB: ``oath_tokens.failure_attempt``, the id of the check that counted the token's last
failure, so that a failure whose commit was cut off by a database failover is found by reading
and never counted twice (gatehouse.oath.store.TokenStore.record_failure). Expand only: a
nullable column the previous release does not read.

Revision ID: oath_0004
Revises: oath_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "oath_0004"
down_revision: str | None = "oath_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oath_tokens") as batch:
        batch.add_column(sa.Column("failure_attempt", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oath_tokens") as batch:
        batch.drop_column("failure_attempt")

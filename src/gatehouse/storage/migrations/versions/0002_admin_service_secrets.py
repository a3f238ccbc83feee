"""Admin DB (superseded by admin_0003, which drops the table): the hash of each registered
service's secret, from before services authenticated with certificates.

A branch of its own (``admin_secrets``, needing ``admin_0001``) rather than a step of the
``admin`` branch, so that ``upgrade(url, "admin")`` still creates exactly the tables of
gatehouse.administration.tables; the Administration service migrates both.

Revision ID: admin_secrets_0001
Revises:
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "admin_secrets_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("admin_secrets",)
depends_on: str | Sequence[str] | None = "admin_0001"


def upgrade() -> None:
    op.create_table(
        "admin_service_secrets",
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("service_id", name=op.f("pk_admin_service_secrets")),
    )


def downgrade() -> None:
    op.drop_table("admin_service_secrets")

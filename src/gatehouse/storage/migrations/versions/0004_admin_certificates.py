"""Admin DB: the internal CA's certificates per service, join tokens that name one service,
and no more service secrets (services authenticate with their certificates).

``admin_service_secrets`` (branch ``admin_secrets``) is dropped when an older installation
has it; that branch's one revision stays so Alembic still knows the revision recorded.

Revision ID: admin_0003
Revises: admin_0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "admin_0003"
down_revision: str | None = "admin_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("admin_join_tokens") as batch:
        batch.add_column(sa.Column("service_id", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("replace", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "admin_certificates",
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("not_before", TS, nullable=False),
        sa.Column("not_after", TS, nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_admin_certificates")),
    )
    op.create_index(op.f("ix_admin_certificates_service_id"), "admin_certificates", ["service_id"])
    if "admin_service_secrets" in sa.inspect(op.get_bind()).get_table_names():
        op.drop_table("admin_service_secrets")


def downgrade() -> None:
    op.drop_index(op.f("ix_admin_certificates_service_id"), "admin_certificates")
    op.drop_table("admin_certificates")
    with op.batch_alter_table("admin_join_tokens") as batch:
        batch.drop_column("replace")
        batch.drop_column("service_id")

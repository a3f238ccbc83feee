"""Admin DB: the OAuth 2.0 / OpenID Connect signing keys (private part sealed only).

Revision ID: admin_0004
Revises: admin_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "admin_0004"
down_revision: str | None = "admin_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_oauth_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("keyring_id", sa.String(64), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("signs_from", TS, nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_admin_oauth_keys")),
    )


def downgrade() -> None:
    op.drop_table("admin_oauth_keys")

"""Session DB: the public keys of the Policy services' identity assertions.

Each Policy service registers its own key (``kid``: the RFC 7638 thumbprint, the JWK as JSON
text) and keeps ``not_after`` moving while it runs; the published key set is every row not
past it.

Revision ID: session_0002
Revises: session_0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "session_0002"
down_revision: str | None = "session_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "assertion_keys",
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("not_after", TS, nullable=False),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_assertion_keys")),
    )
    op.create_index(op.f("ix_assertion_keys_not_after"), "assertion_keys", ["not_after"])


def downgrade() -> None:
    op.drop_table("assertion_keys")

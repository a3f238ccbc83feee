"""User DB: users gain ``phone`` (an E.164 number for one-time codes by SMS).

``email`` exists since user_0001; with ``phone`` a user has the contact data the
Authentication service sends ``email_otp`` / ``sms_otp`` codes to.

Revision ID: user_0003
Revises: user_0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "user_0003"
down_revision: str | None = "user_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("phone", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("phone")

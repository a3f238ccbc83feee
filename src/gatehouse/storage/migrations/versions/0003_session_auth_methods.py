"""Session DB: sign-ins under way between their password and their one-time password.

``sessions.pending`` (JSON, null for a session) marks a row whose password step is done and
whose second factor (or token enrolment) is not: any Policy service can finish it. Sessions
from before authentication methods were recorded say ``["password"]``, the only method there
was.

Revision ID: session_0003
Revises: session_0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "session_0003"
down_revision: str | None = "session_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("pending", sa.JSON(none_as_null=True), nullable=True))
    sessions = sa.table("sessions", sa.column("methods", sa.JSON()))
    op.execute(
        sessions.update()
        .where(sa.or_(sessions.c.methods.is_(None), sa.cast(sessions.c.methods, sa.Text) == "[]"))
        .values(methods=["password"])
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM sessions WHERE pending IS NOT NULL"))
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("pending")

"""OAuth2 DB: oauth2_codes, oauth2_tokens, oauth2_consents (gatehouse.oauth2.models).

Revision ID: oauth2_0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "oauth2_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("oauth2",)
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "oauth2_codes",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("code_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=True),
        sa.Column("code_challenge", sa.String(128), nullable=True),
        sa.Column("code_challenge_method", sa.String(8), nullable=True),
        sa.Column("auth_time", sa.BigInteger(), nullable=False),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("acr", sa.String(64), nullable=True),
        sa.Column("sid", sa.String(128), nullable=True),
        sa.Column("attempt", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("used_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth2_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_oauth2_codes_code_hash")),
    )
    op.create_index(op.f("ix_oauth2_codes_attempt"), "oauth2_codes", ["attempt"])
    op.create_index(op.f("ix_oauth2_codes_expires_at"), "oauth2_codes", ["expires_at"])
    op.create_table(
        "oauth2_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("family_id", sa.String(32), nullable=False),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("sid", sa.String(128), nullable=True),
        sa.Column("access_jti", sa.String(64), nullable=False),
        sa.Column("access_expires_at", TS, nullable=False),
        sa.Column("refresh_hash", sa.LargeBinary(32), nullable=True),
        sa.Column("refresh_expires_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("rotated_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth2_tokens")),
        sa.UniqueConstraint("access_jti", name=op.f("uq_oauth2_tokens_access_jti")),
        sa.UniqueConstraint("refresh_hash", name=op.f("uq_oauth2_tokens_refresh_hash")),
    )
    op.create_index(op.f("ix_oauth2_tokens_family_id"), "oauth2_tokens", ["family_id"])
    op.create_index(op.f("ix_oauth2_tokens_sid"), "oauth2_tokens", ["sid"])
    op.create_table(
        "oauth2_consents",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("granted_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("username", "client_id", name=op.f("pk_oauth2_consents")),
    )


def downgrade() -> None:
    op.drop_table("oauth2_consents")
    op.drop_index(op.f("ix_oauth2_tokens_sid"), table_name="oauth2_tokens")
    op.drop_index(op.f("ix_oauth2_tokens_family_id"), table_name="oauth2_tokens")
    op.drop_table("oauth2_tokens")
    op.drop_index(op.f("ix_oauth2_codes_expires_at"), table_name="oauth2_codes")
    op.drop_index(op.f("ix_oauth2_codes_attempt"), table_name="oauth2_codes")
    op.drop_table("oauth2_codes")

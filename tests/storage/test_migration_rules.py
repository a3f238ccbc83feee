"""Online migrations (docs/migrations.md): every migration keeps the rules that let the
previous release run on the new schema during a rolling upgrade, and a migration that breaks
them — dropping, renaming or tightening what the previous release uses — fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.storage.migration_rules import Step, check_revision, problems, steps

#: Migrations released before these rules (issue 18), with why they are not checked: new
#: ones never go here.
BEFORE_THE_RULES = {
    # Added NOT NULL columns without defaults to login_failures (an offline upgrade then).
    "user_0002": "adds NOT NULL columns without a default",
    # Reads the live schema (inspection) or updates JSON rows: not rendered offline.
    "admin_0003": "inspects the live schema",
    "session_0003": "updates JSON rows with a literal that offline mode cannot render",
}

BAD = '''"""A migration that breaks the previous release.

Revision ID: session_9001
Revises: session_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "session_9001"
down_revision = "session_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    {body}


def downgrade() -> None:
    pass
'''


def test_every_migration_keeps_the_online_rules() -> None:
    found = steps()
    assert {s.revision for s in found} >= set(BEFORE_THE_RULES)
    broken = [
        problem
        for step in found
        if step.revision not in BEFORE_THE_RULES
        for problem in check_revision(step)
    ]
    assert broken == []


def bad_step(tmp_path: Path, body: str, contract: str = "") -> tuple[Step, tuple[Path, ...]]:
    source = BAD.replace("{body}", body)
    if contract:
        source = source.replace("depends_on = None", f"depends_on = None\ncontract = {contract}")
    (tmp_path / "9001_bad.py").write_text(source)
    locations = (tmp_path,)
    step = next(s for s in steps(locations) if s.revision == "session_9001")
    return step, locations


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ('op.drop_column("sessions", "username")', "drops column sessions.username"),
        ('op.drop_table("assertion_keys")', "drops table assertion_keys"),
        (
            'op.alter_column("sessions", "email", new_column_name="mail")',
            "renames in sessions",
        ),
        ('op.rename_table("sessions", "logins")', "renames in sessions"),
        (
            'op.add_column("sessions", sa.Column("tenant", sa.String(64), nullable=False))',
            "adds sessions.tenant NOT NULL without a default",
        ),
        (
            'op.alter_column("sessions", "email", nullable=False)',
            "makes sessions.email NOT NULL",
        ),
        (
            'op.alter_column("sessions", "client_ip", type_=sa.Integer())',
            "changes the type of sessions.client_ip",
        ),
    ],
)
def test_a_migration_that_breaks_the_previous_release_fails(
    tmp_path: Path, body: str, complaint: str
) -> None:
    step, locations = bad_step(tmp_path, body)
    broken = check_revision(step, locations)
    assert any(complaint in problem for problem in broken), broken


@pytest.mark.parametrize(
    "body",
    [
        'op.add_column("sessions", sa.Column("device_name", sa.String(64), nullable=True))',
        'op.add_column("sessions", sa.Column("tier", sa.Integer(), nullable=False,'
        ' server_default="0"))',
        'op.create_table("upgrade_notes", sa.Column("id", sa.Integer(), primary_key=True),'
        ' sa.Column("note", sa.Text(), nullable=False))',
        'op.create_index("ix_sessions_email", "sessions", ["email"])',
    ],
)
def test_an_expand_migration_passes(tmp_path: Path, body: str) -> None:
    step, locations = bad_step(tmp_path, body)
    assert check_revision(step, locations) == []


def test_a_contract_migration_may_drop_only_what_the_code_no_longer_uses(tmp_path: Path) -> None:
    step, locations = bad_step(
        tmp_path, 'op.drop_column("sessions", "user_agent")', contract='("sessions.user_agent",)'
    )
    assert check_revision(step, locations) == [
        "session_9001 (9001_bad.py): contract names sessions.user_agent, which the current "
        "models still use"
    ]
    assert problems("ALTER TABLE sessions DROP COLUMN gone;", ("sessions.gone",)) == []

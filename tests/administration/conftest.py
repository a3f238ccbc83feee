"""Fixtures for the Administration tests: PostgreSQL clusters and a database per engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["db_url", "postgres_cluster", "postgres_url"]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each engine."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}"
    return str(request.getfixturevalue("postgres_url"))

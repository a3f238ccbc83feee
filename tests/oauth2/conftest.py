"""A migrated OAuth2 DB (SQLite; PostgreSQL where a test asks for it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gatehouse.storage.migrate import upgrade
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]


@pytest.fixture
def oauth2_db(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}"
    asyncio.run(upgrade(url, "oauth2"))
    return url


@pytest.fixture
def oauth2_pg(postgres_url: str) -> str:
    asyncio.run(upgrade(postgres_url, "oauth2"))
    return postgres_url

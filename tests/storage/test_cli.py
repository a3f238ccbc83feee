"""``gatehouse db upgrade --home DIR``."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from sqlalchemy import inspect

from gatehouse.storage.engine import Database
from tests.support.processes import GATEHOUSE, free_port


def gatehouse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEHOUSE, *args], capture_output=True, text=True, timeout=60, check=False
    )


def table_names(url: str) -> set[str]:
    async def go() -> set[str]:
        db = Database(url)
        try:
            async with db.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_upgrade_creates_home_and_sqlite_file(tmp_path: Path) -> None:
    home = tmp_path / "new" / "home"
    done = gatehouse("db", "upgrade", "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert "databases up to date" in done.stdout
    assert "users" in table_names(f"sqlite+aiosqlite:///{home / 'gatehouse.db'}")
    again = gatehouse("db", "upgrade", "--home", str(home))
    assert again.returncode == 0, again.stderr


def test_upgrade_uses_databases_yaml(tmp_path: Path, postgres_url: str) -> None:
    sessions = tmp_path / "sessions.db"
    (tmp_path / "databases.yaml").write_text(
        f"user_db: {postgres_url}\nsession_db: sqlite+aiosqlite:///sessions.db\n"
    )
    done = gatehouse("db", "upgrade", "--home", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert table_names(postgres_url) == {
        "alembic_version",
        "users",
        "groups",
        "memberships",
        "login_failures",
        "audit_events",
    }
    assert table_names(f"sqlite+aiosqlite:///{sessions}") == {
        "alembic_version",
        "sessions",
        "assertion_keys",
    }


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://gatehouse:secret@127.0.0.1:{free_port()}/x"
    (tmp_path / "databases.yaml").write_text(f"user_db: {url}\n")
    done = gatehouse("db", "upgrade", "--home", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.startswith("gatehouse: database unavailable: cannot connect")
    assert "Traceback" not in done.stderr
    assert "secret" not in done.stderr


def test_bad_databases_yaml(tmp_path: Path) -> None:
    (tmp_path / "databases.yaml").write_text("user_db: oracle://x\n")
    done = gatehouse("db", "upgrade", "--home", str(tmp_path))
    assert done.returncode == 2
    assert "databases.yaml: user_db: unsupported database URL scheme 'oracle'" in done.stderr

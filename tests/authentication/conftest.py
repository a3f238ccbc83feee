"""Fixtures: user DBs on SQLite and PostgreSQL, users in them, running Authentication services."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gatehouse.authentication.config import PasswordHash
from gatehouse.authentication.passwords import Passwords
from gatehouse.storage import directory
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.processes import Service, free_port, write_config

__all__ = ["postgres_cluster", "postgres_url"]

#: Short locks so lockouts expire within a test; only allowed with the cap lifted.
FAST_LOCKOUT = {
    "insecure_no_rate_cap": True,
    "account_max_failures": 3,
    "account_window": "10s",
    "account_lock": "1s",
    "ip_max_failures": 50,
    "ip_window": "10s",
    "ip_lock": "1s",
}

StartAuth = Callable[..., Service]


@pytest.fixture(params=["sqlite", "postgresql"])
def user_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty user DB on each engine."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    asyncio.run(upgrade(url, "user"))
    return url


@pytest.fixture
def sqlite_user_db(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    asyncio.run(upgrade(url, "user"))
    return url


def add_user(
    url: str,
    name: str,
    password: str | None,
    *,
    groups: Sequence[str] = (),
    enabled: bool = True,
    email: str | None = None,
    display_name: str = "",
    phone: str | None = None,
) -> None:
    """Put a user (and any missing groups) straight into the user DB."""
    password_hash = Passwords(PasswordHash()).hash_sync(password) if password else None

    async def go() -> None:
        db = Database(url)
        try:
            async with db.session() as session:
                known = {g.name for g in await directory.list_groups(session)}
                for group in groups:
                    if group not in known:
                        await directory.add_group(session, group)
                await directory.add_user(
                    session,
                    name,
                    password_hash,
                    display_name=display_name,
                    email=email,
                    phone=phone,
                    groups=groups,
                )
                if not enabled:
                    await directory.set_enabled(session, name, False)
        finally:
            await db.dispose()

    asyncio.run(go())


@pytest.fixture
def start_auth(tmp_path: Path) -> Iterator[StartAuth]:
    """Factory: write a config, start ``gatehouse authentication``, wait until it listens."""
    started: list[Service] = []

    def start(
        user_db: str,
        name: str = "auth",
        lockout: dict[str, Any] | None = None,
        database: dict[str, Any] | None = None,
        **settings: Any,
    ) -> Service:
        port = free_port()
        config: dict[str, object] = {
            "authentication": {
                "id": name,
                "listen": f"127.0.0.1:{port}",
                "user_db": user_db,
                "lockout": lockout if lockout is not None else FAST_LOCKOUT,
                **settings,
            }
        }
        if database is not None:
            config["database"] = database
        path = write_config(tmp_path / f"{name}.yaml", config)
        svc = Service(
            ["authentication", "--config", str(path), "--home", str(tmp_path / "home")],
            tmp_path / f"{name}.log",
            "127.0.0.1",
            port,
        )
        started.append(svc)
        return svc.wait_ready()

    yield start
    for svc in started:
        svc.stop()

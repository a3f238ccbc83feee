"""Read the user DB directly from tests."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select, text

from gatehouse.storage.engine import Database
from gatehouse.storage.models import AuditEvent


def rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        db = Database(url)
        try:
            async with db.connect() as conn:
                result = await conn.execute(text(sql), params)
                return [dict(row) for row in result.mappings()]
        finally:
            await db.dispose()

    return asyncio.run(go())


def audit_events(url: str) -> list[tuple[str, str | None, str | None]]:
    found = rows(url, "SELECT event, username, client_ip FROM audit_events ORDER BY id")
    return [(r["event"], r["username"], r["client_ip"]) for r in found]


def stored_hash(url: str, username: str) -> str:
    found = rows(url, "SELECT password_hash FROM users WHERE username = :u", u=username)
    return str(found[0]["password_hash"])


def audit_details(url: str) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        db = Database(url)
        try:
            async with db.session() as session:
                query = select(AuditEvent.detail).order_by(AuditEvent.id)
                return list((await session.execute(query)).scalars())
        finally:
            await db.dispose()

    return asyncio.run(go())

"""The audit log: one ``audit_events`` row per authentication or session event.

The Authentication service writes ``login_ok``, ``login_failed`` and ``login_locked``, and for
one-time passwords ``otp_ok``, ``otp_failed``, ``otp_replay``, ``otp_locked``,
``otp_enrolled`` and ``otp_confirmed`` (:mod:`gatehouse.authentication.otp`; never a code or a
seed); the Policy service writes ``logout`` and ``session_revoked`` through :func:`record`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gatehouse.storage.engine import Database
from gatehouse.storage.models import AuditEvent
from gatehouse.storage.types import utcnow

LOGIN_OK = "login_ok"
LOGIN_FAILED = "login_failed"
LOGIN_LOCKED = "login_locked"

#: Built once: an event binds its values (a sign-in writes one).
_INSERT = insert(AuditEvent)
# Names typed at a login form can be anything; keep what fits the column.
_MAX_USERNAME = 256


async def write(
    conn: AsyncConnection,
    event: str,
    username: str | None,
    client_ip: str | None,
    detail: Mapping[str, object] | None = None,
    at: datetime | None = None,
) -> None:
    """Add an event inside the caller's transaction."""
    values = {
        "at": at or utcnow(),
        "event": event,
        "username": username[:_MAX_USERNAME] if username is not None else None,
        "client_ip": client_ip,
        "detail": dict(detail or {}),
    }
    await conn.execute(_INSERT, values)


async def record(
    db: Database,
    event: str,
    username: str | None,
    client_ip: str | None,
    detail: Mapping[str, object] | None = None,
) -> None:
    """Add an event in its own transaction, waiting for an unavailable database
    (``db.failover_wait``; a commit cut off by a failover may leave the event twice). Raises
    DatabaseUnavailable when the DB is still down after that."""
    at = utcnow()

    async def add(conn: AsyncConnection) -> None:
        await write(conn, event, username, client_ip, detail, at=at)

    await db.run_core(add)

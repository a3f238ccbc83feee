"""Engines for the user and session databases, and the one place driver errors are translated.

SQLite (``sqlite+aiosqlite:///PATH``) is shared by several processes on one node, so every
connection uses WAL, a 5 s busy timeout and foreign keys. PostgreSQL
(``postgresql+asyncpg://...``) URLs are used as given, so multi-host URLs that follow the
writable primary keep working.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gatehouse.errors import ConfigError
from gatehouse.storage.errors import DatabaseUnavailable

SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
CONNECT_TIMEOUT = 5.0
SQLITE_BUSY_TIMEOUT_MS = 5000

# SQLSTATE classes and codes that mean "the server cannot serve us now", not "bad query":
# 08 connection exception, 53 insufficient resources, 57P01-03 shutting down / starting,
# 25006 read-only transaction (we reached a standby while the primary switches),
# 28 bad credentials and 3D000 no such database (misconfigured, but still "cannot serve").
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "28", "53", "57P0")
_UNAVAILABLE_SQLSTATES = ("25006", "3D000")
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error")


def parse_url(url: str | URL) -> URL:
    """Parse and check a database URL; only the two supported async drivers are accepted."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise ConfigError([("", f"not a database URL: {str(url)!r}")]) from None
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise ConfigError(
            [
                (
                    "",
                    f"unsupported database URL scheme {parsed.drivername!r} "
                    f"(use {' or '.join(s + '://' for s in SUPPORTED_DRIVERS)})",
                )
            ]
        )
    if parsed.drivername.startswith("sqlite") and not parsed.database:
        raise ConfigError([("", "a SQLite URL needs a file path: sqlite+aiosqlite:///PATH")])
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def create_engine(url: str | URL) -> AsyncEngine:
    """An AsyncEngine for a SQLite file or a PostgreSQL server (one or several hosts)."""
    parsed = parse_url(url)
    if parsed.drivername.startswith("sqlite"):
        engine = create_async_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        parsed,
        pool_pre_ping=True,  # a restarted or promoted server leaves dead pooled connections
        pool_size=5,
        max_overflow=10,
        pool_timeout=CONNECT_TIMEOUT,
        connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": 30},
    )


def unavailable_reason(error: BaseException) -> str | None:
    """Why ``error`` means the database is unavailable, or None when it is another error."""
    if isinstance(error, DatabaseUnavailable):
        return str(error)
    if isinstance(error, exc.TimeoutError | TimeoutError | asyncio.TimeoutError):
        return "timed out waiting for a database connection"
    if isinstance(error, OSError):
        return f"cannot connect: {error.strerror or error}"
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return "connection lost"
        orig = error.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(sqlstate, str) and (
            sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
            or sqlstate in _UNAVAILABLE_SQLSTATES
        ):
            return f"{type(orig).__name__}: {_first_line(orig)}"
        text = _first_line(orig).lower()
        if isinstance(error, exc.OperationalError) and any(s in text for s in _SQLITE_UNAVAILABLE):
            return _first_line(orig)
        cause = orig.__cause__ if orig is not None else None
        if isinstance(cause, OSError | TimeoutError) or isinstance(error, exc.InterfaceError):
            return f"connection failed: {_first_line(cause or orig)}"
        if "connection" in text and ("closed" in text or "refused" in text or "lost" in text):
            return _first_line(orig)
    return None


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Turn driver errors that mean "database unavailable" into :class:`DatabaseUnavailable`."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as error:
        reason = unavailable_reason(error)
        if reason is None:
            raise
        if "unable to open" in reason:
            # aiosqlite stops its worker thread without waiting; give it a moment so it does
            # not report to an event loop that a short-lived CLI is about to close.
            await asyncio.sleep(0.05)
        raise DatabaseUnavailable(f"database unavailable: {reason}") from error


class Database:
    """One database: an engine and a session factory; the boundary for driver errors."""

    def __init__(self, url: str | URL) -> None:
        self.url = parse_url(url)
        self.engine = create_engine(self.url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """An ORM session in a transaction, committed when the block ends without error."""
        async with translate_errors(), self.sessions.begin() as session:
            yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a transaction, committed when the block ends without error."""
        async with translate_errors(), self.engine.begin() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise :class:`DatabaseUnavailable` unless a trivial query succeeds."""
        async with self.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

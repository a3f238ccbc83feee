"""Exactly one Administration service per database, held for the life of the process.

PostgreSQL: a session advisory lock on a connection kept open for as long as the lock is
held; the holder names itself in ``application_name`` (``gatehouse-admin pid=N host=H``), so
a second Admin can say who is in the way. The lock goes when that connection goes: a holder
should check :meth:`AdminLock.still_held` now and then and stop when it lost the lock.

SQLite: ``fcntl.flock`` on ``DATABASE.admin.lock`` next to the database file; the holder
writes its pid, host and start time into the file. The kernel drops the lock when the
process dies, however it dies. The file itself stays (deleting it would let a second Admin
lock a new file while the first still holds the old one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.administration.canonical import timestamp
from gatehouse.administration.errors import AdminAlreadyRunning
from gatehouse.storage.engine import create_engine, parse_url, translate_errors

#: The advisory lock key ("gateadmi"); distinct from the migration lock's.
PG_ADMIN_LOCK = 0x6761_7465_6164_6D69
APPLICATION_NAME = "gatehouse-admin"
LOCK_SUFFIX = ".admin.lock"
_ONE_PER_INSTALLATION = (
    "There is exactly one Administration service per installation: stop it first."
)


class AdminLock(Protocol):
    """The lock that makes this process the installation's one Administration service."""

    @property
    def description(self) -> str: ...

    #: Whether a lost lock may be taken again: a PostgreSQL lock is lost with its connection
    #: (a failover, a restart); a lock file is lost only when someone replaced the file.
    retakeable: bool

    async def still_held(self) -> bool: ...

    async def release(self) -> None: ...


def holder_text() -> str:
    return f"pid {os.getpid()} on host {socket.gethostname()}"


async def acquire_admin_lock(url: str) -> AdminLock:
    """Become the one Admin of the database at ``url``.

    Raises:
        AdminAlreadyRunning: another process holds the lock; the message says which.
        DatabaseUnavailable: PostgreSQL cannot be reached.
    """
    parsed = parse_url(url)
    if parsed.drivername.startswith("sqlite"):
        assert parsed.database is not None  # parse_url requires a path
        return FileLock.acquire(lock_file_path(parsed.database))
    return await PostgresLock.acquire(url)


@asynccontextmanager
async def admin_lock(url: str) -> AsyncIterator[AdminLock]:
    """:func:`acquire_admin_lock` for the duration of a block."""
    lock = await acquire_admin_lock(url)
    try:
        yield lock
    finally:
        await lock.release()


def lock_file_path(database: str | Path) -> Path:
    """The lock file of a SQLite database: beside it, named after it."""
    path = Path(database).absolute()
    return path.with_name(path.name + LOCK_SUFFIX)


class FileLock:
    """``flock`` on the lock file of a SQLite database."""

    retakeable = False

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def description(self) -> str:
        return f"lock file {self.path}"

    @classmethod
    def acquire(cls, path: Path) -> FileLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(os.pread(fd, 4096, 0))
            os.close(fd)
            raise AdminAlreadyRunning(
                f"another Administration service is running on this database: {holder} "
                f"(lock file {path}). {_ONE_PER_INSTALLATION}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": timestamp()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(info) + b"\n", 0)
        os.fsync(fd)
        return cls(path, fd)

    async def still_held(self) -> bool:
        """Held, and the file locked is still the one at the path (not deleted or replaced)."""
        if self._fd is None:
            return False
        try:
            return os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    async def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor drops the flock


def _describe_holder(data: bytes) -> str:
    try:
        info: Any = orjson.loads(data)
        return f"pid {int(info['pid'])} on host {info['host']}, since {info['since']}"
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return "a process that has not written its name yet"


class PostgresLock:
    """A session advisory lock on a dedicated connection."""

    retakeable = True

    def __init__(self, engine: AsyncEngine, conn: AsyncConnection) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = conn

    @property
    def description(self) -> str:
        return f"PostgreSQL advisory lock {PG_ADMIN_LOCK}"

    @classmethod
    async def acquire(cls, url: str) -> PostgresLock:
        engine = create_engine(url)
        conn: AsyncConnection | None = None
        try:
            async with translate_errors():
                conn = await engine.connect()
                name = f"{APPLICATION_NAME} pid={os.getpid()} host={socket.gethostname()}"
                await conn.execute(
                    text("SELECT set_config('application_name', :name, false)"),
                    {"name": name[:63]},  # PostgreSQL keeps 63 bytes
                )
                lock = text("SELECT pg_try_advisory_lock(:key)")
                got = (await conn.execute(lock, {"key": PG_ADMIN_LOCK})).scalar_one()
                holder = None if got else await _pg_holder(conn)
                await conn.commit()
            if got:
                return cls(engine, conn)
        except BaseException:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
            await engine.dispose()
            raise
        await conn.close()
        await engine.dispose()
        raise AdminAlreadyRunning(
            f"another Administration service is running on this database: {holder}. "
            f"{_ONE_PER_INSTALLATION}"
        )

    async def still_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            async with translate_errors():
                held = (
                    await self._conn.execute(
                        text(
                            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
                            " AND locktype = 'advisory' AND granted"
                            " AND classid = :hi AND objid = :lo AND objsubid = 1"
                        ),
                        _key_parts(),
                    )
                ).scalar_one()
                await self._conn.commit()
        except Exception:
            return False
        return bool(held)

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_ADMIN_LOCK})
                    await conn.commit()
                with contextlib.suppress(Exception):
                    await conn.close()
        finally:
            await self._engine.dispose()


def _key_parts() -> dict[str, int]:
    """pg_locks shows a bigint advisory key as classid (high half) and objid (low half)."""
    return {"hi": PG_ADMIN_LOCK >> 32, "lo": PG_ADMIN_LOCK & 0xFFFF_FFFF}


async def _pg_holder(conn: AsyncConnection) -> str:
    row = (
        await conn.execute(
            text(
                "SELECT a.application_name, a.client_addr::text, a.pid, a.backend_start"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted"
                " AND l.database = (SELECT oid FROM pg_database"
                "   WHERE datname = current_database())"
                " AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1"
            ),
            _key_parts(),
        )
    ).first()
    if row is None:
        return "a process that just let go of the lock (try again)"
    name, client, backend_pid, since = row
    who = name if name and name.startswith(APPLICATION_NAME) else f"application {name!r}"
    where = f" from {client}" if client else " over a local socket"
    return f"{who} (connected{where} since {since:%Y-%m-%d %H:%M:%S %Z}, backend pid {backend_pid})"

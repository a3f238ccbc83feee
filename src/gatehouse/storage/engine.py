"""Engines for the user and session databases, and the one place driver errors are translated.

SQLite (``sqlite+aiosqlite:///PATH``) is shared by several processes on one node, so every
connection uses WAL, a 5 s busy timeout and foreign keys. The file is created 0600 before
SQLite opens it (its ``-wal`` and ``-shm`` files take its mode), or tightened if others could
read it (:mod:`gatehouse.storage.permissions`).

PostgreSQL URLs (``postgresql+asyncpg://``) name one server or several:

* ``postgresql+asyncpg://USER[:PASSWORD]@HOST:PORT/DB`` — one server;
* ``postgresql+asyncpg://USER@/DB?host=H1,H2&port=P1,P2`` — several, tried in order
  (the form every client in Gatehouse reads the same way; use it);
* ``postgresql+asyncpg://USER@/DB?host=H1:P1&host=H2:P2`` — also accepted by the engine.

With several hosts a connection goes to the first one that takes writes
(``target_session_attrs=read-write`` unless the URL says otherwise, e.g. ``primary``), so after
a standby is promoted new connections find it without a restart. Connect timeouts are 5 s in
all. Pooled connections whose server went away (a killed or demoted primary) are dropped when
checked out, at no cost on the hot path (no ping); a connection that dies while in use fails
that one transaction with :class:`DatabaseUnavailable` (the services answer 503) and is
replaced. Work run through :meth:`Database.run` / :meth:`Database.run_core` instead waits
for the database (``failover_wait``, :mod:`gatehouse.storage.retry`). The libpq form with
hosts in the authority (``USER@H1:P1,H2:P2/DB``) is not supported.

TLS is set in the query as libpq spells it: ``sslmode`` (or asyncpg's ``ssl``) one of
``disable``, ``allow``, ``prefer`` (asyncpg's default), ``require``, ``verify-ca``,
``verify-full``, and ``sslrootcert=PATH`` (the CA that signed the servers' certificates). In
production use ``sslmode=verify-full&sslrootcert=PATH``: the server's certificate must chain to
that CA and name the host connected to. SQLAlchemy hands query parameters to ``asyncpg.connect``
as keywords and asyncpg reads ``sslrootcert`` only from a DSN, so the engine takes the TLS
parameters out of the URL and passes an ``ssl.SSLContext`` built from them (on every host of a
multi-host URL, and for the LISTEN/NOTIFY connections of :func:`asyncpg_connect_args`).
``passfile=PATH`` (a libpq password file) keeps a password out of the URL.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, exc, text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
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
from gatehouse.storage.permissions import private_sqlite_file
from gatehouse.storage.retry import Outage, Waiting, transaction

SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
CONNECT_TIMEOUT = 5.0
SQLITE_BUSY_TIMEOUT_MS = 5000

# SQLSTATE classes and codes that mean "the server cannot serve us now", not "bad query":
# 08 connection exception, 53 insufficient resources, 57P01-03 shutting down / starting,
# 25006 read-only transaction (we reached a standby while the primary switches),
# 28 bad credentials, 3D000 no such database and 42501 a grant the role lacks (misconfigured,
# but still "cannot serve"; a command line says so in a sentence).
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "28", "53", "57P0")
_UNAVAILABLE_SQLSTATES = ("25006", "3D000", "42501")
# asyncpg's "none of the hosts match target_session_attrs": only standbys answer (a failover).
_NO_WRITABLE_SERVER = "TargetServerAttributeNotMatched"
#: What asyncpg says, unwrapped, when a connection it is still setting up (SQLAlchemy's
#: on-connect hook: the JSON codec) is closed under it: the server went away.
_ASYNCPG_CLOSED = ("connection is closed", "connection was closed")
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database", "disk i/o error")


#: libpq's ``sslmode`` values, weakest first.
TLS_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: The TLS query parameters the engine reads itself (``ssl`` is asyncpg's name for sslmode).
_TLS_PARAMS = ("sslmode", "ssl", "sslrootcert")
#: Other libpq TLS parameters, not supported in a URL.
_UNSUPPORTED_TLS_PARAMS = ("sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir")


def _query_value(url: URL, name: str) -> str | None:
    value = url.query.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError([("", f"PostgreSQL URL: {name} is given more than once")])
    return value


def tls_settings(url: URL) -> tuple[str | None, str | None]:
    """The URL's TLS mode and CA file (``sslrootcert``), checked; None when not given.

    Raises:
        ConfigError: an unknown mode, ``ssl`` and ``sslmode`` that disagree, a CA file with a
            mode that does not check certificates, or an unsupported TLS parameter.
    """
    for name in _UNSUPPORTED_TLS_PARAMS:
        if name in url.query:
            raise ConfigError([("", f"PostgreSQL URL: {name} is not supported")])
    modes = {v for v in (_query_value(url, "sslmode"), _query_value(url, "ssl")) if v}
    if len(modes) > 1:
        raise ConfigError(
            [("", f"PostgreSQL URL: ssl and sslmode disagree ({' and '.join(sorted(modes))})")]
        )
    mode = modes.pop() if modes else None
    if mode is not None and mode not in TLS_MODES:
        raise ConfigError(
            [("", f"PostgreSQL URL: sslmode {mode!r} is not one of {', '.join(TLS_MODES)}")]
        )
    rootcert = _query_value(url, "sslrootcert")
    if rootcert is not None and mode not in ("require", "verify-ca", "verify-full"):
        raise ConfigError(
            [
                (
                    "",
                    "PostgreSQL URL: sslrootcert needs sslmode=verify-full (or verify-ca): "
                    f"with {mode or 'no sslmode'} the server's certificate is not checked",
                )
            ]
        )
    return mode, rootcert or None


def _without_tls(url: URL) -> URL:
    return url.difference_update_query(_TLS_PARAMS)


def _ssl_argument(url: URL) -> ssl.SSLContext | str | None:
    """What ``asyncpg.connect(ssl=...)`` gets for the URL's TLS settings.

    With ``sslrootcert``: a context that requires TLS and a certificate chaining to that CA
    (``verify-full`` also checks the host name; ``require`` with a CA file behaves as
    ``verify-ca``, as in libpq). Without it, the mode as asyncpg reads it.

    Raises:
        ConfigError: the CA file cannot be read.
    """
    mode, rootcert = tls_settings(url)
    if rootcert is None:
        return mode
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = mode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        context.load_verify_locations(cafile=rootcert)
    except ssl.SSLError:  # an OSError too: first
        raise ConfigError(
            [("", f"PostgreSQL URL: sslrootcert {rootcert}: not a PEM CA certificate")]
        ) from None
    except OSError as error:
        reason = error.strerror or "not readable"
        raise ConfigError([("", f"PostgreSQL URL: sslrootcert {rootcert}: {reason}")]) from None
    return context


def _driver_args(url: URL) -> dict[str, Any]:
    """What SQLAlchemy's asyncpg dialect passes to ``asyncpg.connect`` for ``url`` (its TLS
    parameters aside: :func:`_ssl_argument`)."""
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    _, kwargs = dialect.create_connect_args(_without_tls(url))  # type: ignore[no-untyped-call]
    return dict(kwargs)


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
    if parsed.drivername.startswith("postgresql"):
        tls_settings(parsed)
        try:  # host and port lists are checked when connecting; check them now
            _driver_args(parsed)
        except exc.ArgumentError as error:
            raise ConfigError([("", f"PostgreSQL URL: {error}")]) from None
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _pg_connect_args(url: URL) -> dict[str, Any]:
    args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT, "command_timeout": 30}
    several_hosts = isinstance(_driver_args(url).get("host"), list)
    if several_hosts and "target_session_attrs" not in url.query:
        args["target_session_attrs"] = "read-write"
    tls = _ssl_argument(url)
    if tls is not None:
        args["ssl"] = tls
    return args


def asyncpg_connect_args(url: str | URL) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect`` equal to what the engine uses for ``url``.

    For code that talks to asyncpg directly (LISTEN/NOTIFY): asyncpg's own DSN parser keeps
    only the last of repeated ``host=`` parameters.
    """
    parsed = parse_url(url)
    if not parsed.drivername.startswith("postgresql"):
        raise ConfigError([("", f"not a PostgreSQL URL: {parsed.drivername}://")])
    return {**_driver_args(parsed), **_pg_connect_args(parsed)}


def _discard_closed(dbapi_connection: Any, _record: object, _proxy: object) -> None:
    # Checkout hook. A pooled connection whose server went away (killed, restarted, demoted
    # primary) was closed by the driver when the socket closed; the pool replaces it. This
    # costs no round trip, unlike pool_pre_ping (three per checkout with asyncpg).
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise exc.DisconnectionError("the server closed this pooled connection")


def _sqlite_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
    # The pool's reset on return (``pool_reset_on_return=None`` hands it to this hook): roll
    # back only a transaction still open. After a commit there is none, and the pool's own
    # unconditional rollback cost one more trip to aiosqlite's thread per transaction.
    if state.terminate_only or not state.asyncio_safe:
        return
    driver = record.driver_connection
    if driver is None or driver.in_transaction:
        dbapi_connection.rollback()


#: Connections a PostgreSQL engine keeps open (more, up to 10, while a burst needs them).
POOL_SIZE = 5


def create_engine(url: str | URL) -> AsyncEngine:
    """An AsyncEngine for a SQLite file or a PostgreSQL server (one or several hosts)."""
    parsed = parse_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:" and "uri" not in parsed.query:
            private_sqlite_file(Path(parsed.database))
        engine = create_async_engine(
            parsed,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_reset_on_return=None,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "reset", _sqlite_reset)
        return engine
    engine = create_async_engine(
        _without_tls(parsed),
        pool_size=POOL_SIZE,
        max_overflow=10,
        pool_timeout=CONNECT_TIMEOUT,
        connect_args=_pg_connect_args(parsed),
    )
    event.listen(engine.sync_engine, "checkout", _discard_closed)
    return engine


def unavailable_reason(error: BaseException) -> str | None:
    """Why ``error`` means the database is unavailable, or None when it is another error."""
    if isinstance(error, DatabaseUnavailable):
        return str(error)
    if isinstance(error, exc.TimeoutError | TimeoutError | asyncio.TimeoutError):
        return "timed out waiting for a database connection"
    if isinstance(error, OSError):
        return f"cannot connect: {error.strerror or error}"
    if isinstance(error, exc.DisconnectionError):
        return "connection lost"
    if type(error).__module__.startswith("asyncpg") and any(
        text in str(error) for text in _ASYNCPG_CLOSED
    ):
        return f"connection failed: {_first_line(error)}"
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
        if type(cause).__name__ == _NO_WRITABLE_SERVER:
            return "no server takes writes now (only standbys answer)"
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


S = TypeVar("S")


#: How long a health check waits for its trivial query, seconds.
HEALTH_TIMEOUT = 2.0


class Database:
    """One database: an engine and a session factory; the boundary for driver errors.

    ``failover_wait``: how long :meth:`run` and :meth:`run_core` wait for an unavailable
    database (a primary being replaced) before raising :class:`DatabaseUnavailable`. 0 (for
    command-line tools): one attempt. The services pass ``database.failover_wait``
    (:data:`~gatehouse.storage.retry.DEFAULT_FAILOVER_WAIT` by default).
    """

    def __init__(self, url: str | URL, failover_wait: float = 0.0) -> None:
        self.url = parse_url(url)
        self.engine = create_engine(self.url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.failover_wait = failover_wait
        #: Whether (and since when) the database did not answer (:mod:`gatehouse.storage.retry`).
        self.outage = Outage(self.ping)

    async def run(
        self,
        work: Callable[[AsyncSession], Awaitable[S]],
        *,
        resolve: Callable[[AsyncSession], Awaitable[S | None]] | None = None,
        wait: float | None = None,
    ) -> S:
        """``work`` in an ORM transaction, run again while the database is unavailable (up to
        ``wait``, default ``failover_wait``); ``resolve`` finds out whether a transaction
        whose commit failed committed (see :func:`gatehouse.storage.retry.transaction`)."""
        return await transaction(
            self.session,
            work,
            wait=self.failover_wait if wait is None else wait,
            outage=self.outage,
            resolve=resolve,
        )

    async def run_core(
        self,
        work: Callable[[AsyncConnection], Awaitable[S]],
        *,
        resolve: Callable[[AsyncConnection], Awaitable[S | None]] | None = None,
        wait: float | None = None,
    ) -> S:
        """:meth:`run` on a Core connection."""
        return await transaction(
            self.connect,
            work,
            wait=self.failover_wait if wait is None else wait,
            outage=self.outage,
            resolve=resolve,
        )

    @property
    def waiting(self) -> Waiting:
        """This database's wait and outage, for a store built on its engine."""
        return Waiting(self.failover_wait, self.outage)

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

    @property
    def waited_for(self) -> bool:
        """Whether the database is unavailable and work still waits for it: an outage
        younger than ``failover_wait`` (a failover under way)."""
        return self.outage.active and self.outage.age() < self.failover_wait

    async def check_health(self, timeout: float = HEALTH_TIMEOUT) -> None:
        """What a service's health answer asks of its database: nothing while a failover is
        waited for (the service is up and holds its work until the database is back: its
        callers must not take it for a dead one and move that work to another instance that
        waits as well), else a :meth:`ping` within ``timeout``.

        Raises:
            DatabaseUnavailable: the ping failed or took longer than ``timeout``.
        """
        if self.waited_for:
            return
        try:
            await asyncio.wait_for(self.ping(), timeout)
        except TimeoutError:
            raise DatabaseUnavailable("database unavailable: health check timed out") from None

    async def warm(self, count: int = POOL_SIZE) -> None:
        """Open ``count`` pooled connections now (PostgreSQL; SQLite has nothing to warm).

        Each new PostgreSQL connection costs a TLS handshake, a password exchange and a
        server process; a service that takes over from a failed one gets its whole burst at
        once, and without warm connections every request of it pays that on a busy machine.
        """
        if self.dialect != "postgresql":
            return

        async def one() -> None:
            async with self.connect() as conn:
                await conn.execute(text("SELECT 1"))

        await asyncio.gather(*(one() for _ in range(count)))

    async def dispose(self) -> None:
        await self.outage.close()
        await self.engine.dispose()


async def warm_when_ready(ready: asyncio.Event, *databases: Database) -> None:
    """Once ``ready`` is set (the service's databases are migrated), warm their pools."""
    await ready.wait()
    for database in databases:
        try:
            await database.warm()
        except DatabaseUnavailable as error:
            logging.getLogger("gatehouse.storage").warning("could not warm the pool: %s", error)
        except Exception:
            # Warming only saves the first requests a connection set-up: whatever stops it
            # must not reach the service that waits for this task when it stops.
            logging.getLogger("gatehouse.storage").exception("warming the pool failed")

"""An installation's databases: ``HOME/databases.yaml`` or one SQLite file in HOME.

``databases.yaml``::

    user_db: postgresql+asyncpg://gatehouse@/gatehouse?host=db1,db2&port=5432,5432
    session_db: postgresql+asyncpg://...     # optional, defaults to user_db
    oath_db: postgresql+asyncpg://...        # optional, defaults to the SQLite file HOME/oath.db
    outbox_db: postgresql+asyncpg://...      # optional, defaults to the SQLite file HOME/outbox.db
    oauth2_db: postgresql+asyncpg://...      # optional, defaults to the SQLite file HOME/oauth2.db

Relative SQLite paths (``sqlite+aiosqlite:///gatehouse.db``) are relative to HOME.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from gatehouse.config.base import Strict
from gatehouse.config.loader import load_yaml, validate
from gatehouse.errors import ConfigError
from gatehouse.storage.engine import parse_url
from gatehouse.storage.permissions import private_directory, tighten_sqlite_files

FILE_NAME = "databases.yaml"
DEFAULT_SQLITE_NAME = "gatehouse.db"
#: The OATH DB is a database of its own, never the user DB's file.
DEFAULT_OATH_SQLITE_NAME = "oath.db"
#: The Distribution service's outbox, a database of its own too.
DEFAULT_OUTBOX_SQLITE_NAME = "outbox.db"
#: The OAuth2 DB (codes, tokens, consents), a database of its own too.
DEFAULT_OAUTH2_SQLITE_NAME = "oauth2.db"


def _database_url(value: str) -> str:
    try:
        parse_url(value)
    except ConfigError as error:
        raise ValueError(error.problems[0][1]) from None
    return value


DatabaseURL = Annotated[str, AfterValidator(_database_url)]


class DatabasesFile(Strict):
    user_db: DatabaseURL
    session_db: DatabaseURL | None = None
    oath_db: DatabaseURL | None = None
    outbox_db: DatabaseURL | None = None
    oauth2_db: DatabaseURL | None = None


@dataclass(frozen=True, slots=True)
class DatabaseURLs:
    user_db: str
    session_db: str
    oath_db: str
    #: The Distribution service's outbox ("" in a value made by hand: not given).
    outbox_db: str = ""
    #: The OAuth2 DB ("" in a value made by hand: not given).
    oauth2_db: str = ""

    @property
    def shared(self) -> bool:
        """Both databases are one (the session tables live in the user DB)."""
        return self.user_db == self.session_db


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def resolve_relative_sqlite(url: str, home: Path) -> str:
    """Anchor a relative SQLite path at ``home``; other URLs are returned unchanged."""
    parsed = parse_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database:
        path = Path(parsed.database)
        if not path.is_absolute():
            return sqlite_url((home / path).absolute())
    return url


def database_urls(home: Path) -> DatabaseURLs:
    """The user, session, OATH, outbox and OAuth2 DB URLs of the installation in ``home``."""
    path = home / FILE_NAME
    default_oath = sqlite_url((home / DEFAULT_OATH_SQLITE_NAME).absolute())
    default_outbox = sqlite_url((home / DEFAULT_OUTBOX_SQLITE_NAME).absolute())
    default_oauth2 = sqlite_url((home / DEFAULT_OAUTH2_SQLITE_NAME).absolute())
    if not path.exists():
        url = sqlite_url((home / DEFAULT_SQLITE_NAME).absolute())
        return DatabaseURLs(url, url, default_oath, default_outbox, default_oauth2)
    data = load_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            [("", "expected a mapping with user_db (and optionally session_db)")], str(path)
        )
    parsed = validate(DatabasesFile, data, str(path))
    user_db = resolve_relative_sqlite(parsed.user_db, home)
    session_db = resolve_relative_sqlite(parsed.session_db or parsed.user_db, home)
    oath_db = resolve_relative_sqlite(parsed.oath_db, home) if parsed.oath_db else default_oath
    outbox_db = (
        resolve_relative_sqlite(parsed.outbox_db, home) if parsed.outbox_db else default_outbox
    )
    oauth2_db = (
        resolve_relative_sqlite(parsed.oauth2_db, home) if parsed.oauth2_db else default_oauth2
    )
    return DatabaseURLs(user_db, session_db, oath_db, outbox_db, oauth2_db)


def prepare_home(home: Path) -> Path:
    """Create the installation directory if needed (the default SQLite file goes there).

    The home is owner-only (0700); an existing one, and its default SQLite files, are tightened
    with a log line (:mod:`gatehouse.storage.permissions`).
    """
    try:
        private_directory(home)
    except OSError as error:
        raise ConfigError(
            [("", f"cannot create home directory {home}: {error.strerror}")]
        ) from None
    tighten_sqlite_files(home / DEFAULT_SQLITE_NAME)
    tighten_sqlite_files(home / DEFAULT_OATH_SQLITE_NAME)
    tighten_sqlite_files(home / DEFAULT_OUTBOX_SQLITE_NAME)
    tighten_sqlite_files(home / DEFAULT_OAUTH2_SQLITE_NAME)
    return home

"""Where the PostgreSQL server binaries (initdb, pg_ctl, ...) are installed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gatehouse.storage.postgres_ha.errors import ReplicationError

#: Where Debian and Ubuntu install the server binaries (``N/bin``); the newest version wins.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
BINDIR_ENV = "GATEHOUSE_PG_BINDIR"


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when PostgreSQL is not installed.

    ``$GATEHOUSE_PG_BINDIR`` first, then the newest ``/usr/lib/postgresql/N/bin``, then PATH.
    """
    candidates: list[Path] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    if DEBIAN_ROOT.is_dir():
        versions = [p for p in DEBIAN_ROOT.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: -int(p.name))]
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    return None


def require_bindir() -> Path:
    """Like :func:`find_bindir`, but a missing installation is a :class:`ReplicationError`."""
    bindir = find_bindir()
    if bindir is None:
        raise ReplicationError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL "
            f"(apt install postgresql) or set {BINDIR_ENV} to the directory holding them"
        )
    return bindir

"""Owner-only permissions for what holds secrets: the home directory (0700), SQLite files (0600).

The user DB holds password hashes and the audit log, so no other local user may read it,
whatever the umask. SQLite creates a new database file 0644 (less the umask) and gives its
``-wal``, ``-shm`` and ``-journal`` files the database file's mode, so creating the database
file 0600 before SQLite opens it covers the companions made later; companions that exist
already are tightened like the file. Files and directories of an existing installation that
others could read are tightened with a log line; one that cannot be (owned by another user) is
logged and left as it is.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("gatehouse.storage")

DIRECTORY_MODE = 0o700
TRAVERSABLE_MODE = 0o711
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_directory(path: Path, *, traversable: bool = False) -> None:
    """Create ``path`` (and its parents) if needed; ``path`` itself ends up owner-only: 0700.

    ``traversable`` gives 0711: other users may pass through to a directory further down that
    is theirs (a local cluster run as root keeps PostgreSQL's data, owned by the ``postgres``
    user, under its home), never list or read it. An existing directory that others may only
    traverse is therefore left so.

    Raises:
        OSError: it could not be created.
    """
    wanted = TRAVERSABLE_MODE if traversable else DIRECTORY_MODE
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise
    else:
        os.chmod(path, wanted)  # mkdir's mode is subject to the umask
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if traversable and mode & 0o077 != 0o011:
        _chmod(path, mode, (mode & ~0o077) | 0o011)
    elif mode & 0o066:
        _chmod(path, mode, mode & ~0o077)


def private_sqlite_file(path: Path) -> None:
    """Create the SQLite file ``path`` 0600 if it does not exist, else tighten it and its
    companions. A path SQLite could not open either (no such directory) is left for SQLite to
    report in its own words."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        tighten_sqlite_files(path)
        return
    except OSError:
        return
    try:
        os.fchmod(fd, FILE_MODE)  # os.open's mode is subject to the umask
    finally:
        os.close(fd)


def tighten_sqlite_files(path: Path) -> None:
    """Tighten the SQLite file ``path`` and whichever of its companions exist."""
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SQLITE_COMPANIONS)):
        tighten(candidate)


def tighten(path: Path) -> None:
    """Take group and other permissions away from the file ``path`` if it has any (logged)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return  # absent, or gone meanwhile (a -shm file at the last close)
    if mode & 0o077:
        _chmod(path, mode, mode & ~0o077)


def _chmod(path: Path, mode: int, wanted: int) -> None:
    try:
        os.chmod(path, wanted)
    except OSError as error:
        log.warning(
            "%s has permissions %04o and could not be given %04o: %s",
            path,
            mode,
            wanted,
            error.strerror,
        )
        return
    if mode & ~wanted:
        log.warning(
            "tightened the permissions of %s from %04o to %04o: only its owner may read it",
            path,
            mode,
            wanted,
        )

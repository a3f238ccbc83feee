"""Channel credentials from files on the Distribution node (never inline in a configuration,
a view or a last-known-good file)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SecretFileError", "read_secret"]

MAX_SECRET = 4096


class SecretFileError(Exception):
    """A credential file cannot be used; the message names the file, never its content."""


def read_secret(path: str, home: Path, field: str) -> str:
    """The first line of the file ``path`` (relative: to ``home``), without its line end.

    Raises:
        SecretFileError: missing, unreadable, empty, too long, or readable by others.
    """
    file = Path(path) if Path(path).is_absolute() else home / path
    try:
        mode = file.stat().st_mode
        raw = file.read_bytes()[: MAX_SECRET + 1]
    except OSError as error:
        raise SecretFileError(f"{field}: {file}: {error.strerror}") from None
    if mode & 0o077:
        raise SecretFileError(
            f"{field}: {file} is readable by others (mode {mode & 0o777:o}); chmod 600 it"
        )
    if len(raw) > MAX_SECRET:
        raise SecretFileError(f"{field}: {file} is longer than {MAX_SECRET} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"{field}: {file} is not UTF-8 text") from None
    secret = text.splitlines()[0] if text.strip() else ""
    if not secret:
        raise SecretFileError(f"{field}: {file} is empty")
    return secret

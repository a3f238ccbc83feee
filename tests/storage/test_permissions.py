"""Owner-only installations: the home 0700, SQLite files and their companions 0600."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatehouse.errors import ConfigError
from gatehouse.storage import permissions
from gatehouse.storage.engine import create_engine
from gatehouse.storage.home import prepare_home
from gatehouse.storage.permissions import private_directory, private_sqlite_file
from tests.support.node import Node
from tests.support.processes import GATEHOUSE


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Umask 0: without explicit modes, files would come out 0644 or 0666 and dirs 0777."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- in-process -----------------------------------------------------------------------------


@pytest.mark.usefixtures("no_umask")
def test_a_new_sqlite_file_and_its_companions_are_private(tmp_path: Path) -> None:
    db = tmp_path / "gatehouse.db"
    private_sqlite_file(db)
    assert mode(db) == 0o600
    conn = sqlite3.connect(db)  # SQLite itself creates -wal and -shm with the file's mode
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        for companion in ("gatehouse.db-wal", "gatehouse.db-shm"):
            assert mode(tmp_path / companion) == 0o600, companion
    finally:
        conn.close()


@pytest.mark.usefixtures("no_umask")
def test_create_engine_makes_the_file_before_sqlite_does(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    engine = create_engine(f"sqlite+aiosqlite:///{db}")
    try:
        assert mode(db) == 0o600
    finally:
        engine.sync_engine.dispose()


def test_memory_and_missing_directories_are_left_to_sqlite(tmp_path: Path) -> None:
    create_engine("sqlite+aiosqlite:///:memory:").sync_engine.dispose()
    private_sqlite_file(tmp_path / "absent" / "gatehouse.db")
    assert not (tmp_path / "absent").exists()


def test_existing_files_are_tightened_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "gatehouse.db"
    for path in (db, tmp_path / "gatehouse.db-wal", tmp_path / "gatehouse.db-shm"):
        path.write_bytes(b"")
        path.chmod(0o644)
    (tmp_path / "gatehouse.db-journal").write_bytes(b"")
    (tmp_path / "gatehouse.db-journal").chmod(0o660)
    with caplog.at_level(logging.WARNING, "gatehouse.storage"):
        private_sqlite_file(db)
    for suffix, before in (("", "0644"), ("-wal", "0644"), ("-shm", "0644"), ("-journal", "0660")):
        path = Path(f"{db}{suffix}")
        assert mode(path) == 0o600, path
        assert f"tightened the permissions of {path} from {before} to 0600" in caplog.text
    caplog.clear()
    private_sqlite_file(db)
    assert caplog.text == ""  # once private, nothing more is said


@pytest.mark.usefixtures("no_umask")
def test_the_home_is_private_whether_new_or_existing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    new = tmp_path / "a" / "home"
    assert prepare_home(new) == new
    assert mode(new) == 0o700
    existing = tmp_path / "existing"
    existing.mkdir(0o755)
    (existing / "gatehouse.db").write_bytes(b"")
    (existing / "gatehouse.db").chmod(0o644)
    with caplog.at_level(logging.WARNING, "gatehouse.storage"):
        prepare_home(existing)
    assert mode(existing) == 0o700
    assert mode(existing / "gatehouse.db") == 0o600
    assert f"tightened the permissions of {existing} from 0755 to 0700" in caplog.text


def test_a_home_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "home").write_text("")
    with pytest.raises(ConfigError, match="cannot create home directory"):
        prepare_home(tmp_path / "home")
    with pytest.raises(FileExistsError):
        private_directory(tmp_path / "home")


def test_a_file_that_cannot_be_tightened_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "gatehouse.db"
    db.write_bytes(b"")
    db.chmod(0o644)

    def refuse(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(permissions.os, "chmod", refuse)
    with caplog.at_level(logging.WARNING, "gatehouse.storage"):
        private_sqlite_file(db)
    assert f"{db} has permissions 0644 and could not be given 0600" in caplog.text


# -- real processes -------------------------------------------------------------------------


def gatehouse(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEHOUSE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        umask=0,  # so that only explicit modes keep the files private
    )


def assert_private(home: Path) -> None:
    assert mode(home) == 0o700
    files = [home / "gatehouse.db", *home.glob("gatehouse.db-*")]
    assert (home / "gatehouse.db") in files
    for path in files:
        assert mode(path) == 0o600, path


def test_users_add_on_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "var"
    password = "correct horse battery\n"
    done = gatehouse(
        "users", "add", "carol", "--password-stdin", "--home", str(home), stdin=password
    )
    assert done.returncode == 0, done.stderr
    assert_private(home)


def test_db_upgrade_tightens_an_existing_installation(tmp_path: Path) -> None:
    home = tmp_path / "var"
    home.mkdir()
    home.chmod(0o755)
    (home / "gatehouse.db").write_bytes(b"")  # an empty file is an empty SQLite database
    (home / "gatehouse.db").chmod(0o644)
    done = gatehouse("db", "upgrade", "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert_private(home)
    assert f"tightened the permissions of {home} from 0755 to 0700" in done.stderr
    db = home / "gatehouse.db"
    assert f"tightened the permissions of {db} from 0644 to 0600" in done.stderr


def test_gatehouse_up_on_a_fresh_home(tmp_path: Path) -> None:
    node = Node(tmp_path)
    try:
        node.wait_for("Gatehouse is up")
        assert_private(node.home)
        assert "tightened" not in node.output()
    finally:
        node.close()


def test_gatehouse_up_tightens_an_existing_home(tmp_path: Path) -> None:
    home = tmp_path / "var"
    home.mkdir()
    home.chmod(0o755)
    (home / "gatehouse.db").write_bytes(b"")
    (home / "gatehouse.db").chmod(0o644)
    node = Node(tmp_path)
    try:
        node.wait_for("Gatehouse is up")
        assert_private(home)
        output = node.output()
        assert f"tightened the permissions of {home} from 0755 to 0700" in output
        assert f"tightened the permissions of {home / 'gatehouse.db'} from 0644 to 0600" in output
    finally:
        node.close()

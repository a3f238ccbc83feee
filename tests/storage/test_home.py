"""An installation's database URLs: the default SQLite file or HOME/databases.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatehouse.errors import ConfigError
from gatehouse.storage.home import DatabaseURLs, database_urls

PG = "postgresql+asyncpg://gatehouse@/gatehouse?host=db1:5432&host=db2:5432&target_session_attrs=read-write"


def write(home: Path, text: str) -> None:
    (home / "databases.yaml").write_text(text)


def test_default_is_one_sqlite_file_in_home(tmp_path: Path) -> None:
    urls = database_urls(tmp_path)
    expected = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    oath = f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}"
    outbox = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    oauth2 = f"sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}"
    assert urls == DatabaseURLs(expected, expected, oath, outbox, oauth2)
    assert urls.shared


def test_relative_home_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_urls(Path("var")).user_db == f"sqlite+aiosqlite:///{tmp_path}/var/gatehouse.db"


def test_session_db_defaults_to_user_db(tmp_path: Path) -> None:
    write(tmp_path, f"user_db: {PG}\n")
    oath = f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}"
    outbox = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    oauth2 = f"sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}"
    assert database_urls(tmp_path) == DatabaseURLs(PG, PG, oath, outbox, oauth2)


def test_multi_host_url_kept_as_given(tmp_path: Path) -> None:
    other = "postgresql+asyncpg://gh@sessions:5432/sessions"
    write(tmp_path, f"user_db: {PG}\nsession_db: {other}\n")
    urls = database_urls(tmp_path)
    oath = f"sqlite+aiosqlite:///{tmp_path / 'oath.db'}"
    outbox = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    oauth2 = f"sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}"
    assert urls == DatabaseURLs(PG, other, oath, outbox, oauth2)
    assert not urls.shared


def test_relative_sqlite_paths_are_relative_to_home(tmp_path: Path) -> None:
    write(
        tmp_path, "user_db: sqlite+aiosqlite:///users.db\nsession_db: sqlite+aiosqlite:///s/x.db\n"
    )
    urls = database_urls(tmp_path)
    assert urls.user_db == f"sqlite+aiosqlite:///{tmp_path / 'users.db'}"
    assert urls.session_db == f"sqlite+aiosqlite:///{tmp_path / 's' / 'x.db'}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user_db: mysql://x/y\n", "user_db: unsupported database URL scheme 'mysql'"),
        ("user_db: 'not a url'\n", "user_db: not a database URL"),
        ("session_db: sqlite+aiosqlite:///x.db\n", "user_db: required field missing"),
        (f"user_db: {PG}\nsesion_db: {PG}\n", "sesion_db: unknown field"),
        ("user_db: [\n", "line 2, column 1: invalid YAML"),
        ("- a\n", "expected a mapping with user_db"),
        ("user_db: sqlite+aiosqlite://\n", "user_db: a SQLite URL needs a file path"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        database_urls(tmp_path)
    rendered = str(info.value)
    assert rendered.startswith(f"{tmp_path / 'databases.yaml'}: ")
    assert message in rendered

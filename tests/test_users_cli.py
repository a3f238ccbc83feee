"""``gatehouse users ...`` and ``gatehouse groups ...``: every command and its errors.

Most cases call the CLI's ``main`` in-process (same parsing, same error rendering, much
faster); a few run the real command to check exit codes, stdin and the absence of tracebacks.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
from pathlib import Path

import pytest

from gatehouse.authentication.config import PasswordHash
from gatehouse.authentication.passwords import Passwords
from gatehouse.cli import main
from gatehouse.storage import directory
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.processes import GATEHOUSE

FIXTURES = (postgres_cluster, postgres_url)


class CLI:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch):
        self.home = home
        self.capsys = capsys
        self.mp = mp

    def __call__(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        self.mp.setattr("sys.stdin", io.StringIO(stdin or ""))
        code = main([*args, "--home", str(self.home)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str, stdin: str | None = None) -> str:
        code, out, err = self(*args, stdin=stdin)
        assert (code, err) == (0, ""), err
        return out

    def fails(self, *args: str, stdin: str | None = None) -> str:
        code, out, err = self(*args, stdin=stdin)
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1, err
        return err.strip()

    def stored_hash(self, name: str) -> str | None:
        async def go() -> str | None:
            db = Database(database_urls(self.home).user_db)
            try:
                async with db.session() as session:
                    return (await directory.get_user(session, name)).password_hash
            finally:
                await db.dispose()

        return asyncio.run(go())

    def password_works(self, name: str, password: str) -> bool:
        stored = self.stored_hash(name)
        return stored is not None and Passwords(PasswordHash()).verify_sync(stored, password)[0]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    return CLI(tmp_path / "home", capsys, monkeypatch)


def test_add_with_generated_password(cli: CLI) -> None:
    out = cli.ok("users", "add", "alice")
    first, second = out.splitlines()
    assert first == "user 'alice' added"
    assert second.startswith("password: ")
    password = second.removeprefix("password: ")
    assert len(password) == 24
    assert cli.password_works("alice", password)


def test_add_with_everything(cli: CLI) -> None:
    cli.ok("groups", "add", "ops")
    cli.ok("groups", "add", "admins")
    out = cli.ok(
        "users",
        "add",
        "bob.smith@corp",
        "--group",
        "ops",
        "--group",
        "admins",
        "--email",
        "bob@example.org",
        "--display-name",
        "Bob Smith",
        "--password-stdin",
        stdin="correct horse\n",
    )
    assert out == "user 'bob.smith@corp' added\n"  # no password shown
    assert cli.password_works("bob.smith@corp", "correct horse")
    assert cli.ok("users", "list") == (
        "USERNAME        DISPLAY NAME  EMAIL            GROUPS      ENABLED\n"
        "bob.smith@corp  Bob Smith     bob@example.org  admins,ops  yes\n"
    )


def test_list_users_and_groups(cli: CLI) -> None:
    assert cli.ok("users", "list") == "USERNAME  DISPLAY NAME  EMAIL  GROUPS  ENABLED\n"
    assert cli.ok("groups", "list") == "GROUP  MEMBERS\n"
    cli.ok("groups", "add", "staff")
    cli.ok("groups", "add", "empty")
    cli.ok("users", "add", "zed", "--group", "staff")
    cli.ok("users", "add", "amy", "--group", "staff", "--display-name", "Amy")
    cli.ok("users", "disable", "zed")
    assert cli.ok("users", "list") == (
        "USERNAME  DISPLAY NAME  EMAIL  GROUPS  ENABLED\n"
        "amy       Amy           -      staff   yes\n"
        "zed       zed           -      staff   no\n"
    )
    assert cli.ok("groups", "list") == ("GROUP  MEMBERS\nempty  -\nstaff  amy,zed\n")


@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        (("users", "add", "b b"), None, "invalid username 'b b': use 1-64 letters, digits"),
        (("users", "add", "x" * 65), None, "invalid username"),
        (("users", "add", "bob", "--group", "nope"), None, "group 'nope' does not exist"),
        (("users", "add", "bob", "--email", "bob"), None, "invalid e-mail address 'bob'"),
        (("users", "add", "bob", "--display-name", "a\tb"), None, "invalid display name"),
        (("users", "add", "bob", "--password-stdin"), "", "password from stdin is empty"),
        (("users", "add", "bob", "--password-stdin"), "\n", "password from stdin is empty"),
        (("users", "add", "bob", "--password-stdin"), "short\n", "password too short"),
        (("users", "add", "bob", "--password-stdin"), "x" * 129, "password too long"),
        (("users", "passwd", "nobody", "--password-stdin"), "long enough", "'nobody' does not"),
        (("users", "disable", "nobody"), None, "user 'nobody' does not exist"),
        (("users", "enable", "nobody"), None, "user 'nobody' does not exist"),
        (("users", "delete", "nobody"), None, "user 'nobody' does not exist"),
        (("users", "unlock", "nobody"), None, "user 'nobody' does not exist"),
        (("groups", "add", "a b"), None, "invalid group name 'a b'"),
        (("groups", "delete", "nope"), None, "group 'nope' does not exist"),
        (("groups", "add-member", "nope", "bob"), None, "group 'nope' does not exist"),
        (("groups", "remove-member", "nope", "bob"), None, "group 'nope' does not exist"),
    ],
)
def test_errors_are_one_line(
    cli: CLI, args: tuple[str, ...], stdin: str | None, error: str
) -> None:
    message = cli.fails(*args, stdin=stdin)
    assert message.startswith("gatehouse: ")
    assert error in message


def test_duplicates_and_memberships(cli: CLI) -> None:
    cli.ok("users", "add", "bob")
    assert cli.fails("users", "add", "bob") == "gatehouse: user 'bob' already exists"
    cli.ok("groups", "add", "ops")
    assert cli.fails("groups", "add", "ops") == "gatehouse: group 'ops' already exists"
    assert (
        cli.fails("groups", "add-member", "ops", "carl") == "gatehouse: user 'carl' does not exist"
    )
    ended = "ended 0 session(s) of 'bob' in the session database"
    added = cli.ok("groups", "add-member", "ops", "bob").splitlines()
    assert added[0] == "user 'bob' added to group 'ops'"
    assert added[1].startswith(ended)
    # Nothing changed: the sessions stay.
    assert cli.ok("groups", "add-member", "ops", "bob") == "user 'bob' already in group 'ops'\n"
    removed = cli.ok("groups", "remove-member", "ops", "bob").splitlines()
    assert removed[0] == "user 'bob' removed from group 'ops'"
    assert removed[1].startswith(ended)
    assert cli.fails("groups", "remove-member", "ops", "bob") == (
        "gatehouse: user 'bob' is not in group 'ops'"
    )
    cli.ok("groups", "add-member", "ops", "bob")
    deleted = cli.ok("groups", "delete", "ops").splitlines()
    assert deleted[0] == "group 'ops' deleted"
    assert len(deleted) == 2, "the member's sessions end"
    assert deleted[1].startswith(ended)
    cli.ok("groups", "add", "empty")
    assert cli.ok("groups", "delete", "empty") == "group 'empty' deleted\n"
    assert "ops" not in cli.ok("users", "list")


def test_passwd(cli: CLI) -> None:
    cli.ok("users", "add", "bob", "--password-stdin", stdin="first password")
    changed = cli.ok("users", "passwd", "bob", "--password-stdin", stdin="second password\r\n")
    assert changed.splitlines()[0] == "password of 'bob' changed"
    assert changed.splitlines()[1].startswith("ended 0 session(s) of 'bob' in the session database")
    assert cli.password_works("bob", "second password")
    assert not cli.password_works("bob", "first password")
    out = cli.ok("users", "passwd", "bob")
    generated = out.splitlines()[1].removeprefix("password: ")
    assert cli.password_works("bob", generated)
    # Surrounding spaces are part of the password; only the final newline is dropped.
    cli.ok("users", "passwd", "bob", "--password-stdin", stdin="  spaced out  \n")
    assert cli.password_works("bob", "  spaced out  ")


def test_disable_enable_delete(cli: CLI) -> None:
    cli.ok("users", "add", "bob")
    ended = "ended 0 session(s) of 'bob' in the session database"
    first, second = cli.ok("users", "disable", "bob").splitlines()
    assert first == "user 'bob' disabled"
    assert second.startswith(ended)
    again = cli.ok("users", "disable", "bob").splitlines()
    assert again[0] == "user 'bob' was already disabled"
    assert cli.ok("users", "enable", "bob") == "user 'bob' enabled\n"
    assert cli.ok("users", "unlock", "bob") == "user 'bob' unlocked\n"
    first, second = cli.ok("users", "delete", "bob").splitlines()
    assert first == "user 'bob' deleted"
    assert second.startswith(ended)
    assert cli.fails("users", "delete", "bob") == "gatehouse: user 'bob' does not exist"
    cli.ok("users", "add", "bob")  # the name is free again


def test_unlock_clears_the_lockout(cli: CLI) -> None:
    from gatehouse.authentication import lockout
    from gatehouse.storage.types import utcnow

    cli.ok("users", "add", "bob")
    url = database_urls(cli.home).user_db

    async def lock() -> None:
        db = Database(url)
        try:
            async with db.connect() as conn:
                rule = lockout.Rule.of(1, 900, 900)
                await lockout.record_failure(conn, "user:bob", utcnow(), rule)
        finally:
            await db.dispose()

    async def locked() -> bool:
        db = Database(url)
        try:
            async with db.connect() as conn:
                return (await lockout.check_keys(conn, ["user:bob"], utcnow())).locked
        finally:
            await db.dispose()

    asyncio.run(lock())
    assert asyncio.run(locked())
    cli.ok("users", "unlock", "bob")
    assert not asyncio.run(locked())


# -- the real command ----------------------------------------------------------------------


def gatehouse(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEHOUSE, *args, "--home", str(home)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_real_command_pipes_a_password_and_reports_errors(tmp_path: Path) -> None:
    done = gatehouse(tmp_path, "users", "add", "alice", "--password-stdin", stdin="s3cret-pass\n")
    assert (done.returncode, done.stdout, done.stderr) == (0, "user 'alice' added\n", "")
    done = gatehouse(tmp_path, "users", "passwd", "bob", "--password-stdin", stdin="long enough")
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "gatehouse: user 'bob' does not exist\n",
    )
    done = gatehouse(tmp_path, "users", "add", "bob", "--password-stdin")
    assert (done.returncode, done.stderr) == (2, "gatehouse: password from stdin is empty\n")


def test_real_command_with_a_bad_databases_file(tmp_path: Path) -> None:
    (tmp_path / "databases.yaml").write_text("user_db: ftp://x\n")
    done = gatehouse(tmp_path, "users", "list")
    assert done.returncode == 2
    assert done.stderr.startswith(f"gatehouse: {tmp_path / 'databases.yaml'}: user_db: ")
    assert "Traceback" not in done.stderr


def test_users_in_postgresql(tmp_path: Path, postgres_url: str) -> None:
    (tmp_path / "databases.yaml").write_text(f"user_db: {postgres_url}\n")
    assert gatehouse(tmp_path, "groups", "add", "ops").returncode == 0
    done = gatehouse(tmp_path, "users", "add", "alice", "--group", "ops")
    assert done.returncode == 0, done.stderr
    assert gatehouse(tmp_path, "users", "list").stdout.splitlines()[1].split() == [
        "alice",
        "alice",
        "-",
        "ops",
        "yes",
    ]


def _sessions_of(home: Path, username: str, create: int = 0) -> int:
    """Create ``create`` sessions for ``username`` in the session DB; return how many exist."""
    from datetime import UTC, datetime

    from gatehouse.policy.sessions import Identity, SessionStore, Timeouts
    from gatehouse.storage.migrate import upgrade

    async def go() -> int:
        url = database_urls(home).session_db
        await upgrade(url, "session")
        db = Database(url)
        try:
            store = SessionStore(db, Timeouts(idle=600, absolute=3600))
            now = datetime.now(UTC)
            identity = Identity(username, username, None, ())
            for _ in range(create):
                await store.create(identity, ["password"], now)
            return len(await store.live(now, username))
        finally:
            await db.dispose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "action",
    [
        ("users", "disable", "alice"),
        ("users", "delete", "alice"),
        ("users", "passwd", "alice"),
        ("groups", "add-member", "ops", "alice"),
        ("groups", "remove-member", "staff", "alice"),
        ("groups", "delete", "staff"),
    ],
)
def test_account_changes_end_sessions_without_a_policy_service(
    cli: CLI, action: tuple[str, ...]
) -> None:
    cli.ok("groups", "add", "staff")
    cli.ok("groups", "add", "ops")
    cli.ok("users", "add", "alice", "--group", "staff", "--password-stdin", stdin="a good pass\n")
    cli.ok("users", "add", "bob", "--password-stdin", stdin="a good password\n")
    assert _sessions_of(cli.home, "alice", create=2) == 2
    assert _sessions_of(cli.home, "bob", create=1) == 1
    out = cli.ok(*action)
    assert "ended 2 session(s) of 'alice' in the session database" in out
    assert _sessions_of(cli.home, "alice") == 0
    assert _sessions_of(cli.home, "bob") == 1, "other users keep their sessions"


def test_end_sessions_command(cli: CLI) -> None:
    cli.ok("users", "add", "alice", "--password-stdin", stdin="a good password\n")
    assert _sessions_of(cli.home, "alice", create=2) == 2
    out = cli.ok("users", "end-sessions", "alice")
    assert out.startswith("ended 2 session(s) of 'alice' in the session database")
    assert _sessions_of(cli.home, "alice") == 0


def test_a_change_whose_sessions_cannot_be_ended_says_so(cli: CLI) -> None:
    from tests.support.processes import free_port

    cli.home.mkdir(parents=True)
    dead = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    (cli.home / "databases.yaml").write_text(
        f"user_db: sqlite+aiosqlite:///gatehouse.db\nsession_db: {dead}\n"
    )
    cli.ok("users", "add", "alice", "--password-stdin", stdin="a good password\n")
    code, out, err = cli("users", "passwd", "alice", "--password-stdin", stdin="another one\n")
    assert (code, out) == (2, "password of 'alice' changed\n")
    assert err.startswith("gatehouse: the sessions of 'alice' were NOT ended (database ")
    assert err.endswith("run: gatehouse users end-sessions alice\n")
    assert cli.password_works("alice", "another one"), "the change itself is kept"

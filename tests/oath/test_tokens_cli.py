"""``gatehouse tokens ...``: every command, its output (never a seed), its audit events and its
errors (one line, exit 2). Most cases call ``main`` in-process; one runs the real command."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from gatehouse.cli import main
from gatehouse.oath import otp
from gatehouse.oath.keyuri import parse_uri
from gatehouse.oath.seeds import KEYRING_FILE, Keyring
from gatehouse.oath.store import IMPORT_BATCH, TokenRow, TokenStore
from gatehouse.storage.engine import Database, create_engine
from gatehouse.storage.home import database_urls
from gatehouse.storage.models import AuditEvent
from tests.oath.test_pskc import FIGURE_6, PSK, SECRET
from tests.support.postgres import PostgresCluster, postgres_cluster, postgres_url
from tests.support.processes import GATEHOUSE

__all__ = ["postgres_cluster", "postgres_url"]

T = TypeVar("T")
SEED = bytes(range(1, 21))
SEED_B32 = base64.b32encode(SEED).decode().rstrip("=")


class CLI:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str], mp: pytest.MonkeyPatch):
        self.home = home
        self.capsys = capsys
        self.mp = mp

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.mp.setattr("sys.stdin", io.StringIO(""))
        code = main([*args, "--home", str(self.home)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert (code, err) == (0, ""), err
        return out

    def fails(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 2
        assert out == ""
        assert err.count("\n") == 1, err
        assert "Traceback" not in err
        return err.strip()

    def store(self, work: Callable[[TokenStore], Awaitable[T]]) -> T:
        async def go() -> T:
            engine = create_engine(database_urls(self.home).oath_db)
            try:
                return await work(TokenStore(engine))
            finally:
                await engine.dispose()

        return asyncio.run(go())

    def token(self, serial: str) -> TokenRow:
        return self.store(lambda store: store.get(serial))

    def tokens(self) -> list[TokenRow]:
        return self.store(lambda store: store.list_tokens())

    def seed(self, serial: str) -> bytes:
        token = self.token(serial)
        keyring = Keyring.load(self.home / KEYRING_FILE)
        return keyring.decrypt(token.seed_key_id, token.seed_ciphertext, serial.encode())

    def audit(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        async def go() -> list[tuple[str, str | None, dict[str, Any]]]:
            db = Database(database_urls(self.home).user_db)
            try:
                async with db.connect() as conn:
                    query = select(AuditEvent.event, AuditEvent.username, AuditEvent.detail)
                    rows = (await conn.execute(query.order_by(AuditEvent.id))).all()
            finally:
                await db.dispose()
            return [(row.event, row.username, dict(row.detail)) for row in rows]

        return asyncio.run(go())


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CLI:
    c = CLI(tmp_path / "home", capsys, monkeypatch)
    c.ok("users", "add", "alice")
    c.ok("users", "add", "bob")
    return c


def added_serial(out: str) -> str:
    match = re.search(r"^serial: (\S+)$", out, re.MULTILINE)
    assert match, out
    return match.group(1)


def assert_no_seed(text: str, seed: bytes) -> None:
    assert seed.hex() not in text.lower()
    assert base64.b32encode(seed).decode().rstrip("=") not in text.upper()


# -- add and list --------------------------------------------------------------------------


def test_add_generates_a_seed_prints_serial_and_uri_and_list_shows_no_seed(cli: CLI) -> None:
    out = cli.ok("tokens", "add", "alice")
    serial = added_serial(out)
    assert re.fullmatch(r"TOTP[0-9A-F]{8}", serial)
    uri = re.search(r"^uri: (otpauth://\S+)$", out, re.MULTILINE)
    assert uri, out
    parsed = parse_uri(uri.group(1))
    assert parsed.issuer == "Gatehouse"
    assert parsed.account == "alice"
    seed = cli.seed(serial)
    assert parsed.secret == seed
    assert len(seed) == 20
    # The code an app computes from the URI is the one the stored seed gives.
    now = time.time()
    assert otp.totp(parsed.secret, now, 30, 6, "sha1") == otp.totp(seed, now, 30, 6, "sha1")

    listing = cli.ok("tokens", "list")
    header, row = listing.splitlines()
    assert header.split() == [
        "SERIAL",
        "OWNER",
        "TYPE",
        "ALGORITHM",
        "DIGITS",
        "PERIOD",
        "STATE",
        "FAILURES",
        "LAST",
        "USED",
    ]
    assert row.split() == [serial, "alice", "totp", "sha1", "6", "30s", "active", "0", "never"]
    assert_no_seed(listing, seed)
    token = cli.token(serial)
    assert (token.owner, token.state, token.type) == ("alice", "active", "totp")
    assert cli.audit()[-1] == (
        "token_added",
        "alice",
        {"serial": serial, "type": "totp", "generated": True, "by": "cli"},
    )


def test_add_with_a_secret_and_parameters_prints_no_uri(cli: CLI) -> None:
    out = cli.ok(
        "tokens",
        "add",
        "bob",
        "--type",
        "hotp",
        "--secret",
        SEED_B32.lower(),
        "--algorithm",
        "sha256",
        "--digits",
        "8",
        "--description",
        "key fob",
    )
    serial = added_serial(out)
    assert serial.startswith("HOTP")
    assert "uri:" not in out
    assert "otpauth" not in out
    assert cli.seed(serial) == SEED
    token = cli.token(serial)
    assert (token.type, token.algorithm, token.digits, token.description) == (
        "hotp",
        "sha256",
        8,
        "key fob",
    )
    assert cli.audit()[-1][2]["generated"] is False
    cli.ok("tokens", "add", "alice", "--period", "60")
    assert cli.ok("tokens", "list", "--user", "bob").count("\n") == 2  # header and bob's


def test_add_reads_the_seed_from_a_file_or_stdin(cli: CLI, tmp_path: Path) -> None:
    """--secret-file keeps the seed out of the process list and the shell history."""
    seed_file = tmp_path / "seed"
    seed_file.write_text(f"  {SEED_B32}\n")
    serial = added_serial(cli.ok("tokens", "add", "bob", "--secret-file", str(seed_file)))
    assert cli.seed(serial) == SEED
    cli.mp.setattr("sys.stdin", io.StringIO(SEED_B32 + "\n"))
    code = main(["tokens", "add", "alice", "--secret-file", "-", "--home", str(cli.home)])
    out, err = cli.capsys.readouterr()
    assert (code, err) == (0, "")
    assert cli.seed(added_serial(out)) == SEED
    short = tmp_path / "short"
    short.write_text("JBSWY3DPEHPK3PXP")
    assert cli.fails("tokens", "add", "alice", "--secret-file", str(short)) == (
        f"gatehouse: --secret-file {short}: seed is 80 bits; at least 128 bits are needed "
        "(160 recommended)"
    )
    missing = tmp_path / "missing"
    assert cli.fails("tokens", "add", "alice", "--secret-file", str(missing)) == (
        f"gatehouse: cannot read the seed file {missing}: No such file or directory"
    )
    assert len(cli.tokens()) == 2


def test_add_errors_are_one_line(cli: CLI) -> None:
    assert cli.fails("tokens", "add", "carol") == "gatehouse: user 'carol' does not exist"
    assert cli.fails("tokens", "add", "alice", "--secret", "JBSWY3DPEHPK3PXP") == (
        "gatehouse: --secret: seed is 80 bits; at least 128 bits are needed (160 recommended)"
    )
    assert "not a base32 character" in cli.fails("tokens", "add", "alice", "--secret", "01!")
    assert "TOTP tokens only" in cli.fails(
        "tokens", "add", "alice", "--type", "hotp", "--period", "60"
    )
    assert cli.tokens() == []


def test_the_oath_db_holds_no_seed_bytes(cli: CLI) -> None:
    seeds = []
    for _ in range(3):
        seeds.append(cli.seed(added_serial(cli.ok("tokens", "add", "alice"))))
    cli.ok("tokens", "add", "bob", "--secret", SEED_B32)
    seeds.append(SEED)
    stored = b"".join(p.read_bytes() for p in cli.home.iterdir() if p.name.startswith("oath.db"))
    assert len(stored) > 0
    for seed in seeds:
        assert seed not in stored
        assert seed.hex().encode() not in stored
        assert base64.b32encode(seed).rstrip(b"=") not in stored
    assert (cli.home / KEYRING_FILE).stat().st_mode & 0o777 == 0o600


# -- import --------------------------------------------------------------------------------


def test_import_the_rfc_6030_figure_6_protected_file(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "figure6.pskc"
    path.write_text(FIGURE_6)
    wrong = cli.fails("tokens", "import", str(path), "--psk", "00" * 16)
    assert wrong.startswith(f"gatehouse: {path}: ")
    assert "nothing was imported" in wrong
    out = cli.ok("tokens", "import", str(path), "--psk", PSK.hex(), "--assign", "alice")
    assert out.splitlines() == ["1 token imported for 'alice'", "987654321"]
    token = cli.token("987654321")
    assert (token.type, token.digits, token.owner, token.counter) == ("hotp", 8, "alice", 0)
    assert cli.seed("987654321") == SECRET
    assert cli.audit()[-1] == (
        "tokens_imported",
        "alice",
        {"serials": ["987654321"], "count": 1, "source": "figure6.pskc", "by": "cli"},
    )
    # The same file again: the serial is taken, nothing changes.
    assert "987654321" in cli.fails("tokens", "import", str(path), "--psk", PSK.hex())
    key_file = tmp_path / "psk.hex"
    key_file.write_text(PSK.hex() + "\n")
    cli.ok("tokens", "delete", "987654321")
    cli.ok("tokens", "import", str(path), "--psk-file", str(key_file), "--format", "pskc")
    assert cli.token("987654321").owner is None


def test_import_csv_and_a_bad_csv_imports_nothing(cli: CLI, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(
        "# serial, seed, type, digits, period, algorithm\n"
        f"fob-1, {SEED.hex()}, hotp, 8\n"
        f"app-1, {bytes(range(40, 60)).hex()}, totp, 6, 60, sha256\n"
    )
    out = cli.ok("tokens", "import", str(good))
    assert out.splitlines() == ["2 tokens imported", "app-1", "fob-1"] or out.splitlines() == [
        "2 tokens imported",
        "fob-1",
        "app-1",
    ]
    assert cli.seed("fob-1") == SEED
    app = cli.token("app-1")
    assert (app.type, app.period, app.algorithm, app.owner) == ("totp", 60, "sha256", None)

    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"fob-2, {bytes(range(60, 80)).hex()}, hotp\n"
        f"fob-3, {bytes(range(80, 100)).hex()}, hotp\n"
        "fob-4, not-hex-at-all, hotp\n"
    )
    error = cli.fails("tokens", "import", str(bad), "--assign", "bob")
    assert error.startswith(f"gatehouse: {bad}: line 3, column 2 (seed)")
    assert error.endswith("nothing was imported")
    assert sorted(t.serial for t in cli.tokens()) == ["app-1", "fob-1"]

    # A file whose serial clashes with a stored one is refused whole.
    clash = tmp_path / "clash.csv"
    clash.write_text(f"fob-5, {bytes(range(20)).hex()}, hotp\nfob-1, {SEED.hex()}, hotp\n")
    assert "'fob-1' exists already" in cli.fails("tokens", "import", str(clash))
    assert sorted(t.serial for t in cli.tokens()) == ["app-1", "fob-1"]
    assert "does not exist" in cli.fails("tokens", "import", str(good), "--assign", "carol")
    assert "cannot read import file" in cli.fails("tokens", "import", str(tmp_path / "none"))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_long_import_shows_progress_on_a_terminal_only(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = IMPORT_BATCH * 2 + 1  # three batches in the one transaction
    big = tmp_path / "big.csv"
    big.write_text("".join(f"fob-{i}, {SEED.hex()}, hotp\n" for i in range(count)))
    err = Terminal()
    monkeypatch.setattr("sys.stderr", err)
    out = cli.ok("tokens", "import", str(big))  # what scripts read: the same lines
    assert out.splitlines()[0] == f"{count} tokens imported"
    drawn = err.getvalue()
    assert "importing tokens" in drawn
    assert f"{count}/{count}" in drawn  # the bar reached the end
    assert len(cli.tokens()) == count

    monkeypatch.undo()  # a pipe: no bar, not a byte on standard error (cli.ok checks)
    small = tmp_path / "small.csv"
    small.write_text(f"app-1, {SEED.hex()}, totp\n")
    assert cli.ok("tokens", "import", str(small)).splitlines() == ["1 token imported", "app-1"]


def test_import_otpauth_uris_one_per_line(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "uris.txt"
    path.write_text(
        f"otpauth://totp/Corp:alice?secret={SEED_B32}&issuer=Corp\n"
        "\n"
        f"otpauth://hotp/bob?secret={SEED_B32}&counter=5&digits=8\n"
    )
    out = cli.ok("tokens", "import", str(path), "--assign", "bob")
    first, *serials = out.splitlines()
    assert first == "2 tokens imported for 'bob'"
    assert serials[0].startswith("TOTP")
    assert serials[1].startswith("HOTP")
    assert cli.token(serials[1]).counter == 5
    bad = tmp_path / "bad.txt"
    bad.write_text(f"otpauth://totp/a?secret={SEED_B32}\notpauth://totp/b?secret=ABC\n")
    error = cli.fails("tokens", "import", str(bad))
    assert error.startswith(f"gatehouse: {bad}: line 2, secret:")
    assert len(cli.tokens()) == 2


# -- the other commands --------------------------------------------------------------------


def test_assign_unassign_disable_enable_unlock_delete(cli: CLI) -> None:
    serial = added_serial(cli.ok("tokens", "add", "alice"))
    assert cli.fails("tokens", "assign", serial, "bob") == (
        f"gatehouse: token {serial!r} is assigned to 'alice'; unassign it first"
    )
    # The second line says what became of alice's sessions (none here: no Policy service).
    assert cli.ok("tokens", "unassign", serial).startswith(f"token {serial} unassigned\n")
    assert cli.token(serial).owner is None
    assert (
        cli.fails("tokens", "assign", serial, "carol") == "gatehouse: user 'carol' does not exist"
    )
    cli.ok("tokens", "assign", serial, "bob")
    assert cli.token(serial).owner == "bob"
    cli.ok("tokens", "disable", serial)
    assert cli.token(serial).state == "disabled"
    assert "disabled" in cli.ok("tokens", "list", "--user", "bob")
    cli.ok("tokens", "enable", serial)
    assert cli.token(serial).state == "active"

    async def lock(store: TokenStore) -> None:
        token = await store.get(serial)
        for _ in range(3):
            await store.record_failure(token.id, 3, None)

    cli.store(lock)
    assert (cli.token(serial).state, cli.token(serial).failures) == ("locked", 3)
    assert cli.ok("tokens", "unlock", serial) == f"token {serial} unlocked (state: active)\n"
    assert (cli.token(serial).state, cli.token(serial).failures) == ("active", 0)
    cli.ok("tokens", "delete", serial)
    assert cli.tokens() == []
    events = [(event, user) for event, user, _ in cli.audit() if event.startswith("token")]
    assert events == [
        ("token_added", "alice"),
        ("token_unassigned", "alice"),
        ("token_assigned", "bob"),
        ("token_disabled", "bob"),
        ("token_enabled", "bob"),
        ("token_unlocked", "bob"),
        ("token_deleted", "bob"),
    ]
    for _, _, detail in cli.audit():
        assert set(detail) <= {"serial", "type", "generated", "by"}


@pytest.mark.parametrize(
    "command",
    [
        ["assign", "NOPE", "alice"],
        ["unassign", "NOPE"],
        ["disable", "NOPE"],
        ["enable", "NOPE"],
        ["unlock", "NOPE"],
        ["delete", "NOPE"],
        ["resync", "NOPE", "123456", "654321"],
    ],
)
def test_an_unknown_serial_is_one_line(cli: CLI, command: list[str]) -> None:
    assert cli.fails("tokens", *command) == "gatehouse: no token has serial 'NOPE'"


def test_resync_hotp_beyond_the_window(cli: CLI) -> None:
    serial = added_serial(cli.ok("tokens", "add", "alice", "--type", "hotp", "--secret", SEED_B32))
    code1, code2 = otp.hotp(SEED, 500, 6, "sha1"), otp.hotp(SEED, 501, 6, "sha1")
    wrong = cli.fails("tokens", "resync", serial, code2, code1)
    assert "not two consecutive codes" in wrong
    out = cli.ok("tokens", "resync", serial, code1, code2)
    assert out == f"token {serial} resynchronised: next counter 502\n"
    assert cli.token(serial).counter == 502
    # The same codes again: behind the counter now.
    assert "not two consecutive codes" in cli.fails("tokens", "resync", serial, code1, code2)
    assert cli.audit()[-1] == (
        "token_resynced",
        "alice",
        {"serial": serial, "counter": 502, "by": "cli"},
    )


def test_resync_totp_records_the_drift(cli: CLI) -> None:
    serial = added_serial(cli.ok("tokens", "add", "alice", "--secret", SEED_B32))
    step = otp.time_step(time.time(), 30) + 100  # a clock 50 minutes fast
    code1, code2 = otp.hotp(SEED, step, 6, "sha1"), otp.hotp(SEED, step + 1, 6, "sha1")
    out = cli.ok("tokens", "resync", serial, code1, code2)
    token = cli.token(serial)
    assert token.last_step == step + 1
    assert token.drift in (100, 101)  # the step of now may have turned meanwhile
    assert out == f"token {serial} resynchronised: drift {token.drift} steps\n"
    assert "used already" in cli.fails("tokens", "resync", serial, code1, code2)


def test_rekey_reencrypts_every_seed_under_a_new_key(cli: CLI) -> None:
    serials = [added_serial(cli.ok("tokens", "add", "alice")) for _ in range(3)]
    serials.append(added_serial(cli.ok("tokens", "add", "bob", "--secret", SEED_B32)))
    seeds = {serial: cli.seed(serial) for serial in serials}
    old = Keyring.load(cli.home / KEYRING_FILE).current
    out = cli.ok("tokens", "rekey")
    ring = Keyring.load(cli.home / KEYRING_FILE)
    assert ring.current != old
    assert set(ring.keys) == {old, ring.current}
    assert out.splitlines() == [
        f"new seed key {ring.current} (the old keys are kept)",
        "4 re-encrypted, 0 already under it",
    ]
    for serial in serials:
        assert cli.token(serial).seed_key_id == ring.current
        assert cli.seed(serial) == seeds[serial]
    assert cli.audit()[-1][0] == "tokens_rekeyed"
    assert cli.audit()[-1][2]["rekeyed"] == 4
    # A running service that read a row before the rekey still decrypts it with the old key.
    assert old in ring.keys


def test_errors_of_the_real_command_exit_non_zero_without_a_traceback(tmp_path: Path) -> None:
    home = tmp_path / "home"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GATEHOUSE, "tokens", *args, "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    for args, message in (
        (("add", "nobody"), "gatehouse: user 'nobody' does not exist\n"),
        (("disable", "NOPE"), "gatehouse: no token has serial 'NOPE'\n"),
    ):
        result = run(*args)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", message)
    result = run("list")
    assert result.returncode == 0
    assert result.stdout.startswith("SERIAL")
    assert json.loads((home / KEYRING_FILE).read_text())["version"] == 1


def test_db_upgrade_migrates_the_oath_db(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["db", "upgrade", "--which", "oath", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert out == f"databases up to date (OATH DB: sqlite+aiosqlite:///{home / 'oath.db'})\n"
    assert not (home / "gatehouse.db").exists()

    async def tables() -> set[str]:
        db = Database(database_urls(home).oath_db)
        try:
            async with db.connect() as conn:
                rows = await conn.exec_driver_sql("SELECT name FROM sqlite_master")
                return {row[0] for row in rows}
        finally:
            await db.dispose()

    assert "oath_tokens" in asyncio.run(tables())
    (home / "oath.db").unlink()
    assert main(["db", "upgrade", "--home", str(home)]) == 0
    assert "OATH DB" in capsys.readouterr().out
    assert "oath_tokens" in asyncio.run(tables())
    assert (home / "gatehouse.db").exists()


def test_require_enrolment_sets_and_clears_the_flag(cli: CLI) -> None:
    assert cli.ok("tokens", "require-enrolment", "alice") == (
        "'alice' must enrol a token at their next login\n"
    )
    assert cli.store(lambda store: store.enrolment_required("alice")) is True
    assert cli.store(lambda store: store.enrolment_required("bob")) is False
    cli.ok("tokens", "require-enrolment", "alice", "--off")
    assert cli.store(lambda store: store.enrolment_required("alice")) is False
    assert cli.fails("tokens", "require-enrolment", "carol") == (
        "gatehouse: user 'carol' does not exist"
    )
    events = [(e, u) for e, u, _ in cli.audit()]
    assert events == [("enrolment_required", "alice"), ("enrolment_not_required", "alice")]


def test_on_postgresql_import_is_all_or_nothing_and_rekey_keeps_every_seed(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    postgres_cluster: PostgresCluster,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    user_db = postgres_cluster.url(postgres_cluster.create_database())
    oath_db = postgres_cluster.url(postgres_cluster.create_database())
    (home / "databases.yaml").write_text(f"user_db: {user_db}\noath_db: {oath_db}\n")
    cli = CLI(home, capsys, monkeypatch)
    cli.ok("users", "add", "alice")
    good = tmp_path / "good.csv"
    good.write_text(f"pg-1, {SEED.hex()}, hotp\npg-2, {bytes(range(50, 70)).hex()}, totp\n")
    assert cli.ok("tokens", "import", str(good), "--assign", "alice").startswith("2 tokens")
    clash = tmp_path / "clash.csv"
    clash.write_text(f"pg-3, {SEED.hex()}, hotp\npg-2, {SEED.hex()}, hotp\n")
    assert "'pg-2' exists already" in cli.fails("tokens", "import", str(clash))
    assert sorted(t.serial for t in cli.tokens()) == ["pg-1", "pg-2"]
    code1, code2 = otp.hotp(SEED, 30, 6, "sha1"), otp.hotp(SEED, 31, 6, "sha1")
    cli.ok("tokens", "resync", "pg-1", code1, code2)
    assert cli.token("pg-1").counter == 32
    cli.ok("tokens", "rekey")
    current = Keyring.load(home / KEYRING_FILE).current
    assert {t.seed_key_id for t in cli.tokens()} == {current}
    assert cli.seed("pg-1") == SEED
    assert cli.seed("pg-2") == bytes(range(50, 70))
    assert [e for e, _, _ in cli.audit()] == ["tokens_imported", "token_resynced", "tokens_rekeyed"]

"""``gatehouse tokens invite | invitations | revoke-invitation`` on a real installation home."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gatehouse.cli import main


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    home = tmp_path / "home"
    assert main(["users", "add", "alice", "--email", "alice@example.org", "--home", str(home)]) == 0
    assert main(["users", "add", "bob", "--home", str(home)]) == 0
    capsys.readouterr()
    return home


def tokens(home: Path, *args: str) -> int:
    return main(["tokens", *args, "--home", str(home)])


def test_invite_list_revoke(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tokens(home, "invite", "alice", "--lifetime", "2h") == 0
    out = capsys.readouterr().out
    match = re.match(r"invitation ([0-9a-f]{24}) for 'alice' \(a\*\*\*@example\.org\) until ", out)
    assert match, out
    invitation = match.group(1)
    assert "Distribution service" in out
    assert tokens(home, "invitations") == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split() == [
        "ID",
        "USER",
        "TO",
        "STATE",
        "EXPIRES",
        "SENT",
        "USED",
        "TOKEN",
    ]
    assert re.search(rf"{invitation}\s+alice\s+a\*\*\*@example\.org\s+unsent\s", listing)
    assert "alice@example.org" not in listing
    assert tokens(home, "invitations", "--user", "bob") == 0
    assert invitation not in capsys.readouterr().out
    assert tokens(home, "revoke-invitation", invitation) == 0
    assert capsys.readouterr().out == f"invitation {invitation} for 'alice' withdrawn\n"
    assert tokens(home, "invitations") == 0
    assert re.search(rf"{invitation}\s+alice\s+\S+\s+revoked\s", capsys.readouterr().out)
    assert tokens(home, "revoke-invitation", invitation) == 2
    assert f"invitation {invitation} is revoked" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("invite", "carol"), "user 'carol' does not exist"),
        (("invite", "bob"), "user 'bob' has no e-mail address"),
        (("invite", "alice", "--lifetime", "1m"), "lifetime: between 5 minutes and 30 days"),
        (("revoke-invitation", "0123abcd"), "no invitation has id '0123abcd'"),
    ],
)
def test_refusals_say_why(
    home: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert tokens(home, *args) == 2
    assert message in capsys.readouterr().err


def test_a_lifetime_that_is_no_duration(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        tokens(home, "invite", "alice", "--lifetime", "three days")
    assert exited.value.code == 2
    assert "--lifetime: not a duration" in capsys.readouterr().err

"""``gatehouse users add --email --phone`` and ``gatehouse users set NAME --email --phone``:
contact data checked as the Distribution service checks recipients, errors naming the option,
'' removing one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gatehouse.storage import directory
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls
from tests.support.gateway import gatehouse_cli


def contact(home: Path, name: str) -> tuple[str | None, str | None]:
    async def go() -> tuple[str | None, str | None]:
        db = Database(database_urls(home).user_db)
        try:
            async with db.session() as session:
                user = await directory.get_user(session, name)
                return user.email, user.phone
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_add_and_set_contact_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    added = gatehouse_cli(
        home, "users", "add", "alice", "--email", "alice@example.org", "--phone", "+4915112345678"
    )
    assert added.returncode == 0, added.stderr
    assert contact(home, "alice") == ("alice@example.org", "+4915112345678")

    changed = gatehouse_cli(home, "users", "set", "alice", "--phone", "+12025550123")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "user 'alice': e-mail alice@example.org, phone +12025550123"
    assert contact(home, "alice") == ("alice@example.org", "+12025550123")

    cleared = gatehouse_cli(home, "users", "set", "alice", "--email", "")
    assert cleared.returncode == 0, cleared.stderr
    assert contact(home, "alice") == (None, "+12025550123")


def test_bad_contact_data_is_refused_naming_the_option(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert gatehouse_cli(home, "users", "add", "bob").returncode == 0
    cases = [
        (["--phone", "0151 1234567"], "--phone: invalid phone number", "E.164"),
        (["--phone", "+0123"], "--phone: invalid phone number", "E.164"),
        (["--email", "bob@localhost"], "--email: invalid e-mail address", "with a dot"),
        (["--email", "bob example.org"], "--email: invalid e-mail address", "spaces"),
    ]
    for args, option, why in cases:
        result = gatehouse_cli(home, "users", "set", "bob", *args)
        assert result.returncode == 2, (args, result.stdout)
        assert option in result.stderr
        assert why in result.stderr
    added = gatehouse_cli(home, "users", "add", "carol", "--phone", "12345")
    assert added.returncode == 2
    assert "--phone" in added.stderr
    nothing = gatehouse_cli(home, "users", "set", "bob")
    assert nothing.returncode == 2
    assert "--email ADDR and/or --phone E164" in nothing.stderr
    missing = gatehouse_cli(home, "users", "set", "nobody", "--phone", "+12025550123")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    assert contact(home, "bob") == (None, None)

"""The sign-in's user lookup (:func:`directory.find_credentials`, one Core statement) tells
the same as the ORM's :func:`directory.find_user`, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from gatehouse.storage import directory
from gatehouse.storage.engine import Database
from tests.authentication.conftest import add_user


def test_credentials_match_the_user_row(user_db: str) -> None:
    add_user(user_db, "carol", "pw-carol", groups=["ops", "admins"], email="c@example.org")
    add_user(user_db, "dave", "pw-dave", display_name="Dave D.")
    add_user(user_db, "erin", None, enabled=False)

    async def go() -> None:
        db = Database(user_db)
        try:
            for name in ("carol", "dave", "erin"):
                async with db.session() as session:
                    user = await directory.find_user(session, name)
                    assert user is not None
                    expected = (user.id, directory.UserInfo.of(user), user.password_hash)
                async with db.connect() as conn:
                    found = await directory.find_credentials(conn, name)
                assert found is not None
                assert (found.user_id, found.info, found.password_hash) == expected
            async with db.connect() as conn:
                carol = await directory.find_credentials(conn, "carol")
                assert carol is not None
                assert carol.info.groups == ("admins", "ops")
                assert (carol.password_hash or "").startswith("$argon2id$")
                assert await directory.find_credentials(conn, "nobody") is None
                assert await directory.find_credentials(conn, "Carol") is None  # exact name
                assert await directory.find_credentials(conn, "bad name!") is None
        finally:
            await db.dispose()

    asyncio.run(go())

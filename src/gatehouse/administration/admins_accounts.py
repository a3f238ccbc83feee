"""Making an administrator's sign-in credentials in the installation's user directory: a
user with a random password and an active TOTP token (its otpauth:// URI), shown once.

Used by the bootstrap and by ``gatehouse admins add`` for a user that does not exist yet.
An existing user keeps their password and tokens (they sign in with what they have).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from gatehouse.authentication import audit
from gatehouse.authentication.passwords import generate
from gatehouse.authentication.users_commands import hash_password
from gatehouse.oath.token_admin import TokenAdmin
from gatehouse.oath.token_spec import TokenParams
from gatehouse.storage import directory
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls


@dataclass(frozen=True, slots=True)
class Credentials:
    """A new administrator's first credentials (shown once, stored nowhere in clear)."""

    name: str
    password: str = field(repr=False)
    otpauth_uri: str = field(repr=False)
    otp_secret: str = field(repr=False)
    serial: str = ""


async def user_exists(home: Path, name: str) -> bool:
    db = Database(database_urls(home).user_db)
    try:
        async with db.session() as session:
            return await directory.find_user(session, name) is not None
    finally:
        await db.dispose()


async def provision(
    home: Path, tokens: TokenAdmin, name: str, who: str, email: str | None = None
) -> Credentials:
    """Create the user ``name`` with a random password and an active TOTP token.

    Raises:
        DirectoryError: the name is not a valid user name, or the user exists.
    """
    password = generate()
    db = Database(database_urls(home).user_db)
    try:
        async with db.session() as session:
            await directory.add_user(
                session,
                name,
                hash_password(password),
                display_name=f"{name} (administrator)",
                email=email,
            )
        await audit.record(db, "user_added", name, None, {"by": who, "administrator": True})
    finally:
        await db.dispose()
    added = await tokens.add(name, TokenParams("totp"), description="console sign-in")
    uri = added.uri or ""
    secret = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query).get("secret", [""])[0]
    return Credentials(name, password, uri, secret, added.token.serial)

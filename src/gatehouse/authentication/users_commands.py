"""The ``gatehouse users ...`` and ``gatehouse groups ...`` commands (parsed in ``users_cli``).

Every command acts on the installation in ``--home DIR`` (see ``gatehouse.storage.home``),
migrates the user DB if needed, and reports problems as a GatehouseError: one line, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.authentication import lockout, passwords
from gatehouse.authentication.config import PasswordHash
from gatehouse.distribution import calls as contact_checks
from gatehouse.errors import GatehouseError
from gatehouse.storage import directory
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls, prepare_home
from gatehouse.storage.migrate import upgrade

T = TypeVar("T")

MAX_DISPLAY_NAME = 256
MAX_EMAIL = 320


def in_user_db(home: Path, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction on the installation's (migrated) user DB."""

    async def go() -> T:
        url = database_urls(prepare_home(home)).user_db
        await upgrade(url, "user")
        db = Database(url)
        try:
            async with db.session() as session:
                return await work(session)
        finally:
            await db.dispose()

    return asyncio.run(go())


# -- input ---------------------------------------------------------------------------------


def read_password(from_stdin: bool) -> tuple[str, bool]:
    """The new password and whether it was generated (and so must be shown once)."""
    if not from_stdin:
        return passwords.generate(), True
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != first:
            raise GatehouseError("the passwords do not match")
        password = first
    else:
        password = sys.stdin.read()
        password = password.removesuffix("\n").removesuffix("\r")
    if not password:
        raise GatehouseError("password from stdin is empty")
    return passwords.check_policy(password), False


def check_email(email: str | None) -> str | None:
    """The ``--email`` given, checked as the Distribution service checks a recipient (so an
    address stored here is one a code can be sent to)."""
    if email is None:
        return None
    why = contact_checks.check_email(email)
    if why is not None:
        raise GatehouseError(f"--email: invalid e-mail address {email[:MAX_EMAIL]!r}: {why}")
    return email


def check_phone(phone: str | None) -> str | None:
    """The ``--phone`` given: an E.164 number (``+4915112345678``)."""
    if phone is None:
        return None
    why = contact_checks.check_phone(phone)
    if why is not None:
        raise GatehouseError(f"--phone: invalid phone number {phone[:32]!r}: {why}")
    return phone


def check_display_name(name: str) -> str:
    if len(name) > MAX_DISPLAY_NAME or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise GatehouseError(
            f"invalid display name: at most {MAX_DISPLAY_NAME} characters, no control characters"
        )
    return name


def hash_password(password: str) -> str:
    # The CLI hashes with the default (minimum) parameters; a service configured stronger
    # upgrades the hash at the user's next login.
    return passwords.Passwords(PasswordHash()).hash_sync(password)


# -- users ---------------------------------------------------------------------------------


def users_add(args: argparse.Namespace) -> int:
    name = directory.check_username(args.name)
    email = check_email(args.email)
    phone = check_phone(args.phone)
    display_name = check_display_name(args.display_name if args.display_name else name)
    for group in args.group:
        directory.check_group_name(group)
    password, generated = read_password(args.password_stdin)
    password_hash = hash_password(password)

    async def work(session: AsyncSession) -> None:
        await directory.add_user(
            session,
            name,
            password_hash,
            display_name=display_name,
            email=email,
            phone=phone,
            groups=args.group,
        )

    in_user_db(args.home, work)
    print(f"user {name!r} added")
    if generated:
        print(f"password: {password}")
    return 0


def users_passwd(args: argparse.Namespace) -> int:
    name = directory.check_username(args.name)
    password, generated = read_password(args.password_stdin)
    password_hash = hash_password(password)

    async def work(session: AsyncSession) -> None:
        await directory.set_password_hash(session, name, password_hash)

    in_user_db(args.home, work)
    print(f"password of {name!r} changed")
    if generated:
        print(f"password: {password}")
    # Whoever knew the old password must not stay signed in with it.
    _end_sessions(args.home, name, "password_changed")
    return 0


def users_set(args: argparse.Namespace) -> int:
    """``users set NAME --email ADDR --phone E164``: '' removes one; at least one is given."""
    name = directory.check_username(args.name)
    if args.email is None and args.phone is None:
        raise GatehouseError("give --email ADDR and/or --phone E164 ('' removes one)")
    changes: dict[str, str | None] = {}
    if args.email is not None:
        changes["email"] = check_email(args.email) if args.email else None
    if args.phone is not None:
        changes["phone"] = check_phone(args.phone) if args.phone else None

    async def work(session: AsyncSession) -> tuple[str | None, str | None]:
        return await directory.set_contact(session, name, changes)

    email, phone = in_user_db(args.home, work)
    print(f"user {name!r}: e-mail {email or '-'}, phone {phone or '-'}")
    return 0


def _set_enabled(args: argparse.Namespace, enabled: bool) -> int:
    async def work(session: AsyncSession) -> bool:
        return await directory.set_enabled(session, args.name, enabled)

    changed = in_user_db(args.home, work)
    state = "enabled" if enabled else "disabled"
    print(f"user {args.name!r} {state}" if changed else f"user {args.name!r} was already {state}")
    if not enabled:
        _end_sessions(args.home, args.name, "user_disabled")
    return 0


def _end_sessions(home: Path, username: str, reason: str) -> None:
    """End the user's sessions on every Access Point: a session must never outlive the
    password it was opened with, nor carry groups the user no longer has (sessions store
    the groups of their login). Run after the user DB change is committed, so every login
    checked from then on sees the change."""
    from gatehouse.administration.credentials import operator_tls
    from gatehouse.policy.end_sessions import end_user_sessions

    try:
        # On the Administration service's machine, the operator's certificate reaches
        # Policy services on mutual TLS.
        print(end_user_sessions(home, username, reason, tls=operator_tls(home)))
    except GatehouseError as exc:
        raise GatehouseError(
            f"the sessions of {username!r} were NOT ended ({exc}); once the session database "
            f"answers again, run: gatehouse users end-sessions {username}"
        ) from None


def users_end_sessions(args: argparse.Namespace) -> int:
    name = directory.check_username(args.name)
    _end_sessions(args.home, name, "revoked")
    return 0


def users_disable(args: argparse.Namespace) -> int:
    return _set_enabled(args, False)


def users_enable(args: argparse.Namespace) -> int:
    return _set_enabled(args, True)


def users_delete(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> None:
        await directory.delete_user(session, args.name)
        # A future user of the same name must not inherit this one's lockout.
        await lockout.reset(await session.connection(), lockout.account_key(args.name))

    in_user_db(args.home, work)
    print(f"user {args.name!r} deleted")
    _end_sessions(args.home, args.name, "user_deleted")
    return 0


def users_unlock(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> None:
        await directory.get_user(session, args.name)
        await lockout.reset(await session.connection(), lockout.account_key(args.name))

    in_user_db(args.home, work)
    print(f"user {args.name!r} unlocked")
    return 0


def users_list(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> list[directory.UserInfo]:
        return await directory.list_users(session)

    users = in_user_db(args.home, work)
    rows = [
        [
            u.username,
            u.display_name or "-",
            u.email or "-",
            ",".join(u.groups) or "-",
            "yes" if u.enabled else "no",
        ]
        for u in users
    ]
    print(table(["USERNAME", "DISPLAY NAME", "EMAIL", "GROUPS", "ENABLED"], rows), end="")
    return 0


# -- groups --------------------------------------------------------------------------------


def groups_add(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> None:
        await directory.add_group(session, args.name)

    in_user_db(args.home, work)
    print(f"group {args.name!r} added")
    return 0


def groups_delete(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> list[str]:
        return await directory.delete_group(session, args.name)

    members = in_user_db(args.home, work)
    print(f"group {args.name!r} deleted")
    for member in members:
        _end_sessions(args.home, member, "groups_changed")
    return 0


def groups_list(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> list[directory.GroupInfo]:
        return await directory.list_groups(session)

    groups = in_user_db(args.home, work)
    rows = [[g.name, ",".join(g.members) or "-"] for g in groups]
    print(table(["GROUP", "MEMBERS"], rows), end="")
    return 0


def groups_add_member(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> bool:
        return await directory.add_member(session, args.group, args.user)

    added = in_user_db(args.home, work)
    where = f"group {args.group!r}"
    print(
        f"user {args.user!r} added to {where}"
        if added
        else f"user {args.user!r} already in {where}"
    )
    if added:
        _end_sessions(args.home, args.user, "groups_changed")
    return 0


def groups_remove_member(args: argparse.Namespace) -> int:
    async def work(session: AsyncSession) -> None:
        await directory.remove_member(session, args.group, args.user)

    in_user_db(args.home, work)
    print(f"user {args.user!r} removed from group {args.group!r}")
    _end_sessions(args.home, args.user, "groups_changed")
    return 0


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table with columns padded to their widest cell; no rows, just the headers."""
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"

"""The ``gatehouse tokens ...`` commands (parsed in :mod:`.tokens_cli`).

Every command acts on the installation in ``--home DIR``: it migrates the OATH DB and the user
DB if needed, opens the seed keyring ``HOME/oath-seeds.key`` (made, 0600, the first time), and
reports problems as a GatehouseError: one line, exit 2. Changes are audit events in the user
DB's audit log (``by: cli``), written after the change is committed; seeds and codes never are.

``disable``, ``unassign`` and ``delete`` take a token from its owner and then end the owner's
sessions on every Access Point, as ``gatehouse users passwd|disable`` do; when the session DB
cannot be reached they say so (exit 2) and how to retry.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from gatehouse.authentication import audit
from gatehouse.authentication.users_commands import table
from gatehouse.cli_tables import progress
from gatehouse.distribution.calls import mask_email
from gatehouse.errors import GatehouseError
from gatehouse.oath.errors import OathImportError
from gatehouse.oath.invitation_admin import InvitationAdmin
from gatehouse.oath.invitations import InvitationRow, InvitationStore
from gatehouse.oath.seeds import KEYRING_FILE, Keyring
from gatehouse.oath.store import TokenRow, TokenStore
from gatehouse.oath.token_admin import (
    TokenAdmin,
    home_session_ender,
    parse_import,
    parse_psk,
    parse_secret,
)
from gatehouse.oath.token_spec import TokenParams
from gatehouse.storage import directory
from gatehouse.storage.engine import Database, create_engine
from gatehouse.storage.home import database_urls, prepare_home
from gatehouse.storage.migrate import upgrade

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Installation:
    """An installation's home with its OATH DB and user DB migrated and open."""

    home: Path
    keyring: Keyring
    user_db: Database
    engine: AsyncEngine

    async def record(self, event: str, username: str | None, detail: dict[str, object]) -> None:
        """An audit event in the user DB, made ``by`` the command line."""
        await audit.record(self.user_db, event, username, None, {**detail, "by": "cli"})


@asynccontextmanager
async def open_installation(home: Path) -> AsyncIterator[Installation]:
    """The installation in ``home`` (both databases migrated first, the seed keyring made
    the first time); the databases are closed on leaving."""
    home_dir = prepare_home(home)
    urls = database_urls(home_dir)
    await upgrade(urls.user_db, "user")
    await upgrade(urls.oath_db, "oath")
    keyring = Keyring.load_or_create(home_dir / KEYRING_FILE)
    user_db = Database(urls.user_db)
    engine = create_engine(urls.oath_db)
    try:
        yield Installation(home_dir, keyring, user_db, engine)
    finally:
        await engine.dispose()
        await user_db.dispose()


def with_tokens(home: Path, work: Callable[[TokenAdmin], Awaitable[T]]) -> T:
    """Run ``work`` with the installation's (migrated) OATH DB, keyring and user DB."""

    async def go() -> T:
        async with open_installation(home) as opened:

            async def user_exists(username: str) -> bool:
                async with opened.user_db.session() as session:
                    return await directory.find_user(session, username) is not None

            admin = TokenAdmin(
                TokenStore(opened.engine),
                opened.keyring,
                user_exists,
                opened.record,
                end_sessions=home_session_ender(opened.home),
            )
            return await work(admin)

    return asyncio.run(go())


def with_invitations(home: Path, work: Callable[[InvitationAdmin], Awaitable[T]]) -> T:
    """Run ``work`` with the installation's (migrated) OATH DB, keyring and user DB."""

    async def go() -> T:
        async with open_installation(home) as opened:

            async def contact(username: str) -> tuple[bool, str | None]:
                async with opened.user_db.session() as session:
                    user = await directory.find_user(session, username)
                return (False, None) if user is None else (True, user.email)

            store = InvitationStore(opened.engine)
            return await work(InvitationAdmin(store, opened.keyring, contact, opened.record))

    return asyncio.run(go())


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "never"


def token_table(tokens: list[TokenRow]) -> str:
    headers = [
        "SERIAL",
        "OWNER",
        "TYPE",
        "ALGORITHM",
        "DIGITS",
        "PERIOD",
        "STATE",
        "FAILURES",
        "LAST USED",
    ]
    rows = [
        [
            t.serial,
            t.owner or "-",
            t.type,
            t.algorithm,
            str(t.digits),
            f"{t.period}s" if t.type == "totp" else "-",
            t.state,
            str(t.failures),
            _when(t.last_used_at),
        ]
        for t in tokens
    ]
    return table(headers, rows)


def tokens_list(args: argparse.Namespace) -> int:
    user = directory.check_username(args.user) if args.user else None
    tokens = with_tokens(args.home, lambda admin: admin.list_tokens(user))
    print(token_table(tokens), end="")
    return 0


def tokens_add(args: argparse.Namespace) -> int:
    user = directory.check_username(args.user)
    if args.type == "hotp" and args.period is not None:
        raise GatehouseError("--period applies to TOTP tokens only")
    params = TokenParams(args.type, args.algorithm, args.digits, args.period or 30)
    secret: bytes | None = None
    if args.secret is not None:
        secret = parse_secret(args.secret)
    elif args.secret_file is not None:
        secret = parse_secret(_secret_text(args.secret_file), f"--secret-file {args.secret_file}")
    added = with_tokens(args.home, lambda admin: admin.add(user, params, secret, args.description))
    print(f"token {added.token.serial} added for {user!r}")
    print(f"serial: {added.token.serial}")
    if added.uri is not None:
        print(f"uri: {added.uri}")
    return 0


def _secret_text(path: str) -> str:
    """The seed in ``path`` ('-': standard input), surrounding blanks removed."""
    if path == "-":
        return sys.stdin.read().strip()
    try:
        return _read(path, "the seed file").decode("ascii").strip()
    except UnicodeDecodeError:
        raise GatehouseError(f"--secret-file {path}: not base32 text") from None


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise GatehouseError(f"cannot read {what} {path}: {exc.strerror}") from None


def tokens_import(args: argparse.Namespace) -> int:
    owner = directory.check_username(args.assign) if args.assign else None
    psk: bytes | None = None
    if args.psk is not None:
        psk = parse_psk(args.psk)
    elif args.psk_file is not None:
        psk = parse_psk(_read(args.psk_file, "pre-shared key file").decode("ascii", "replace"))
    data = _read(args.file, "import file")
    try:
        tokens = parse_import(data, args.format, psk)
    except OathImportError as exc:
        raise GatehouseError(f"{args.file}: {exc}; nothing was imported") from None
    # A progress bar on a terminal (standard error): a file of thousands of tokens takes a
    # while; nothing otherwise, so scripts read the same lines.
    with progress("importing tokens", len(tokens)) as bar:
        serials = with_tokens(
            args.home,
            lambda admin: admin.import_tokens(
                tokens, owner, Path(args.file).name, progress=bar.advance
            ),
        )
    whose = f" for {owner!r}" if owner else ""
    print(f"{len(serials)} token{'s' if len(serials) != 1 else ''} imported{whose}")
    for serial in serials:
        print(serial)
    return 0


def tokens_assign(args: argparse.Namespace) -> int:
    user = directory.check_username(args.user)
    with_tokens(args.home, lambda admin: admin.assign(args.serial, user))
    print(f"token {args.serial} assigned to {user!r}")
    return 0


def _taking_away(
    args: argparse.Namespace,
    change: Callable[[TokenAdmin, list[str]], Awaitable[object]],
    done: str,
) -> int:
    """A change that ends the token owner's sessions: made, said (``token SERIAL done``),
    then what ending the sessions did (as ``gatehouse users passwd`` prints it)."""
    ended: list[str] = []
    with_tokens(args.home, lambda admin: change(admin, ended))
    print(f"token {args.serial} {done}")
    for line in ended:
        print(line)
    return 0


def tokens_unassign(args: argparse.Namespace) -> int:
    return _taking_away(args, lambda admin, ended: admin.unassign(args.serial, ended), "unassigned")


def tokens_disable(args: argparse.Namespace) -> int:
    return _taking_away(args, lambda admin, ended: admin.disable(args.serial, ended), "disabled")


def tokens_enable(args: argparse.Namespace) -> int:
    with_tokens(args.home, lambda admin: admin.enable(args.serial))
    print(f"token {args.serial} enabled")
    return 0


def tokens_unlock(args: argparse.Namespace) -> int:
    token = with_tokens(args.home, lambda admin: admin.unlock(args.serial))
    print(f"token {args.serial} unlocked (state: {token.state})")
    return 0


def tokens_delete(args: argparse.Namespace) -> int:
    return _taking_away(args, lambda admin, ended: admin.delete(args.serial, ended), "deleted")


def tokens_resync(args: argparse.Namespace) -> int:
    token = with_tokens(args.home, lambda admin: admin.resync(args.serial, args.code1, args.code2))
    if token.type == "hotp":
        print(f"token {token.serial} resynchronised: next counter {token.counter}")
    else:
        print(f"token {token.serial} resynchronised: drift {token.drift} steps")
    return 0


def tokens_rekey(args: argparse.Namespace) -> int:
    result = with_tokens(args.home, lambda admin: admin.rekey())
    print(f"new seed key {result.key_id} (the old keys are kept)")
    print(f"{result.rekeyed} re-encrypted, {result.current} already under it")
    if result.changed:
        print(f"{result.changed} changed meanwhile: run 'gatehouse tokens rekey' again")
    if result.failed:
        raise GatehouseError(
            f"{len(result.failed)} seeds did not decrypt and keep their key: "
            + ", ".join(result.failed)
        )
    return 0


def tokens_invite(args: argparse.Namespace) -> int:
    user = directory.check_username(args.user)
    row = with_invitations(args.home, lambda admin: admin.invite(user, args.lifetime, by="cli"))
    to = mask_email(row.email)
    print(f"invitation {row.id} for {user!r} ({to}) until {_when(row.expires_at)}")
    print(
        "An Authentication service hands it to the Distribution service for e-mail within "
        "seconds; see 'gatehouse tokens invitations'."
    )
    return 0


def invitation_table(rows: list[InvitationRow], now: datetime) -> str:
    headers = ["ID", "USER", "TO", "STATE", "EXPIRES", "SENT", "USED", "TOKEN"]
    body = [
        [
            row.id,
            row.username,
            mask_email(row.email),
            row.state if row.link_state(now) != "expired" else "expired",
            _when(row.expires_at),
            _when(row.sent_at),
            _when(row.used_at),
            row.serial or "-",
        ]
        for row in rows
    ]
    return table(headers, body)


def tokens_invitations(args: argparse.Namespace) -> int:
    user = directory.check_username(args.user) if args.user else None
    rows = with_invitations(args.home, lambda admin: admin.list_invitations(user))
    print(invitation_table(rows, datetime.now(UTC)), end="")
    return 0


def tokens_revoke_invitation(args: argparse.Namespace) -> int:
    row = with_invitations(args.home, lambda admin: admin.revoke(args.id))
    print(f"invitation {row.id} for {row.username!r} withdrawn")
    return 0


def tokens_require_enrolment(args: argparse.Namespace) -> int:
    user = directory.check_username(args.user)
    required = not args.off
    with_tokens(args.home, lambda admin: admin.require_enrolment(user, required))
    if required:
        print(f"{user!r} must enrol a token at their next login")
    else:
        print(f"{user!r} no longer has to enrol a token")
    return 0

"""The administrator's token operations, shared by ``gatehouse tokens ...`` and the
Administration service's REST API: add, import, assign, state changes, resync and rekey.

Seeds are encrypted here with the installation's :class:`~gatehouse.oath.seeds.Keyring` (the
serial as associated data) before they reach :class:`~gatehouse.oath.store.TokenStore`; no
answer of this module carries a seed, except the otpauth:// URI of a token whose secret
:meth:`TokenAdmin.add` generated itself (it must be shown once to be enrolled). Every change is
handed to the caller's audit hook (never with a seed or a code).

A token taken from its owner (disabled, unassigned or deleted) ends the owner's sessions on
every Access Point, through the caller's :data:`SessionEnder` (:func:`home_session_ender`
for the CLI and the Administration service), as ``gatehouse users passwd|disable`` do: a
session must not outlive the second factor it was opened with.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gatehouse.errors import GatehouseError
from gatehouse.oath import otp
from gatehouse.oath.csv_import import parse_csv
from gatehouse.oath.errors import OathImportError, SeedError
from gatehouse.oath.keyuri import build_uri, decode_base32, parse_uri
from gatehouse.oath.pskc import parse_pskc
from gatehouse.oath.seeds import Keyring, check_seed_length, generate_seed
from gatehouse.oath.store import (
    NewToken,
    TokenExists,
    TokenNotFound,
    TokenRow,
    TokenStore,
)
from gatehouse.oath.token_spec import ImportedToken, TokenParams

ISSUER = "Gatehouse"
FORMATS = ("pskc", "csv", "uri")
#: How far from now a TOTP resync looks for the two codes (each way).
RESYNC_HOURS = 12
#: How far past the next counter an HOTP resync looks for the two codes.
RESYNC_COUNTERS = 10_000
_SERIAL_ATTEMPTS = 8

#: ``audit(event, username, detail)``: record one administrative event.
AuditHook = Callable[[str, str | None, dict[str, object]], Awaitable[None]]
#: ``user_exists(username)``: is there such a user in the user DB.
UserCheck = Callable[[str], Awaitable[bool]]
#: ``end_sessions(username, reason)``: end every session of the user on every Access Point;
#: a line saying what happened. Raises GatehouseError when it could not.
SessionEnder = Callable[[str, str], Awaitable[str]]
#: The reason the owner's sessions end with (one of the session DB's END_REASONS).
SESSIONS_REASON = "revoked"

TOKEN_ADDED = "token_added"
TOKENS_IMPORTED = "tokens_imported"
TOKEN_ASSIGNED = "token_assigned"
TOKEN_UNASSIGNED = "token_unassigned"
TOKEN_DISABLED = "token_disabled"
TOKEN_ENABLED = "token_enabled"
TOKEN_UNLOCKED = "token_unlocked"
TOKEN_RESYNCED = "token_resynced"
TOKEN_DELETED = "token_deleted"
TOKENS_REKEYED = "tokens_rekeyed"
ENROLMENT_REQUIRED = "enrolment_required"
ENROLMENT_NOT_REQUIRED = "enrolment_not_required"


class TokenAdminError(GatehouseError):
    """An administrative token operation refused (unknown user, bad input, failed resync)."""


class UnknownUser(TokenAdminError):
    """The user named does not exist in the user DB."""


class ResyncFailed(TokenAdminError):
    """The two codes were not found as consecutive codes of the token."""


class SessionsNotEnded(TokenAdminError):
    """The token was taken from its owner (committed and audited), but the owner's sessions
    could not be ended; the message says how to retry."""


def home_session_ender(home: Path) -> SessionEnder:
    """End a user's sessions the way ``gatehouse users passwd|disable`` do, for the
    installation in ``home``: through one of its Policy services (every Access Point is told
    at once), else in its session DB (:func:`gatehouse.policy.end_sessions.end_user_sessions`).
    On the Administration service's machine the operator's certificate reaches Policy
    services on mutual TLS."""

    async def end(username: str, reason: str) -> str:
        from gatehouse.administration.credentials import operator_tls
        from gatehouse.policy.end_sessions import end_user_sessions

        # end_user_sessions runs its own event loops: off this one.
        def run() -> str:
            return end_user_sessions(home, username, reason, tls=operator_tls(home))

        return await asyncio.to_thread(run)

    return end


@dataclass(frozen=True, slots=True)
class Added:
    """A new token; ``uri`` is set only when its secret was generated here."""

    token: TokenRow
    uri: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """What a rekey did: the new key id, rows re-encrypted, rows already under it, rows
    changed meanwhile (left for the next rekey), and rows that did not decrypt."""

    key_id: str
    rekeyed: int
    current: int
    changed: int
    failed: tuple[str, ...]


def new_serial(token_type: str) -> str:
    """``TOTP`` or ``HOTP`` and 8 random hex digits (32 bits: a clash is retried)."""
    return f"{token_type.upper()}{secrets.token_hex(4).upper()}"


def parse_secret(text: str, source: str = "--secret") -> bytes:
    """A seed typed by hand in base32; refused under 128 bits. ``source`` names where it
    came from in the error."""
    try:
        secret = decode_base32(text, "secret")
        check_seed_length(secret)
    except (OathImportError, SeedError) as exc:
        raise TokenAdminError(f"{source}: {exc}") from None
    return secret


def guess_format(data: bytes) -> str:
    """``pskc`` (XML), ``uri`` (otpauth:// lines) or ``csv``, from the content."""
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return "pskc"
    if head[:10].lower().startswith(b"otpauth://"):
        return "uri"
    return "csv"


def parse_import(data: bytes, fmt: str | None, psk: bytes | None) -> list[ImportedToken]:
    """Every token of an import file, or the parser's :class:`OathImportError` (naming the
    element or line) and none."""
    fmt = fmt or guess_format(data)
    if fmt == "pskc":
        return parse_pskc(data, psk)
    if psk is not None:
        raise TokenAdminError(f"a pre-shared key only applies to PSKC files, not {fmt}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OathImportError("", f"not UTF-8 text (byte {exc.start})") from None
    if fmt == "csv":
        return parse_csv(text)
    if fmt == "uri":
        return _parse_uri_lines(text)
    raise TokenAdminError(f"unknown import format {fmt!r}: one of {', '.join(FORMATS)}")


def _parse_uri_lines(text: str) -> list[ImportedToken]:
    tokens: list[ImportedToken] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            tokens.append(parse_uri(line))
        except OathImportError as exc:
            where = f"line {number}, {exc.location}" if exc.location else f"line {number}"
            raise OathImportError(where, exc.message) from None
    if not tokens:
        raise OathImportError("", "no otpauth:// URI in the file")
    return tokens


def parse_psk(text: str) -> bytes:
    """A pre-shared AES key in hex (16, 24 or 32 bytes)."""
    compact = "".join(text.split())
    try:
        key = bytes.fromhex(compact)
    except ValueError:
        raise TokenAdminError("pre-shared key: not hexadecimal") from None
    if len(key) not in (16, 24, 32):
        raise TokenAdminError(f"pre-shared key: {len(key)} bytes; AES needs 16, 24 or 32")
    return key


class TokenAdmin:
    """The operations, on one OATH DB with one keyring."""

    def __init__(
        self,
        store: TokenStore,
        keyring: Keyring,
        user_exists: UserCheck,
        audit: AuditHook,
        clock: Callable[[], float] = time.time,
        end_sessions: SessionEnder | None = None,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self._user_exists = user_exists
        self._audit = audit
        self._clock = clock
        self._end_sessions = end_sessions

    async def check_user(self, username: str) -> None:
        if not await self._user_exists(username):
            raise UnknownUser(f"user {username!r} does not exist")

    async def list_tokens(self, owner: str | None = None) -> list[TokenRow]:
        return await self.store.list_tokens(owner)

    async def add(
        self,
        owner: str,
        params: TokenParams,
        secret: bytes | None = None,
        description: str = "",
    ) -> Added:
        """A new active token for ``owner``; its secret generated (160 bits) unless given."""
        await self.check_user(owner)
        generated = secret is None
        seed = generate_seed() if secret is None else secret
        check_seed_length(seed)
        for _ in range(_SERIAL_ATTEMPTS):
            serial = new_serial(params.type)
            key_id, blob = self.keyring.encrypt(seed, serial.encode())
            try:
                token = await self.store.add(
                    serial,
                    type=params.type,
                    seed_key_id=key_id,
                    seed_ciphertext=blob,
                    algorithm=params.algorithm,
                    digits=params.digits,
                    period=params.period,
                    owner=owner,
                    description=description,
                )
                break
            except TokenExists:
                continue
        else:
            raise TokenAdminError("no free serial found; try again")
        await self._audit(
            TOKEN_ADDED,
            owner,
            {"serial": token.serial, "type": token.type, "generated": generated},
        )
        uri = build_uri(ISSUER, owner, seed, params) if generated else None
        return Added(token, uri)

    async def import_tokens(
        self,
        tokens: Sequence[ImportedToken],
        owner: str | None = None,
        source: str = "",
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Store every token (all or none), given to ``owner`` when named; the serials.

        A token without a serial (an otpauth:// URI) gets one like :meth:`add` makes.
        ``progress`` is called with how many are stored so far (see
        :meth:`~gatehouse.oath.store.TokenStore.add_many`).
        """
        if owner is not None:
            await self.check_user(owner)
        rows: list[NewToken] = []
        seen: set[str] = set()
        for token in tokens:
            serial = token.serial
            while serial is None or serial in seen:
                serial = new_serial(token.params.type)
            seen.add(serial)
            key_id, blob = self.keyring.encrypt(token.secret, serial.encode())
            rows.append(
                NewToken(
                    serial=serial,
                    type=token.params.type,
                    seed_key_id=key_id,
                    seed_ciphertext=blob,
                    algorithm=token.params.algorithm,
                    digits=token.params.digits,
                    period=token.params.period,
                    owner=owner,
                    counter=token.counter,
                    description=token.issuer or "",
                )
            )
        await self.store.add_many(rows, progress=progress)
        serials = [row.serial for row in rows]
        await self._audit(
            TOKENS_IMPORTED, owner, {"serials": serials, "count": len(rows), "source": source}
        )
        return serials

    async def assign(self, serial: str, owner: str) -> TokenRow:
        await self.check_user(owner)
        token = await self.store.assign(serial, owner)
        await self._audit(TOKEN_ASSIGNED, owner, {"serial": serial})
        return token

    async def unassign(self, serial: str, ended: list[str] | None = None) -> TokenRow:
        """Take the token from its owner, whose sessions end (see :meth:`take_away`)."""
        before = await self.store.get(serial)
        token = await self.store.unassign(serial)
        await self._audit(TOKEN_UNASSIGNED, before.owner, {"serial": serial})
        await self.take_away(before.owner, f"token {serial} unassigned", ended)
        return token

    async def disable(self, serial: str, ended: list[str] | None = None) -> TokenRow:
        """Make the token answer no code; its owner's sessions end (see :meth:`take_away`)
        unless it was disabled already."""
        before = await self.store.get(serial)
        token = await self.store.set_state(serial, "disabled")
        await self._audit(TOKEN_DISABLED, token.owner, {"serial": serial})
        if before.state != "disabled":
            await self.take_away(token.owner, f"token {serial} disabled", ended)
        return token

    async def enable(self, serial: str) -> TokenRow:
        token = await self.store.set_state(serial, "active")
        await self._audit(TOKEN_ENABLED, token.owner, {"serial": serial})
        return token

    async def unlock(self, serial: str) -> TokenRow:
        token = await self.store.unlock(serial)
        await self._audit(TOKEN_UNLOCKED, token.owner, {"serial": serial})
        return token

    async def delete(self, serial: str, ended: list[str] | None = None) -> None:
        """Delete the token; its owner's sessions end (see :meth:`take_away`)."""
        before = await self.store.get(serial)
        await self.store.delete(serial)
        await self._audit(TOKEN_DELETED, before.owner, {"serial": serial})
        await self.take_away(before.owner, f"token {serial} deleted", ended)

    async def take_away(self, owner: str | None, done: str, ended: list[str] | None) -> None:
        """After a token was taken from ``owner`` (committed, so every sign-in checked from
        now on sees it), end their sessions on every Access Point: a session must not outlive
        the second factor it was opened with. What the ender says is appended to ``ended``.

        Raises:
            SessionsNotEnded: they could not be ended; ``done`` (what was changed) and the
                retry command are in the message.
        """
        if owner is None or self._end_sessions is None:
            return
        try:
            line = await self._end_sessions(owner, SESSIONS_REASON)
        except GatehouseError as exc:
            raise SessionsNotEnded(
                f"{done}, but the sessions of {owner!r} were NOT ended ({exc}); once the "
                f"session database answers again, run: gatehouse users end-sessions {owner}"
            ) from None
        if ended is not None:
            ended.append(line)

    async def resync(self, serial: str, code1: str, code2: str) -> TokenRow:
        """Find two consecutive codes: HOTP past the look-ahead window (the next counter
        becomes the one after ``code2``'s), TOTP within ±:data:`RESYNC_HOURS` of now (the
        drift is recorded and both steps are used up).

        Raises:
            ResyncFailed: the codes are not two consecutive codes of the token.
        """
        token = await self.store.get(serial)
        seed = self.keyring.decrypt(token.seed_key_id, token.seed_ciphertext, serial.encode())
        if token.type == "hotp":
            found = otp.resync_hotp(
                seed,
                code1,
                code2,
                token.counter,
                RESYNC_COUNTERS,
                digits=token.digits,
                algorithm=token.algorithm,
            )
            if found is None:
                raise ResyncFailed(
                    f"token {serial!r}: the codes are not two consecutive codes within "
                    f"{RESYNC_COUNTERS} counters of the next one ({token.counter})"
                )
            moved = await self.store.resync_counter(serial, found + 1)
            detail: dict[str, object] = {"serial": serial, "counter": found + 1}
        else:
            now_step = otp.time_step(self._clock(), token.period)
            window = RESYNC_HOURS * 3600 // token.period
            step = _consecutive_steps(seed, code1, code2, now_step, window, token)
            if step is None:
                raise ResyncFailed(
                    f"token {serial!r}: the codes are not two consecutive codes within "
                    f"{RESYNC_HOURS} hours of now"
                )
            moved = await self.store.resync_step(serial, step, step - now_step)
            detail = {"serial": serial, "drift": step - now_step}
        if not moved:
            raise ResyncFailed(f"token {serial!r}: these codes were used already")
        await self._audit(TOKEN_RESYNCED, token.owner, detail)
        return await self.store.get(serial)

    async def require_enrolment(self, username: str, required: bool = True) -> None:
        """Make ``username`` enrol a token at their next login (or no longer)."""
        await self.check_user(username)
        await self.store.require_enrolment(username, required)
        event = ENROLMENT_REQUIRED if required else ENROLMENT_NOT_REQUIRED
        await self._audit(event, username, {})

    async def rekey(self) -> Rekeyed:
        """A new current key, then every seed re-encrypted under it (each row only if it is
        still the one read). Old keys stay in the keyring so running services still decrypt
        rows they read before."""
        key_id = self.keyring.rotate()
        rekeyed = current = changed = 0
        failed: list[str] = []
        for token in await self.store.list_tokens():
            if token.seed_key_id == key_id:
                current += 1
                continue
            aad = token.serial.encode()
            try:
                seed = self.keyring.decrypt(token.seed_key_id, token.seed_ciphertext, aad)
            except GatehouseError:
                failed.append(token.serial)
                continue
            new_id, blob = self.keyring.encrypt(seed, aad)
            if await self.store.replace_seed(
                token.serial,
                new_id,
                blob,
                old_key_id=token.seed_key_id,
                old_ciphertext=token.seed_ciphertext,
            ):
                rekeyed += 1
            else:
                changed += 1
        result = Rekeyed(key_id, rekeyed, current, changed, tuple(failed))
        await self._audit(
            TOKENS_REKEYED,
            None,
            {"key_id": key_id, "rekeyed": rekeyed, "changed": changed, "failed": list(failed)},
        )
        return result


def _consecutive_steps(
    seed: bytes, code1: str, code2: str, now_step: int, window: int, token: TokenRow
) -> int | None:
    """The step of ``code2`` when ``code1``, ``code2`` are the codes of two consecutive steps
    within ``now_step ± window`` (the nearest to now), else None."""
    start = max(now_step - window, 0)
    found = otp.resync_hotp(
        seed, code1, code2, start, 2 * window, digits=token.digits, algorithm=token.algorithm
    )
    return found


__all__ = [
    "FORMATS",
    "ISSUER",
    "Added",
    "AuditHook",
    "Rekeyed",
    "ResyncFailed",
    "SessionEnder",
    "SessionsNotEnded",
    "TokenAdmin",
    "TokenAdminError",
    "TokenNotFound",
    "UnknownUser",
    "guess_format",
    "home_session_ender",
    "new_serial",
    "parse_import",
    "parse_psk",
    "parse_secret",
]

"""One-time password checks (issue 15): a user's tokens, matching, single use, failures and
locks, self-enrolment, and the audit events of each.

The matching is pure (:func:`examine`, :func:`retry_after`); :class:`OtpChecker` does the I/O:
it reads the user's tokens from the OATH DB, decrypts each seed (the serial is the associated
data), and consumes the step or counter found in one conditional ``UPDATE``
(:class:`gatehouse.oath.store.TokenStore`), committed before it answers. So of any number of
Authentication services given one code at once exactly one accepts it; the submission's id
(``attempt``) is stored with the consumption, so the same submission retried on another
service after the first died between its commit and its answer is answered ok again, and any
other submission of that code is a replay.

A wrong code counts one failure on every token of the user that answers (as privacyIDEA does:
a guess is a guess against all of them), locking each at ``otp.max_failures``. A replay is not
counted (the code was right once) but audited. Malformed codes are wrong codes: same answer,
the same HMACs computed. A user without a token that answers gets ``no_token`` after the same
work (a seed decrypted, the candidates computed) and nothing is counted for them.

Audit events (in the user DB's ``audit_events``, never a code or a seed): ``otp_ok``,
``otp_failed``, ``otp_replay``, ``otp_locked``, ``otp_enrolled``, ``otp_confirmed``.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gatehouse.authentication import audit
from gatehouse.authentication.calls import EnrolAnswer, OtpAnswer, StatusAnswer
from gatehouse.authentication.config import OtpSettings
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.oath.errors import KeyringError
from gatehouse.oath.keyuri import build_uri, encode_base32
from gatehouse.oath.otp import match_hotp, match_totp, time_step
from gatehouse.oath.seeds import Keyring, generate_seed
from gatehouse.oath.store import MAX_COUNTER, TokenExists, TokenRow, TokenStore, usable
from gatehouse.oath.token_spec import TokenParams
from gatehouse.storage.directory import valid_username
from gatehouse.storage.engine import Database

log = logging.getLogger("gatehouse.authentication")

OTP_OK = "otp_ok"
OTP_FAILED = "otp_failed"
OTP_REPLAY = "otp_replay"
OTP_LOCKED = "otp_locked"
OTP_ENROLLED = "otp_enrolled"
OTP_CONFIRMED = "otp_confirmed"

#: The parameters of a self-enrolled token: what every authenticator app supports.
ENROL_PARAMS = TokenParams("totp", "sha1", 6, 30)
#: What a user without a token costs: a seed of the usual size, never stored.
_DUMMY_SERIAL = "no-token"


# -- pure -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rules:
    """The ``otp`` settings as the checks use them."""

    window: int = 1
    look_ahead: int = 10
    max_failures: int = 10
    #: None: a lock lasts until an administrator unlocks the token.
    lock_seconds: float | None = 300.0
    self_enrolment: bool = True

    @classmethod
    def of(cls, settings: OtpSettings) -> Rules:
        return cls(
            window=settings.totp_window,
            look_ahead=settings.hotp_look_ahead,
            max_failures=settings.max_failures,
            lock_seconds=settings.lock_seconds or None,
            self_enrolment=settings.self_enrolment,
        )


@dataclass(frozen=True, slots=True)
class Fresh:
    """The code is the token's for ``value`` (a TOTP step or HOTP counter) not used yet, or
    used by this same attempt (``retry``)."""

    token: TokenRow
    value: int
    drift: int = 0
    retry: bool = False


@dataclass(frozen=True, slots=True)
class Replay:
    """The code is the token's for a step or counter accepted already, by another attempt."""

    token: TokenRow


Finding = Fresh | Replay | None


def examine(
    token: TokenRow, secret: bytes, code: str, attempt: str, now: float, rules: Rules
) -> Finding:
    """What ``code`` is for ``token`` at Unix time ``now``."""
    if token.type == "totp":
        step_now = time_step(now, token.period)
        last = token.last_step if token.last_step >= 0 else None
        args = (token.digits, token.algorithm)
        step = match_totp(secret, code, step_now, rules.window, last, *args)
        if step is not None:
            return Fresh(token, step, step - step_now)
        used = match_totp(secret, code, step_now, rules.window, None, *args)
        if used is None:
            return None
        if used == token.last_step and token.last_attempt == attempt:
            return Fresh(token, used, used - step_now, retry=True)
        return Replay(token)
    counter = match_hotp(secret, code, token.counter, rules.look_ahead, *_hotp_args(token))
    if counter is not None:
        return Fresh(token, counter) if counter <= MAX_COUNTER else None
    if token.counter == 0:
        return None
    previous = token.counter - 1
    if match_hotp(secret, code, previous, 0, *_hotp_args(token)) != previous:
        return None
    if token.last_attempt == attempt:
        return Fresh(token, previous, retry=True)
    return Replay(token)


def _hotp_args(token: TokenRow) -> tuple[int, str]:
    return token.digits, token.algorithm


def choose(findings: Iterable[Finding]) -> Finding:
    """The first fresh match, else the first replay, else None."""
    found = [f for f in findings if f is not None]
    fresh = [f for f in found if isinstance(f, Fresh)]
    return fresh[0] if fresh else (found[0] if found else None)


def retry_after(tokens: Sequence[TokenRow], now: datetime) -> float | None:
    """Seconds until the first running lock of ``tokens`` runs out; None when one of them is
    locked until an administrator unlocks it, or none is locked."""
    remaining: list[float] = []
    for token in tokens:
        if token.state != "locked":
            continue
        if token.locked_until is None:
            return None
        if token.locked_until > now:
            remaining.append((token.locked_until - now).total_seconds())
    return float(max(1, math.ceil(min(remaining)))) if remaining else None


def well_formed(code: str, tokens: Sequence[TokenRow]) -> bool:
    """Could ``code`` be a code of one of ``tokens`` (for the audit event only)?"""
    digits = {t.digits for t in tokens} or {6, 8}
    return code.isascii() and code.isdigit() and len(code) in digits


def dummy_token(key_id: str, blob: bytes) -> TokenRow:
    """A TOTP token that used a step once, as most do: what a user without one is checked
    against (never stored)."""
    epoch = datetime.fromtimestamp(0, UTC)
    return TokenRow(
        id=0,
        serial=_DUMMY_SERIAL,
        owner=None,
        type="totp",
        algorithm="sha1",
        digits=6,
        period=30,
        seed_key_id=key_id,
        seed_ciphertext=blob,
        counter=0,
        last_step=0,
        drift=0,
        failures=0,
        state="active",
        locked_until=None,
        description="",
        created_at=epoch,
        last_used_at=None,
    )


def new_serial() -> str:
    """A self-enrolled token's serial: ``TOTP`` and 48 random bits in hex."""
    return f"TOTP{secrets.token_hex(6).upper()}"


# -- the seed keyring -----------------------------------------------------------------------


class SeedKeys:
    """The seed key file, loaded (created 0600 if missing) at start and again at the next OTP
    call while it cannot be: OTP calls answer 503 meanwhile, password checks are unaffected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ring: Keyring | None = None
        self.error: str | None = None

    def load(self) -> Keyring | None:
        try:
            self._ring = Keyring.load_or_create(self.path)
        except (KeyringError, OSError) as exc:
            message = str(exc) if isinstance(exc, KeyringError) else f"{self.path}: {exc.strerror}"
            if message != self.error:
                log.error("OTP unavailable: the seed key file cannot be used: %s", message)
            self.error = message
            return None
        self.error = None
        return self._ring

    def get(self) -> Keyring:
        """The keyring; raises 503 ``unavailable`` saying why it cannot be used."""
        ring = self._ring or self.load()
        if ring is None:
            raise ServiceError(
                Code.UNAVAILABLE, f"one-time passwords unavailable: {self.error}", 503
            )
        return ring


# -- the checks -----------------------------------------------------------------------------


class OtpChecker:
    """The OTP calls of one Authentication service.

    Args:
        store: the OATH DB's tokens.
        keys: the seed keyring.
        audit_db: where audit events go (the user DB).
        rules: the ``otp`` settings (replaced live with :meth:`use`).
        clock: Unix time (tests move it).
    """

    def __init__(
        self,
        store: TokenStore,
        keys: SeedKeys,
        audit_db: Database,
        rules: Rules,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys
        self.audit_db = audit_db
        self.rules = rules
        self.clock = clock
        self._dummy: TokenRow | None = None

    def use(self, rules: Rules) -> None:
        self.rules = rules

    def _now(self) -> tuple[float, datetime]:
        unix = self.clock()
        return unix, datetime.fromtimestamp(unix, UTC)

    def _secret(self, ring: Keyring, token: TokenRow) -> bytes | None:
        try:
            return ring.decrypt(token.seed_key_id, token.seed_ciphertext, token.serial.encode())
        except KeyringError as exc:
            log.error("OTP token %s cannot be used: %s", token.serial, exc)
            return None

    def _dummy_work(self, ring: Keyring, code: str, attempt: str, now: float) -> None:
        """What checking one token costs (a seed decrypted, :func:`examine`), for a user who
        has none."""
        if self._dummy is None or self._dummy.seed_key_id not in ring.keys:
            key_id, blob = ring.encrypt(generate_seed(), _DUMMY_SERIAL.encode())
            self._dummy = dummy_token(key_id, blob)
        secret = self._secret(ring, self._dummy)
        if secret is not None:
            examine(self._dummy, secret, code, attempt, now, self.rules)

    async def _audit(
        self, event: str, username: str, client_ip: str | None, detail: dict[str, object]
    ) -> None:
        await audit.record(self.audit_db, event, username, client_ip, detail)

    # -- OTP_VERIFY --------------------------------------------------------------------------

    async def verify(self, username: str, code: str, client_ip: str, attempt: str) -> OtpAnswer:
        ring = self.keys.get()
        rules = self.rules
        unix, now = self._now()
        tokens = await self.store.list_tokens(username) if valid_username(username) else []
        answering = [t for t in tokens if usable(t, now)]
        if not answering:
            self._dummy_work(ring, code, attempt, unix)
            if any(t.state == "locked" for t in tokens):
                await self._audit(OTP_FAILED, username, client_ip, {"reason": "locked"})
                return OtpAnswer("locked", retry_after=retry_after(tokens, now))
            await self._audit(OTP_FAILED, username, client_ip, {"reason": "no_token"})
            return OtpAnswer("no_token")
        findings: list[Finding] = []
        for token in answering:
            secret = self._secret(ring, token)
            findings.append(
                None if secret is None else examine(token, secret, code, attempt, unix, rules)
            )
        found = choose(findings)
        if isinstance(found, Fresh):
            token = found.token
            if token.type == "totp":
                won = await self.store.consume_totp(
                    token.id, found.value, found.drift, now=now, attempt=attempt
                )
            else:
                won = await self.store.consume_hotp(token.id, found.value, now=now, attempt=attempt)
            if won:
                detail: dict[str, object] = {"serial": token.serial, "type": token.type}
                if token.type == "totp":
                    detail["drift"] = found.drift
                if found.retry:
                    detail["retry"] = True
                await self._audit(OTP_OK, username, client_ip, detail)
                return OtpAnswer("ok", token.serial)
            # Another service (or request) consumed it first: this one is the replay.
            detail = {"serial": token.serial, "concurrent": True}
            await self._audit(OTP_REPLAY, username, client_ip, detail)
            return OtpAnswer("invalid")
        if isinstance(found, Replay):
            await self._audit(OTP_REPLAY, username, client_ip, {"serial": found.token.serial})
            return OtpAnswer("invalid")
        return await self._failed(username, client_ip, code, answering, now, attempt)

    async def _failed(
        self,
        username: str,
        client_ip: str,
        code: str,
        answering: Sequence[TokenRow],
        now: datetime,
        attempt: str,
    ) -> OtpAnswer:
        """Count the failure on every token that answered; ``locked`` when none answers now."""
        rules = self.rules
        still: list[str] = []
        for token in answering:
            result = await self.store.record_failure(
                token.id, rules.max_failures, rules.lock_seconds, now=now, attempt=attempt
            )
            if result.locked:
                until = result.locked_until.isoformat() if result.locked_until else None
                detail: dict[str, object] = {"serial": token.serial, "until": until}
                await self._audit(OTP_LOCKED, username, client_ip, detail)
            else:
                still.append(token.serial)
        detail = {
            "serials": [t.serial for t in answering],
            "malformed": not well_formed(code, answering),
        }
        await self._audit(OTP_FAILED, username, client_ip, detail)
        if still:
            return OtpAnswer("invalid")
        fresh = await self.store.list_tokens(username)
        return OtpAnswer("locked", retry_after=retry_after(fresh, now))

    # -- OTP_ENROL, OTP_CONFIRM, OTP_STATUS ----------------------------------------------------

    async def enrol(self, username: str, issuer: str, *, invited: bool = False) -> EnrolAnswer:
        """A pending TOTP token; ``invited``: by an administrator's invitation, which works
        even where self-enrolment is off."""
        if not invited and not self.rules.self_enrolment:
            raise ServiceError(
                Code.FORBIDDEN, "self-enrolment is disabled (otp.self_enrolment: false)", 403
            )
        if not valid_username(username):
            raise ServiceError(Code.BAD_REQUEST, "username: not a valid username", 400)
        ring = self.keys.get()
        seed = generate_seed()
        uri = build_uri(issuer, username, seed, ENROL_PARAMS)
        for _ in range(3):
            serial = new_serial()
            key_id, blob = ring.encrypt(seed, serial.encode())
            try:
                token = await self.store.replace_pending(
                    username,
                    serial,
                    seed_key_id=key_id,
                    seed_ciphertext=blob,
                    algorithm=ENROL_PARAMS.algorithm,
                    digits=ENROL_PARAMS.digits,
                    period=ENROL_PARAMS.period,
                    description="invited" if invited else "self-enrolled",
                    now=self._now()[1],
                )
            except TokenExists:
                continue
            break
        else:
            raise ServiceError(Code.CONFLICT, "no free serial found; try again", 409)
        await self._audit(OTP_ENROLLED, username, None, {"serial": token.serial})
        return EnrolAnswer(token.serial, uri, encode_base32(seed))

    async def confirm(
        self, username: str, serial: str, code: str, client_ip: str, attempt: str
    ) -> OtpAnswer:
        ring = self.keys.get()
        rules = self.rules
        unix, now = self._now()
        token = await self.store.find(serial)
        own = token is not None and token.owner == username and token.type == "totp"
        if token is None or not own or token.state not in ("pending", "active"):
            self._dummy_work(ring, code, attempt, unix)
            detail: dict[str, object] = {"serial": serial, "reason": "no_pending"}
            await self._audit(OTP_FAILED, username, client_ip, detail)
            return OtpAnswer("invalid")
        if token.state == "pending" and token.failures >= rules.max_failures:
            self._dummy_work(ring, code, attempt, unix)
            detail = {"serial": serial, "reason": "locked"}
            await self._audit(OTP_FAILED, username, client_ip, detail)
            return OtpAnswer("locked")
        secret = self._secret(ring, token)
        found = None if secret is None else examine(token, secret, code, attempt, unix, rules)
        if token.state == "active" and not (isinstance(found, Fresh) and found.retry):
            # Confirmed already: only a retry of the attempt that confirmed it is ok.
            detail = {"serial": serial, "reason": "no_pending"}
            await self._audit(OTP_FAILED, username, client_ip, detail)
            return OtpAnswer("invalid")
        if isinstance(found, Fresh):
            if await self.store.activate_totp(
                token.id, found.value, found.drift, now=now, attempt=attempt
            ):
                await self._audit(OTP_CONFIRMED, username, client_ip, {"serial": serial})
                return OtpAnswer("ok", serial)
            found = Replay(token)
        if found is not None:
            await self._audit(OTP_REPLAY, username, client_ip, {"serial": serial})
            return OtpAnswer("invalid")
        result = await self.store.record_failure(
            token.id, rules.max_failures, rules.lock_seconds, now=now, attempt=attempt
        )
        detail = {"serial": serial, "malformed": not well_formed(code, [token])}
        await self._audit(OTP_FAILED, username, client_ip, detail)
        if token.state == "pending" and result.failures >= rules.max_failures:
            await self._audit(OTP_LOCKED, username, client_ip, {"serial": serial})
            return OtpAnswer("locked")
        return OtpAnswer("invalid")

    async def status(self, username: str) -> StatusAnswer:
        if valid_username(username):
            tokens, required = await self.store.owner_status(username)
        else:
            tokens, required = [], False
        active = sum(1 for t in tokens if t.state in ("active", "locked"))
        pending = [t for t in tokens if t.state == "pending"]
        newest = max(pending, key=lambda t: t.id).serial if pending else None
        return StatusAnswer(active, newest, required)

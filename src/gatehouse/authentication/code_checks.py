"""The one-time code calls of one Authentication service (``CODE_SEND``, ``CODE_STATUS``,
``CODE_VERIFY``): the user's contact data from the user DB, the code in the OATH DB
(:mod:`gatehouse.authentication.code_store`), its message through a Distribution service.

Sending tells the truth: ``accepted`` is answered only once a Distribution service has
committed the message to its outbox; when none accepts it the call answers 503 and the
portal says the code could not be sent. The code itself is never logged, never in an audit
event, and in the database only as a keyed hash (:mod:`gatehouse.authentication.codes`) —
plus, from its creation until Distribution accepted its message, sealed under the seed
keyring, so that a retry of the same send (the caller's ``key``) on any Authentication
service re-submits the same code with the same message key: Distribution answers the message
it has, and the user never gets two codes from one send.

Audit events (user DB): ``code_sent``, ``code_throttled``, ``code_ok``, ``code_failed``,
``code_replay``, ``code_locked``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gatehouse.authentication import audit
from gatehouse.authentication.calls import (
    CodeSendAnswer,
    CodeStatusAnswer,
    CodeVerifyAnswer,
)
from gatehouse.authentication.code_store import CodeRow, CodeStore, NewCode
from gatehouse.authentication.codes import (
    CHANNELS,
    SUBJECT,
    Throttle,
    code_hash,
    hash_key,
    matches,
    message_key,
    message_text,
    new_code,
    well_formed,
)
from gatehouse.authentication.config import CodeSettings
from gatehouse.authentication.otp import SeedKeys
from gatehouse.distribution.calls import (
    MessageStatus,
    SubmitAnswer,
    SubmitRequest,
    mask_email,
    mask_phone,
)
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.oath.errors import KeyringError
from gatehouse.oath.seeds import Keyring
from gatehouse.storage import directory
from gatehouse.storage.engine import Database

log = logging.getLogger("gatehouse.authentication")

CODE_SENT = "code_sent"
CODE_THROTTLED = "code_throttled"
CODE_OK = "code_ok"
CODE_FAILED = "code_failed"
CODE_REPLAY = "code_replay"
CODE_LOCKED = "code_locked"

NO_CONTACT = {
    "email_otp": "no e-mail address or phone number on file; choose another method",
    "sms_otp": "no phone number or e-mail address on file; choose another method",
}
UNDELIVERABLE = "the {what} on file cannot be used; choose another method"


class DistributionUnavailable(Exception):
    """No Distribution service accepted the call (down, or none configured)."""


class DistributionRefused(Exception):
    """A Distribution service refused the message (4xx): ``field`` names what it refused."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Distribution(Protocol):
    """The Distribution services, as the codes need them."""

    async def submit(self, request: SubmitRequest) -> SubmitAnswer:
        """Raises :class:`DistributionUnavailable` or :class:`DistributionRefused`."""
        ...

    async def status(self, message_id: str) -> MessageStatus:
        """Raises :class:`DistributionUnavailable`."""
        ...


@dataclass(frozen=True, slots=True)
class Contact:
    email: str | None
    phone: str | None


def recipient_hint(method: str, contact: Contact) -> str:
    """The masked recipient the method tries first (``j***@example.org``)."""
    for kind in CHANNELS[method]:
        if kind == "email" and contact.email:
            return mask_email(contact.email)
        if kind == "sms" and contact.phone:
            return mask_phone(contact.phone)
    return ""


def _resumed(row: CodeRow, now: datetime) -> CodeSendAnswer | None:
    """A retry of a send: its answer when the first try got as far as Distribution's
    acceptance; None when the message must still be submitted (with the sealed code)."""
    if row.message_id is not None:
        return CodeSendAnswer("accepted", row.message_id, "accepted", row.recipient_hint)
    if row.sealed is None or row.expires_at <= now:
        raise ServiceError(Code.CONFLICT, "key: this send's code has expired; send a new one", 409)
    return None


class CodeChecks:
    """The code calls.

    Args:
        store: the OATH DB's code tables.
        keys: the seed keyring (the hash key derives from it).
        user_db: contact data, and where audit events go.
        settings: the ``codes`` settings (replaced live with :meth:`use`).
        distribution: the Distribution services; None: codes cannot be sent (503).
        clock: Unix time (tests move it).
    """

    def __init__(
        self,
        store: CodeStore,
        keys: SeedKeys,
        user_db: Database,
        settings: CodeSettings,
        distribution: Distribution | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys
        self.user_db = user_db
        self.settings = settings
        self.distribution = distribution
        self.clock = clock
        #: Keyring key -> the code-hashing key derived from it (HKDF once per key).
        self._derived: dict[bytes, bytes] = {}

    def use(self, settings: CodeSettings, distribution: Distribution | None) -> None:
        self.settings = settings
        self.distribution = distribution

    def _now(self) -> tuple[float, datetime]:
        unix = self.clock()
        return unix, datetime.fromtimestamp(unix, UTC)

    async def _audit(
        self, event: str, username: str, client_ip: str | None, detail: dict[str, object]
    ) -> None:
        await audit.record(self.user_db, event, username, client_ip, detail)

    def _hash_key(self, key_id: str) -> bytes | None:
        """The code-hashing key derived from keyring key ``key_id`` (None: not in the file)."""
        ring = self.keys.get()
        key = ring.keys.get(key_id)
        if key is None:  # another process rotated: read the file again
            reloaded = self.keys.load()
            key = reloaded.keys.get(key_id) if reloaded is not None else None
        if key is None:
            return None
        derived = self._derived.get(key)
        if derived is None:
            derived = self._derived[key] = hash_key(key)
        return derived

    async def _contact(self, username: str) -> Contact | None:
        async with self.user_db.session() as session:
            user = await directory.find_user(session, username)
            if user is None or not user.enabled:
                return None
            return Contact(user.email or None, user.phone or None)

    def _distribution(self) -> Distribution:
        if self.distribution is None:
            raise ServiceError(
                Code.UNAVAILABLE,
                "one-time codes need a Distribution service (authentication.distribution is empty)",
                503,
            )
        return self.distribution

    # -- CODE_SEND ---------------------------------------------------------------------------

    async def send(
        self, username: str, method: str, key: str, client_ip: str | None
    ) -> CodeSendAnswer:
        ring = self.keys.get()
        settings = self.settings
        unix, now = self._now()
        contact = await self._contact(username) if directory.valid_username(username) else None
        if contact is None or not (contact.email or contact.phone):
            await self._audit(CODE_FAILED, username, client_ip, {"reason": "no_contact"})
            return CodeSendAnswer("no_contact", message=NO_CONTACT[method])
        distribution = self._distribution()
        code = new_code(settings.length)
        key_id, sealed = ring.encrypt(code.encode(), key.encode())
        derived = self._hash_key(key_id)
        assert derived is not None  # the keyring key that just sealed the code
        new = NewCode(
            username=username,
            method=method,
            send_key=key,
            key_id=key_id,
            code_hash=code_hash(derived, username, method, code),
            sealed=sealed,
            digits=settings.length,
            recipient_hint=recipient_hint(method, contact),
            created_at=now,
            expires_at=now + timedelta(seconds=settings.lifetime),
        )
        outcome = await self.store.create(new, settings, unix)
        if isinstance(outcome, Throttle):
            await self._audit(
                CODE_THROTTLED,
                username,
                client_ip,
                {"method": method, "retry_after": outcome.retry_after},
            )
            latest = await self.store.latest(username, method, now, settings.max_attempts)
            return CodeSendAnswer(
                "throttled",
                latest.message_id if latest is not None else None,
                recipient_hint=latest.recipient_hint if latest is not None else "",
                retry_after=outcome.retry_after,
            )
        row = outcome.row
        if not outcome.new:
            if (row.username, row.method) != (username, method):
                raise ServiceError(Code.CONFLICT, "key: used for another send", 409)
            answer = _resumed(row, now)
            if answer is not None:
                return answer
            code = self._unseal(ring, row)
        return await self._submit(distribution, row, code, contact, client_ip, now)

    def _unseal(self, ring: Keyring, row: CodeRow) -> str:
        assert row.sealed is not None
        try:
            return ring.decrypt(row.key_id, row.sealed, row.send_key.encode()).decode()
        except KeyringError as exc:
            log.error("code of send %s cannot be unsealed: %s", row.id, exc)
            raise ServiceError(Code.UNAVAILABLE, "the code cannot be re-sent", 503) from None

    async def _submit(
        self,
        distribution: Distribution,
        row: CodeRow,
        code: str,
        contact: Contact,
        client_ip: str | None,
        now: datetime,
    ) -> CodeSendAnswer:
        ttl = max(1, math.ceil((row.expires_at - now).total_seconds()))
        request = SubmitRequest(
            key=message_key(row.send_key),
            purpose="code",
            email=contact.email,
            phone=contact.phone,
            subject=SUBJECT,
            text=message_text(code, self.settings.lifetime),
            channels=list(CHANNELS[row.method]),
            ttl=ttl,
            username=row.username,
        )
        try:
            accepted = await distribution.submit(request)
        except DistributionUnavailable as exc:
            log.warning(
                "code for %r not sent: no Distribution service accepted it: %s", row.username, exc
            )
            raise ServiceError(
                Code.UNAVAILABLE, "no Distribution service accepted the code's message", 503
            ) from None
        except DistributionRefused as exc:
            await self.store.abandon(row.id)
            what = "phone number" if exc.message.startswith("phone") else "e-mail address"
            await self._audit(
                CODE_FAILED, row.username, client_ip, {"reason": "refused", "detail": exc.message}
            )
            return CodeSendAnswer("no_contact", message=UNDELIVERABLE.format(what=what))
        await self.store.accepted(row.id, accepted.id)
        detail: dict[str, object] = {
            "method": row.method,
            "message": accepted.id,
            "channels": list(CHANNELS[row.method]),
        }
        await self._audit(CODE_SENT, row.username, client_ip, detail)
        return CodeSendAnswer("accepted", accepted.id, accepted.status, row.recipient_hint)

    # -- CODE_STATUS -------------------------------------------------------------------------

    async def status(self, username: str, message_id: str) -> CodeStatusAnswer:
        row = await self.store.by_message(username, message_id)
        if row is None:
            return CodeStatusAnswer(message_id, "unknown")
        distribution = self.distribution
        if distribution is None:
            return CodeStatusAnswer(message_id, "accepted", row.recipient_hint)
        try:
            found = await distribution.status(message_id)
        except DistributionUnavailable as exc:
            # The message was accepted; where it is now cannot be told. That is the answer
            # (not a 503, which would make the caller take this service for down while it
            # polls: the Distribution services, not this one, are out of reach).
            log.warning("status of code message %s unavailable: %s", message_id, exc)
            return CodeStatusAnswer(message_id, "accepted", row.recipient_hint)
        return CodeStatusAnswer(message_id, found.status, row.recipient_hint, found.error)

    # -- CODE_VERIFY -------------------------------------------------------------------------

    async def verify(
        self, username: str, method: str, code: str, client_ip: str, attempt: str
    ) -> CodeVerifyAnswer:
        self.keys.get()  # 503 while the keyring cannot be used
        settings = self.settings
        _unix, now = self._now()
        rows = (
            await self.store.candidates(username, method)
            if directory.valid_username(username)
            else []
        )
        found: CodeRow | None = None
        for row in rows:
            key = self._hash_key(row.key_id)
            if key is not None and matches(key, username, method, code, row.code_hash):
                found = row
                break
        if found is not None:
            if found.consumed_at is not None and found.attempt != attempt:
                await self._audit(CODE_REPLAY, username, client_ip, {"method": method})
                return CodeVerifyAnswer("invalid")
            if found.consumed_at is None and found.failures >= settings.max_attempts:
                return CodeVerifyAnswer("locked")
            if found.consumed_at is None and found.expires_at <= now:
                await self._audit(
                    CODE_FAILED, username, client_ip, {"method": method, "reason": "expired"}
                )
                return CodeVerifyAnswer("expired")
            if await self.store.consume(found.id, attempt, now, settings.max_attempts):
                detail: dict[str, object] = {"method": method, "message": found.message_id}
                if found.consumed_at is not None:
                    detail["retry"] = True
                await self._audit(CODE_OK, username, client_ip, detail)
                return CodeVerifyAnswer("ok")
            await self._audit(
                CODE_REPLAY, username, client_ip, {"method": method, "concurrent": True}
            )
            return CodeVerifyAnswer("invalid")
        live = [
            r
            for r in rows
            if r.consumed_at is None and r.expires_at > now and r.failures < settings.max_attempts
        ]
        if not live:
            dead = any(
                r.consumed_at is None and r.expires_at > now and r.failures >= settings.max_attempts
                for r in rows
            )
            reason = "locked" if dead else "expired"
            await self._audit(
                CODE_FAILED, username, client_ip, {"method": method, "reason": reason}
            )
            return CodeVerifyAnswer("locked" if dead else "expired")
        counts = await self.store.fail(username, method, now, settings.max_attempts)
        detail = {
            "method": method,
            "reason": "wrong",
            "malformed": not well_formed(code, live[0].digits),
        }
        await self._audit(CODE_FAILED, username, client_ip, detail)
        if counts and all(count >= settings.max_attempts for count in counts):
            await self._audit(CODE_LOCKED, username, client_ip, {"method": method})
            return CodeVerifyAnswer("locked")
        return CodeVerifyAnswer("invalid" if counts else "expired")

    # -- housekeeping ------------------------------------------------------------------------

    async def purge(self) -> int:
        return await self.store.purge(self._now()[1])


__all__ = [
    "CodeChecks",
    "Contact",
    "Distribution",
    "DistributionRefused",
    "DistributionUnavailable",
    "recipient_hint",
]

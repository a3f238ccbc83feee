"""Token invitations in the Authentication service: handing links to the Distribution service,
and the calls the Policy portal's enrolment by invitation makes
(:mod:`gatehouse.authentication.invitation_calls`).

An administrator's invitation waits in the OATH DB as ``unsent``, its link's secret sealed
under the seed keyring (:mod:`gatehouse.oath.invitations`). Every Authentication service runs
:func:`send_forever`: about once a second it claims unsent rows (one conditional ``UPDATE`` per
row, a lease of :data:`LEASE` seconds, so two services do not both hand one over; and
``SUBMIT`` is idempotent by the key ``invitation-ID`` anyway), opens the secret, submits the
e-mail with the link (purpose ``invitation``, e-mail only, ``ttl`` the link's remaining
lifetime, at most a day) and marks the row sent, erasing the sealed secret. A submission that
fails is retried after :data:`RETRY` seconds, by whichever service claims it next. Neither the
secret nor the link is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request
from starlette.routing import Route

from gatehouse.authentication import audit
from gatehouse.authentication.code_checks import DistributionRefused
from gatehouse.authentication.invitation_calls import (
    INVITATION_CHECK,
    INVITATION_CONFIRM,
    INVITATION_ENROL,
    InvitationAnswer,
    InvitationCheck,
    InvitationConfirm,
    InvitationEnrol,
    InvitationEnrolAnswer,
    InvitationRequest,
)
from gatehouse.distribution.calls import MAX_TTL, SubmitAnswer, SubmitRequest, mask_email
from gatehouse.errors import GatehouseError
from gatehouse.oath.invitations import (
    InvitationRow,
    InvitationStore,
    link,
    sealing_aad,
    secret_hash,
)
from gatehouse.oath.seeds import Keyring
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.trust.identity import Peer

if TYPE_CHECKING:
    from gatehouse.authentication.app import Service

log = logging.getLogger("gatehouse.authentication.invitations")

#: Seconds between two looks for unsent invitations.
SEND_INTERVAL = 1.0
#: How long a claimed invitation is this service's alone.
LEASE = 30.0
#: When a submission that failed is tried again.
RETRY = 5.0
#: When a submission Distribution refused (400: the address, say) is tried again.
REFUSED_RETRY = 300.0
#: Invitations claimed per look.
BATCH = 10
#: Seconds between two sweeps of unsent invitations whose time ran out (and, with no
#: Distribution service configured, two looks for invitations that wait).
SWEEP_INTERVAL = 60.0
SUBJECT = "Set up your authenticator app"

INVITATION_SENT = "token_invitation_sent"
INVITATION_USED = "token_invitation_used"


class Submitter(Protocol):
    """The Distribution services (:class:`~gatehouse.authentication.distribution_client.
    FailoverDistribution`)."""

    async def submit(self, request: SubmitRequest) -> SubmitAnswer: ...


def message_key(invitation_id: str) -> str:
    """The idempotency key of an invitation's message: the same for every service."""
    return f"invitation-{invitation_id}"


def message_text(username: str, url: str, expires_at: datetime) -> str:
    until = expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Hello {username},\n\n"
        "you are invited to set up an authenticator app (a one-time password token) for your "
        "account.\n\n"
        f"Open this link, sign in as {username} and follow the steps:\n\n"
        f"{url}\n\n"
        f"The link works once, until {until}.\n"
        "If you did not expect this message, you can ignore it.\n"
    )


def ttl_of(row: InvitationRow, now: datetime) -> int:
    """The message's own expiry: the link's remaining lifetime, at most a day."""
    return max(1, min(MAX_TTL, int((row.expires_at - now).total_seconds())))


class InvitationSender:
    """Hands unsent invitations to the Distribution service."""

    def __init__(
        self,
        store: InvitationStore,
        keyring: Callable[[], Keyring],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._keyring = keyring
        self._clock = clock
        self._idle_warned = False
        self._next_sweep = 0.0

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def send_due(
        self, distribution: Submitter | None, base_url: str, portal_prefix: str
    ) -> int:
        """One look: expire what ran out, hand over what is due; how many were accepted."""
        now = self._now()
        sweep = self._clock() >= self._next_sweep
        if sweep:
            self._next_sweep = self._clock() + SWEEP_INTERVAL
            expired = await self.store.expire_unsent(now)
            if expired:
                log.warning("%d token invitations expired before they could be sent", expired)
        if distribution is None:
            if sweep and not self._idle_warned:
                waiting = await self.store.count_unsent()
                if waiting:
                    log.warning(
                        "%d token invitations wait to be sent, and no Distribution service is "
                        "configured (authentication.distribution)",
                        waiting,
                    )
                    self._idle_warned = True
            return 0
        self._idle_warned = False
        sent = 0
        for row in await self.store.claim(now, now + timedelta(seconds=LEASE), BATCH):
            if await self._send(distribution, row, base_url, portal_prefix):
                sent += 1
        return sent

    async def _send(
        self, distribution: Submitter, row: InvitationRow, base_url: str, portal_prefix: str
    ) -> bool:
        now = self._now()
        if row.sealed is None or row.key_id is None:
            return False
        try:
            secret = self._keyring().decrypt(row.key_id, row.sealed, sealing_aad(row.id)).decode()
        except (GatehouseError, UnicodeDecodeError) as exc:
            log.error("token invitation %s cannot be sent: its link does not open: %s", row.id, exc)
            await self.store.release(row.id, now + timedelta(seconds=60))
            return False
        request = SubmitRequest(
            key=message_key(row.id),
            purpose="invitation",
            email=row.email,
            phone=None,
            subject=SUBJECT,
            text=message_text(row.username, link(base_url, portal_prefix, secret), row.expires_at),
            channels=["email"],
            ttl=ttl_of(row, now),
            username=row.username,
        )
        try:
            answer = await distribution.submit(request)
        except DistributionRefused as exc:  # the message itself: no use retrying soon
            log.error(
                "token invitation %s for %r refused by Distribution (tried again in %gs): %s",
                row.id,
                row.username,
                REFUSED_RETRY,
                exc,
            )
            await self.store.release(row.id, now + timedelta(seconds=REFUSED_RETRY))
            return False
        except Exception as exc:  # unavailable: tried again after RETRY
            log.warning(
                "token invitation %s for %r not handed to Distribution yet (retried in %gs): %s",
                row.id,
                row.username,
                RETRY,
                exc,
            )
            await self.store.release(row.id, now + timedelta(seconds=RETRY))
            return False
        await self.store.mark_sent(row.id, answer.id, self._now())
        log.info(
            "token invitation %s for %r accepted as message %s", row.id, row.username, answer.id
        )
        return True


async def send_forever(service: Service) -> None:
    """The service's sender: once the OATH DB is ready, a look every :data:`SEND_INTERVAL`."""
    if service.otp is None or service.oath_db is None:
        return
    await service.oath_ready.wait()
    keys = service.otp.keys
    sender = InvitationSender(InvitationStore(service.oath_db.engine), keys.get)
    while True:
        settings = service.settings.invitations
        try:
            sent = await sender.send_due(
                service.distribution, settings.base_url, settings.portal_prefix
            )
            if sent:
                await _audit_sent(service, sent)
        except DatabaseUnavailable as exc:
            log.warning("sending token invitations: %s", exc)
        except Exception:
            log.exception("sending token invitations failed")
        await asyncio.sleep(SEND_INTERVAL)


async def _audit_sent(service: Service, count: int) -> None:
    await audit.record(service.db, INVITATION_SENT, None, None, {"count": count})


# --- the calls ---------------------------------------------------------------------------------


class InvitationCalls:
    """The Policy portal's calls, on one OATH DB."""

    def __init__(self, service: Service, clock: Callable[[], float] = time.time) -> None:
        assert service.oath_db is not None
        self.service = service
        self.store = InvitationStore(service.oath_db.engine)
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _find(self, secret: str) -> tuple[bytes, InvitationRow] | None:
        hashed = secret_hash(secret)
        if hashed is None:
            return None
        row = await self.store.find(hashed)
        return None if row is None else (hashed, row)

    async def check(self, secret: str) -> InvitationCheck:
        found = await self._find(secret)
        if found is None:
            return InvitationCheck("unknown")
        row = found[1]
        return InvitationCheck(row.link_state(self._now()), row.username, row.expires_at)

    async def enrol(self, request: InvitationEnrol) -> InvitationEnrolAnswer:
        found = await self._find(request.invitation)
        if found is None:
            return InvitationEnrolAnswer("unknown")
        row = found[1]
        state = row.link_state(self._now())
        if state != "valid":
            return InvitationEnrolAnswer(state)
        if row.username != request.username:
            return InvitationEnrolAnswer("foreign")
        otp = self.service.require_otp()
        enrolment = await otp.enrol(request.username, request.issuer, invited=True)
        return InvitationEnrolAnswer("ok", enrolment.serial, enrolment.uri, enrolment.secret)

    async def confirm(self, request: InvitationConfirm) -> InvitationAnswer:
        found = await self._find(request.invitation)
        if found is None:
            return InvitationAnswer("unknown")
        hashed, row = found
        if row.username != request.username:
            return InvitationAnswer("foreign")
        retry = row.state == "used" and row.used_attempt == request.attempt
        state = row.link_state(self._now())
        if state != "valid" and not retry:
            return InvitationAnswer(state)
        otp = self.service.require_otp()
        answer = await otp.confirm(
            request.username, request.serial, request.code, request.client_ip, request.attempt
        )
        if answer.result != "ok":
            if answer.result == "locked":
                return InvitationAnswer("locked", retry_after=answer.retry_after)
            return InvitationAnswer("invalid")
        now = self._now()
        if not await self.store.use(hashed, request.username, request.attempt, request.serial, now):
            # Used by another submission meanwhile (the same user in two windows): the token
            # this one confirmed stays the user's, but the link was not this one's to use.
            again = await self.store.find(hashed)
            state = again.link_state(now) if again is not None else "unknown"
            return InvitationAnswer("used" if state == "valid" else state)
        if not retry:
            detail = {"invitation": row.id, "serial": request.serial, "to": mask_email(row.email)}
            await audit.record(
                self.service.db, INVITATION_USED, request.username, request.client_ip, detail
            )
        return InvitationAnswer("ok", request.serial)


def _calls(request: Request) -> InvitationCalls:
    service: Service = request.app.state.service
    service.require_otp()
    calls: InvitationCalls | None = getattr(service, "_invitation_calls", None)
    if calls is None:
        calls = InvitationCalls(service)
        service._invitation_calls = calls  # type: ignore[attr-defined]
    return calls


async def check_invitation(
    request: Request, peer: Peer | None, parsed: InvitationRequest
) -> InvitationCheck:
    return await _calls(request).check(parsed.invitation)


async def enrol_invitation(
    request: Request, peer: Peer | None, parsed: InvitationEnrol
) -> InvitationEnrolAnswer:
    return await _calls(request).enrol(parsed)


async def confirm_invitation(
    request: Request, peer: Peer | None, parsed: InvitationConfirm
) -> InvitationAnswer:
    return await _calls(request).confirm(parsed)


def routes() -> list[Route]:
    """The invitation calls' routes, for the service's app."""
    return [
        INVITATION_CHECK.route(check_invitation),
        INVITATION_ENROL.route(enrol_invitation),
        INVITATION_CONFIRM.route(confirm_invitation),
    ]


__all__ = [
    "InvitationCalls",
    "InvitationSender",
    "message_key",
    "message_text",
    "routes",
    "send_forever",
]

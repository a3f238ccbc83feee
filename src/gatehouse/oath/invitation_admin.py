"""The administrator's side of token invitations, shared by ``gatehouse tokens invite`` and
the Administration service's REST API.

Inviting writes one ``unsent`` row (:mod:`gatehouse.oath.invitations`): the link's secret is
hashed for good and sealed under the seed keyring until an Authentication service hands the
link to the Distribution service (only Policy and Authentication may submit messages, so this
side never calls Distribution). Neither the secret nor the link is ever shown here or audited.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from gatehouse.distribution.calls import check_email, mask_email
from gatehouse.errors import GatehouseError
from gatehouse.oath.invitations import (
    InvitationRow,
    InvitationStore,
    new_id,
    new_secret,
    sealing_aad,
    secret_hash,
)
from gatehouse.oath.seeds import Keyring

#: How long a link works unless the administrator says otherwise.
DEFAULT_LIFETIME = 72 * 3600.0
MIN_LIFETIME = 300.0
MAX_LIFETIME = 30 * 86400.0

INVITATION_CREATED = "token_invitation_created"
INVITATION_REVOKED = "token_invitation_revoked"

#: ``contact(username)``: ``(exists, e-mail address or None)`` from the user DB.
ContactLookup = Callable[[str], Awaitable[tuple[bool, str | None]]]
#: ``audit(event, username, detail)``.
AuditHook = Callable[[str, str | None, dict[str, object]], Awaitable[None]]


class InvitationError(GatehouseError):
    """An invitation refused (unknown user, no e-mail address, a lifetime out of range)."""


def check_lifetime(seconds: float) -> float:
    if not MIN_LIFETIME <= seconds <= MAX_LIFETIME:
        raise InvitationError(
            f"lifetime: between {MIN_LIFETIME / 60:g} minutes and {MAX_LIFETIME / 86400:g} days, "
            f"not {seconds:g} seconds"
        )
    return seconds


class InvitationAdmin:
    """Invite, list and revoke, on one OATH DB with the installation's seed keyring."""

    def __init__(
        self,
        store: InvitationStore,
        keyring: Keyring,
        contact: ContactLookup,
        audit: AuditHook,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self._contact = contact
        self._audit = audit
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def invite(
        self, username: str, lifetime: float = DEFAULT_LIFETIME, by: str = ""
    ) -> InvitationRow:
        """A new invitation for ``username``, to be e-mailed to the address in the user DB."""
        check_lifetime(lifetime)
        exists, email = await self._contact(username)
        if not exists:
            raise InvitationError(f"user {username!r} does not exist")
        if not email:
            raise InvitationError(
                f"user {username!r} has no e-mail address to send the invitation to "
                f"(set one: gatehouse users set {username} --email ADDRESS)"
            )
        why = check_email(email)
        if why is not None:
            raise InvitationError(f"user {username!r}: e-mail address {email!r}: {why}")
        now = self._now()
        invitation_id = new_id()
        secret = new_secret()
        hashed = secret_hash(secret)
        assert hashed is not None
        key_id, sealed = self.keyring.encrypt(secret.encode(), sealing_aad(invitation_id))
        row = await self.store.add(
            invitation_id,
            username,
            email,
            hashed,
            key_id,
            sealed,
            now=now,
            expires_at=now + timedelta(seconds=lifetime),
            created_by=by,
        )
        await self._audit(
            INVITATION_CREATED,
            username,
            {"invitation": row.id, "to": mask_email(email), "expires_at": _iso(row.expires_at)},
        )
        return row

    async def list_invitations(self, username: str | None = None) -> list[InvitationRow]:
        return await self.store.list_invitations(username)

    async def revoke(self, invitation_id: str) -> InvitationRow:
        row = await self.store.get(invitation_id)
        if row is None:
            raise InvitationError(f"no invitation has id {invitation_id!r}")
        if not await self.store.revoke(invitation_id, self._now()):
            raise InvitationError(f"invitation {invitation_id} is {row.link_state(self._now())}")
        await self._audit(INVITATION_REVOKED, row.username, {"invitation": invitation_id})
        revoked = await self.store.get(invitation_id)
        assert revoked is not None
        return revoked


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "MIN_LIFETIME",
    "InvitationAdmin",
    "InvitationError",
    "check_lifetime",
]

"""Token invitations in the OATH DB: single-use, time-limited links to enrol a TOTP token.

An administrator's ``gatehouse tokens invite USER`` (or the Admin API) writes a row with the
link's secret twice: its SHA-256, kept for good and the only thing a link is checked against,
and the secret AES-GCM encrypted under the seed keyring (``sealed``), kept only while the row
is ``unsent``. An Authentication service claims unsent rows (:meth:`InvitationStore.claim`, a
conditional ``UPDATE`` per row, so two services do not both take one), hands the link to the
Distribution service and marks the row ``sent``, erasing ``sealed``
(:meth:`InvitationStore.mark_sent`). The link is used once: :meth:`InvitationStore.use` is one
conditional ``UPDATE`` naming the submission (``attempt``) that used it, so a retry of that
same submission is answered ok again and any other is refused.

A link names nothing but its secret (32 random bytes, base64url: 43 characters).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy import ColumnElement, and_, case, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gatehouse.oath.models import OathInvitation
from gatehouse.storage.engine import translate_errors
from gatehouse.storage.types import UTCDateTime

SECRET_BYTES = 32
#: The link's secret as it travels: base64url without padding.
SECRET_LENGTH = 43
#: The path of the enrolment page under the portal prefix.
INVITE_PATH = "enrol/invite"

InvitationState = Literal["unsent", "sent", "used", "expired", "revoked"]
#: What a link is, as the portal tells the user.
LinkState = Literal["valid", "used", "expired", "revoked", "unknown"]

_I = OathInvitation


def new_secret() -> str:
    """A link secret: 32 bytes from the CSPRNG, base64url (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def new_id() -> str:
    """An invitation id (shown to administrators; it opens nothing): hex, so it never starts
    with '-' on a command line."""
    return secrets.token_hex(12)


def secret_hash(secret: str) -> bytes | None:
    """SHA-256 of the secret's 32 bytes; None when ``secret`` is not one (wrong length or
    alphabet), so a malformed link never reaches the database."""
    if len(secret) != SECRET_LENGTH:
        return None
    try:
        raw = base64.urlsafe_b64decode(secret + "=")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != SECRET_BYTES or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != secret:
        return None
    return hashlib.sha256(raw).digest()


def sealing_aad(invitation_id: str) -> bytes:
    """The associated data the sealed secret is bound to: its row's id."""
    return f"invitation:{invitation_id}".encode()


def link(base_url: str, portal_prefix: str, secret: str) -> str:
    """``{base_url}{portal_prefix}enrol/invite?t=SECRET``."""
    prefix = portal_prefix if portal_prefix.endswith("/") else f"{portal_prefix}/"
    return f"{base_url.rstrip('/')}{prefix}{INVITE_PATH}?t={quote(secret, safe='')}"


@dataclass(frozen=True, slots=True)
class InvitationRow:
    """An invitation as stored; ``sealed`` is left out of the repr."""

    id: str
    username: str
    email: str
    state: InvitationState
    created_by: str
    created_at: datetime
    expires_at: datetime
    key_id: str | None = None
    sealed: bytes | None = field(default=None, repr=False)
    sent_at: datetime | None = None
    message_id: str | None = None
    used_at: datetime | None = None
    used_attempt: str | None = None
    serial: str | None = None

    def link_state(self, now: datetime) -> LinkState:
        """What the link is now: usable (``valid``), or why not."""
        if self.state in ("used", "revoked"):
            return self.state
        if self.state == "expired" or self.expires_at <= now:
            return "expired"
        return "valid"


_FIELDS = tuple(InvitationRow.__dataclass_fields__)


def _row(data: Any) -> InvitationRow:
    mapping = data._mapping
    return InvitationRow(**{name: mapping[name] for name in _FIELDS})


def _at(moment: datetime) -> ColumnElement[datetime]:
    return literal(moment, UTCDateTime())


def _open_at(now: datetime) -> ColumnElement[bool]:
    """Not used, revoked or expired: the link still works."""
    return and_(_I.state.in_(("unsent", "sent")), _I.expires_at > _at(now))


class InvitationStore:
    """The ``oath_invitations`` table of one OATH DB; every method one committed transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        async with translate_errors(), self.engine.begin() as conn:
            yield conn

    async def add(
        self,
        invitation_id: str,
        username: str,
        email: str,
        hashed: bytes,
        key_id: str,
        sealed: bytes,
        *,
        now: datetime,
        expires_at: datetime,
        created_by: str = "",
    ) -> InvitationRow:
        values = {
            "id": invitation_id,
            "username": username,
            "email": email,
            "secret_hash": hashed,
            "key_id": key_id,
            "sealed": sealed,
            "state": "unsent",
            "created_by": created_by[:64],
            "created_at": now,
            "expires_at": expires_at,
        }
        async with self._transaction() as conn:
            await conn.execute(insert(_I).values(**values))
            return _row(
                (await conn.execute(select(*_columns()).where(_I.id == invitation_id))).one()
            )

    async def get(self, invitation_id: str) -> InvitationRow | None:
        async with self._transaction() as conn:
            found = (await conn.execute(_by_id(invitation_id))).first()
        return None if found is None else _row(found)

    async def list_invitations(self, username: str | None = None) -> list[InvitationRow]:
        statement = select(*_columns()).order_by(_I.created_at, _I.id)
        if username is not None:
            statement = statement.where(_I.username == username)
        async with self._transaction() as conn:
            return [_row(found) for found in (await conn.execute(statement)).all()]

    async def find(self, hashed: bytes) -> InvitationRow | None:
        """The invitation whose secret has this SHA-256."""
        async with self._transaction() as conn:
            statement = select(*_columns()).where(_I.secret_hash == hashed)
            found = (await conn.execute(statement)).first()
        return None if found is None else _row(found)

    # -- sending -------------------------------------------------------------------------

    async def count_unsent(self) -> int:
        async with self._transaction() as conn:
            statement = select(func.count()).select_from(_I).where(_I.state == "unsent")
            return int((await conn.execute(statement)).scalar_one())

    async def expire_unsent(self, now: datetime) -> int:
        """Unsent invitations whose time ran out: ``expired``, their sealed secret erased."""
        statement = (
            update(_I)
            .where(_I.state == "unsent", _I.expires_at <= _at(now))
            .values(state="expired", sealed=None, key_id=None)
        )
        async with self._transaction() as conn:
            return int((await conn.execute(statement)).rowcount or 0)

    async def claim(self, now: datetime, until: datetime, limit: int = 10) -> list[InvitationRow]:
        """Unsent invitations no other service holds, each claimed until ``until`` by one
        conditional ``UPDATE`` (a row another claimed meanwhile is skipped)."""
        free = or_(_I.claimed_until.is_(None), _I.claimed_until <= _at(now))
        candidates = (
            select(_I.id)
            .where(_I.state == "unsent", _I.sealed.is_not(None), _I.expires_at > _at(now), free)
            .order_by(_I.created_at)
            .limit(limit)
        )
        claimed: list[InvitationRow] = []
        async with self._transaction() as conn:
            ids = [found[0] for found in (await conn.execute(candidates)).all()]
        for invitation_id in ids:
            statement = (
                update(_I)
                .where(_I.id == invitation_id, _I.state == "unsent", free)
                .values(claimed_until=until)
            )
            async with self._transaction() as conn:
                if int((await conn.execute(statement)).rowcount or 0) != 1:
                    continue
                found = (
                    await conn.execute(select(*_columns()).where(_I.id == invitation_id))
                ).one()
            claimed.append(_row(found))
        return claimed

    async def release(self, invitation_id: str, retry_at: datetime) -> None:
        """A claimed invitation that could not be handed over: free again at ``retry_at``."""
        statement = (
            update(_I)
            .where(_I.id == invitation_id, _I.state == "unsent")
            .values(claimed_until=retry_at)
        )
        async with self._transaction() as conn:
            await conn.execute(statement)

    async def mark_sent(self, invitation_id: str, message_id: str, now: datetime) -> None:
        """Distribution accepted the message: ``sent`` (unless the link was used already, the
        mail being faster than this), and the sealed secret erased either way."""
        statement = (
            update(_I)
            .where(_I.id == invitation_id)
            .values(
                state=case((_I.state == "unsent", literal("sent")), else_=_I.state),
                sealed=None,
                key_id=None,
                sent_at=now,
                message_id=message_id[:64],
                claimed_until=None,
            )
        )
        async with self._transaction() as conn:
            await conn.execute(statement)

    # -- using ---------------------------------------------------------------------------

    async def use(
        self, hashed: bytes, username: str, attempt: str, serial: str, now: datetime
    ) -> bool:
        """Mark the link used by ``attempt`` (the token ``serial`` was enrolled with it):
        True if this call or an earlier one of the same attempt did; False if it was used by
        another attempt, expired, revoked, unknown or another user's."""
        statement = (
            update(_I)
            .where(_I.secret_hash == hashed, _I.username == username, _open_at(now))
            .values(
                state="used",
                used_at=now,
                used_attempt=attempt,
                serial=serial,
                sealed=None,
                key_id=None,
            )
        )
        async with self._transaction() as conn:
            if int((await conn.execute(statement)).rowcount or 0) == 1:
                return True
            again = select(_I.id).where(
                _I.secret_hash == hashed,
                _I.username == username,
                _I.state == "used",
                _I.used_attempt == attempt,
            )
            return (await conn.execute(again)).first() is not None

    async def revoke(self, invitation_id: str, now: datetime) -> bool:
        """An administrator withdraws an open invitation; False if it was not open."""
        statement = (
            update(_I)
            .where(_I.id == invitation_id, _open_at(now))
            .values(state="revoked", sealed=None, key_id=None)
        )
        async with self._transaction() as conn:
            return int((await conn.execute(statement)).rowcount or 0) == 1


def _columns() -> list[Any]:
    return [getattr(_I, name) for name in _FIELDS]


def _by_id(invitation_id: str) -> Any:
    return select(*_columns()).where(_I.id == invitation_id)


__all__ = [
    "INVITE_PATH",
    "SECRET_LENGTH",
    "InvitationRow",
    "InvitationState",
    "InvitationStore",
    "LinkState",
    "link",
    "new_id",
    "new_secret",
    "sealing_aad",
    "secret_hash",
]

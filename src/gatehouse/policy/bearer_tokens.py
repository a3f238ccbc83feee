"""Bearer tokens presented to proxied resources (the rule condition ``token_scopes_any``).

A request's ``Authorization: Bearer`` token (RFC 6750 §2.1) is introspected by the
Authentication services (``OAUTH_BEARER``: the signature, expiry and revocation in the OAuth2
DB). The answer is cached here by the token's SHA-256, never the token, for at most
:data:`MAX_AGE` seconds and never past the token's own expiry, so a revoked token stops
working within that time; concurrent decisions for one token share one call. While no
Authentication service answers, a decision that needs a token is refused with 503 (the Access
Point fails over or answers 503) rather than denied, since a deny would be cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from gatehouse.authentication.oauth_calls import OAUTH_BEARER, BearerAnswer, BearerRequest
from gatehouse.internal.calls import CallRefused
from gatehouse.internal.client import FailoverClient, InternalCallError
from gatehouse.internal.errors import Code, ServiceError

log = logging.getLogger(__name__)

__all__ = ["MAX_AGE", "BearerCache", "bearer_token"]

#: The longest an introspection answer is used (the issue: min(exp, 30 s)).
MAX_AGE = 30.0
#: Entries kept at most (the cache is cleared, not evicted, when full).
MAX_ENTRIES = 100_000
#: RFC 6750 §2.1 b64token.
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
MAX_TOKEN = 8192


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` field; None for anything else."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN:
        return None
    return token if _B64TOKEN.match(token) else None


@dataclass(frozen=True, slots=True)
class Entry:
    answer: BearerAnswer
    until: datetime


class BearerCache:
    """Introspection answers by token hash, each until min(its expiry, now + ``max_age``)."""

    def __init__(self, max_age: float = MAX_AGE, max_entries: int = MAX_ENTRIES) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: dict[bytes, Entry] = {}
        self._pending: dict[bytes, asyncio.Future[Entry]] = {}
        #: Introspection calls made (tests and metrics).
        self.calls = 0

    def forget_all(self) -> None:
        self._entries.clear()

    async def lookup(
        self, client: FailoverClient, authorization: str | None, now: datetime
    ) -> tuple[BearerAnswer, datetime] | None:
        """The bearer token of ``authorization`` as introspected, and until when that answer
        stands; None when the field holds no bearer token.

        Raises:
            ServiceError: 503, no Authentication service answered.
        """
        token = bearer_token(authorization)
        if token is None:
            return None
        key = hashlib.sha256(token.encode()).digest()
        entry = self._entries.get(key)
        if entry is not None and now < entry.until:
            return entry.answer, entry.until
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._pending[key] = pending
            try:
                entry = await self._introspect(client, token, now)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: no "never retrieved" warning if unshared
                raise
            else:
                pending.set_result(entry)
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = entry
            finally:
                del self._pending[key]
        else:
            entry = await asyncio.shield(pending)
        return entry.answer, entry.until

    async def _introspect(self, client: FailoverClient, token: str, now: datetime) -> Entry:
        self.calls += 1
        try:
            answer = await OAUTH_BEARER.invoke(client, BearerRequest(token))
        except (InternalCallError, CallRefused, ValueError) as exc:
            log.warning("bearer token not introspected: %s", exc)
            raise ServiceError(
                Code.UNAVAILABLE, "bearer token introspection unavailable", 503
            ) from None
        until = now + timedelta(seconds=self.max_age)
        if answer.active:
            until = min(until, datetime.fromtimestamp(answer.exp, now.tzinfo))
        return Entry(answer, until)

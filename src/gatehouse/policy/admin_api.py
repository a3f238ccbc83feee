"""The Policy service's admin API: list sessions and revoke them.

Callers present ``Authorization: Bearer TOKEN`` with the token from ``policy.admin_token_file``;
over mutual TLS they must also hold an operator or Administration certificate (the roles of
the declarations in policy/calls.py), the token staying a second factor. Without a configured
token file the admin API does not exist (404). Every revocation ends up on the event stream
through the session store's end hook, and in the audit log with its reason
(``DELETE ?user=U&reason=R``, and ``&except=HASH`` to keep one session: the one that changed
its own password).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from starlette.requests import Request

from gatehouse.internal.errors import Code, ServiceError
from gatehouse.policy.sessions import END_REASONS, SessionRecord, SessionStore, well_formed_hash
from gatehouse.storage.models import USERNAME_LENGTH

AuditHook = Callable[[str, str | None, str | None, dict[str, object]], Awaitable[None]]


def read_token(path: Path) -> str:
    """The admin token: the file's first line, at least 16 characters."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read admin token file {path}: {exc.strerror}") from None
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < 16:
        raise ValueError(f"admin token file {path} must hold a token of at least 16 characters")
    return token


def bearer_ok(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


class AdminAPI:
    """Handlers of ``/internal/v1/sessions`` (``SESSIONS``, ``END_SESSIONS``,
    ``REVOKE_SESSION``): each checks the bearer token and returns what its declaration's
    answer codec encodes."""

    def __init__(
        self,
        token: str | None,
        sessions: SessionStore,
        audit: AuditHook,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._token = token
        self._sessions = sessions
        self._audit = audit
        self._clock = clock

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            raise ServiceError(Code.NOT_FOUND, "the admin API is not enabled", 404)
        if not bearer_ok(request.headers.get("authorization"), self._token):
            raise ServiceError(Code.UNAUTHORIZED, "a valid admin bearer token is required", 401)

    @staticmethod
    def _user(request: Request) -> str | None:
        user = request.query_params.get("user")
        if user is not None and not 0 < len(user) <= USERNAME_LENGTH:
            raise ServiceError(Code.BAD_REQUEST, "user: not a user name", 400)
        return user

    async def sessions(self, request: Request) -> list[dict[str, object]]:
        """``GET /internal/v1/sessions[?user=NAME]``: the live sessions."""
        self._authorize(request)
        records = await self._sessions.live(self._clock(), self._user(request))
        return [r.info() for r in records]

    async def end_sessions(self, request: Request) -> int:
        """``DELETE /internal/v1/sessions?user=NAME[&reason=R][&except=HASH]``: how many."""
        self._authorize(request)
        user = self._user(request)
        if user is None:
            raise ServiceError(Code.BAD_REQUEST, "user: required to revoke sessions", 400)
        reason = request.query_params.get("reason", "revoked")
        if reason not in END_REASONS:
            raise ServiceError(
                Code.BAD_REQUEST, f"reason: one of {', '.join(sorted(END_REASONS))}", 400
            )
        keep = request.query_params.get("except")
        if keep is not None and not well_formed_hash(keep):
            raise ServiceError(Code.BAD_REQUEST, "except: not a session hash (32 hex digits)", 400)
        ended = await self._sessions.end_sessions(user, reason=reason, except_session=keep)
        await self._record(ended, request, reason)
        return len(ended)

    async def revoke(self, request: Request) -> int:
        """``DELETE /internal/v1/sessions/{id_hash}``: how many (0 or 1)."""
        self._authorize(request)
        id_hash = request.path_params["id_hash"]
        if not well_formed_hash(id_hash):
            raise ServiceError(Code.BAD_REQUEST, "not a session hash (32 hex digits)", 400)
        ended = await self._sessions.revoke_hashes([id_hash])
        await self._record(ended, request)
        return len(ended)

    async def _record(
        self, ended: list[SessionRecord], request: Request, reason: str = "revoked"
    ) -> None:
        caller = request.client.host if request.client else None
        for record in ended:
            await self._audit(
                "session_revoked",
                record.username,
                caller,
                {"session": record.id_hash, "by": "admin", "reason": reason},
            )

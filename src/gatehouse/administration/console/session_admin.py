"""Sessions of an installation, for the console: listed and ended through one of its Policy
services' session admin API (``SESSIONS``, ``REVOKE_SESSION``, ``END_SESSIONS`` in
policy/calls.py), so every Access Point hears of a revocation at once; when no Policy
service answers, read or ended in the session DB itself, as ``gatehouse users
end-sessions`` does (:mod:`gatehouse.policy.end_sessions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from gatehouse.administration.credentials import operator_tls
from gatehouse.internal.calls import Call
from gatehouse.policy.calls import REVOKE_SESSION, SESSIONS
from gatehouse.policy.end_sessions import _policy_configs, _session_db, call_policy_admin
from gatehouse.policy.events import notify_revoked
from gatehouse.policy.sessions import SessionRecord, SessionStore, Timeouts, well_formed_hash
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade

A = TypeVar("A")
#: The most sessions a page shows.
MAX_SHOWN = 500


@dataclass(frozen=True, slots=True)
class SessionView:
    id_hash: str
    username: str
    display_name: str
    groups: tuple[str, ...]
    methods: tuple[str, ...]
    created_at: str
    last_seen_at: str
    expires_at: str
    client_ip: str
    user_agent: str

    @classmethod
    def of(cls, info: dict[str, Any]) -> SessionView:
        return cls(
            id_hash=str(info.get("id_hash", "")),
            username=str(info.get("username", "")),
            display_name=str(info.get("display_name") or ""),
            groups=tuple(str(g) for g in info.get("groups") or ()),
            methods=tuple(str(m) for m in info.get("methods") or ()),
            created_at=_minute(info.get("created_at")),
            last_seen_at=_minute(info.get("last_seen_at")),
            expires_at=_minute(info.get("expires_at")),
            client_ip=str(info.get("client_ip") or ""),
            user_agent=str(info.get("user_agent") or ""),
        )

    def matches(self, query: str) -> bool:
        """``query`` (lower case) in the user name, display name or client address."""
        return any(
            query in text.lower() for text in (self.username, self.display_name, self.client_ip)
        )


def _minute(value: object) -> str:
    text = str(value or "")
    return text[:16].replace("T", " ") if text else ""


def search(sessions: Sequence[SessionView], query: str) -> list[SessionView]:
    """The sessions matching ``query`` (all when empty), newest activity first."""
    wanted = query.strip().lower()
    found = [s for s in sessions if not wanted or s.matches(wanted)]
    return sorted(found, key=lambda s: s.last_seen_at, reverse=True)[:MAX_SHOWN]


async def _through_policy(
    home: Path, call: Call[Any, A], params: dict[str, str] | None, query: dict[str, str]
) -> A | None:
    """``call`` on the first of the installation's Policy services that answers, with its
    admin token (and the operator's certificate on mutual TLS); None when none does."""
    tls = operator_tls(home)
    for config, base in _policy_configs(home):
        answer = await call_policy_admin(config, base, call, query, tls, params)
        if answer is not None:
            return answer
    return None


async def _session_store(home: Path) -> tuple[SessionStore, Database, str]:
    url = _session_db(home)
    await upgrade(url, "session")
    database = Database(url)
    told: list[str] = []

    async def tell(records: Sequence[SessionRecord], _reason: str) -> None:
        if url.startswith("postgresql"):
            await notify_revoked(url, "gatehouse-console", [r.id_hash for r in records])
            told.append("yes")

    # Lifetimes do not matter for reading and deleting sessions.
    return SessionStore(database, Timeouts(idle=1.0, absolute=1.0), on_end=tell), database, url


async def list_sessions(home: Path, user: str | None = None) -> tuple[list[SessionView], str]:
    """The live sessions (of ``user``, or everyone's) and where they were read."""
    query = {"user": user} if user else {}
    listed = await _through_policy(home, SESSIONS, None, query)
    if listed is not None:
        return [SessionView.of(info) for info in listed], "a Policy service"
    store, database, _ = await _session_store(home)
    try:
        records = await store.live(datetime.now(UTC), user)
    finally:
        await database.dispose()
    return [SessionView.of(r.info()) for r in records], "the session database"


async def revoke_session(home: Path, id_hash: str) -> str:
    """End one session by its id hash; a line saying what happened."""
    if not well_formed_hash(id_hash):
        raise ValueError("session: not a session id hash (32 hex digits)")
    revoked = await _through_policy(home, REVOKE_SESSION, {"id_hash": id_hash}, {})
    if revoked is not None:
        if not revoked:
            return "the session had already ended"
        return "session ended; every Access Point was told"
    store, database, url = await _session_store(home)
    try:
        ended = await store.revoke_hashes([id_hash])
    finally:
        await database.dispose()
    if not ended:
        return "the session had already ended"
    if url.startswith("postgresql"):
        return "session ended in the session database; every Policy service was told"
    return (
        "session ended in the session database (no Policy service answered: cached access "
        "decisions expire within the decision TTL)"
    )

"""Sessions and the OAuth provider: a session's ``sid`` survives a step-up (a new session id)
and is neither the id nor its stored hash; a session that is *ended* tells the Authentication
services (``OAUTH_SESSION_ENDED``, to a real HTTP server answering the declared call), a
step-up, a finished sign-in or a time-out does not."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

from gatehouse.authentication.oauth_calls import (
    OAUTH_SESSION_ENDED,
    SessionEnded,
    SessionEndedAnswer,
)
from gatehouse.internal.client import FailoverClient
from gatehouse.policy.oauth_flow import SessionEndNotifier, oauth_sid
from gatehouse.policy.service import AuthServiceChecker
from gatehouse.policy.sessions import Identity, SessionRecord, SessionStore, Timeouts
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from gatehouse.trust.identity import Peer
from tests.support.asgi_server import serving
from tests.support.processes import free_port

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_the_sid_survives_a_step_up_and_is_not_the_session_id(tmp_path: Path) -> None:
    async def scenario() -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
        await upgrade(url, "session")
        db = Database(url)
        ended: list[tuple[list[SessionRecord], str]] = []

        async def on_end(records: Sequence[SessionRecord], reason: str) -> None:
            ended.append((list(records), reason))

        store = SessionStore(db, Timeouts(1800, 43200), on_end)
        try:
            session_id, first = await store.create(Identity("alice"), ["password"], T0)
            rotated = await store.rotate(first, ["password", "otp"], T0 + timedelta(seconds=5))
            assert rotated is not None
            new_id, second = rotated
            assert new_id != session_id
            assert second.id_hash != first.id_hash
            assert oauth_sid(second) == oauth_sid(first)
            assert oauth_sid(first) not in (session_id, first.id_hash)
            _, other = await store.create(Identity("alice"), ["password"], T0 + timedelta(1))
            assert oauth_sid(other) != oauth_sid(first)
            assert [reason for _records, reason in ended] == ["rotated"]
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_only_sessions_that_are_ended_revoke_their_tokens(tmp_path: Path) -> None:
    async def scenario() -> None:
        seen: list[str] = []

        async def session_ended(
            request: Request, peer: Peer | None, body: SessionEnded
        ) -> SessionEndedAnswer:
            seen.append(body.sid)
            return SessionEndedAnswer(1)

        app = Starlette(routes=[OAUTH_SESSION_ENDED.route(session_ended)])
        config = uvicorn.Config(app, "127.0.0.1", free_port(), log_level="warning")
        record = SessionRecord(
            "a" * 32, "alice", "", None, (), ("password",), T0, T0, T0, T0, None, None
        )
        pending = SessionRecord(
            "b" * 32, "bob", "", None, (), ("password",), T0, T0, T0, T0, None, None, {}
        )
        async with serving(config) as url, FailoverClient([url], timeout=2) as client:
            caller = AuthServiceChecker(client)
            notifier = SessionEndNotifier()
            for reason in ("rotated", "step_up", "signed_in", "expired"):
                notifier.ended(caller, [record], reason)
            await notifier.drain()
            assert seen == []
            for reason in ("logout", "revoked", "password_changed", "login"):
                notifier.ended(caller, [record, pending], reason)
            await notifier.drain()
            assert seen == [oauth_sid(record)] * 4  # never the pending sign-in's

    asyncio.run(scenario())

"""Rules that ask for a second factor: ``auth_methods`` in the configuration, the decisions
it leads to (step-up to the OTP page), the ``Remote-Auth-Methods`` header, and the session
rows behind a step-up (a new id when the methods change, pending sign-ins no session).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gatehouse.config.loader import validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.policy.decision import (
    Allow,
    Authenticate,
    CompiledPolicy,
    DecisionInput,
    SessionView,
    compile_policy,
    decide,
    ordered_methods,
)
from gatehouse.policy.service import login_url
from gatehouse.policy.sessions import Identity, SessionStore, Timeouts
from gatehouse.storage.engine import Database, create_engine
from gatehouse.storage.migrate import _run, alembic_config, upgrade
from tests.support.postgres import postgres_cluster, postgres_url

__all__ = ["postgres_cluster", "postgres_url"]

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def policy(resources: dict[str, Any], **more: Any) -> CompiledPolicy:
    return compile_policy(validate(PolicyConfig, {"resources": resources, **more}))


def session(*methods: str) -> SessionView:
    return SessionView(
        "alice",
        frozenset({"staff"}),
        None,
        None,
        frozenset(methods),
        NOW + timedelta(hours=1),
        NOW + timedelta(hours=2),
    )


def ask(p: CompiledPolicy, resource: str, who: SessionView | None) -> object:
    return decide(p, DecisionInput(resource, "GET", "/", "192.0.2.1"), who, NOW)


# --- the configuration -----------------------------------------------------------------------


def test_password_and_otp_are_the_methods_a_rule_may_ask_for() -> None:
    p = policy(
        {"secure": {"auth_methods": ["password", "otp"]}, "pw": {"auth_methods": ["password"]}}
    )
    assert set(p.resource_ids) == {"secure", "pw"}


@pytest.mark.parametrize(
    ("resources", "rules", "path", "message"),
    [
        (
            {"secure": {"auth_methods": ["password", "totp"]}},
            {},
            "resources.secure.auth_methods[1]",
            "unknown authentication method 'totp' (expected one of: password, otp, "
            "email_otp, sms_otp)",
        ),
        (
            {"x": {"rule": "strong"}},
            {"strong": {"all": ["authenticated", {"auth_methods": ["sms"]}]}},
            "rules.strong.all[1].auth_methods[0]",
            "unknown authentication method 'sms'",
        ),
        ({"x": {"auth_methods": []}}, {}, "resources.x.auth_methods", "non-empty list"),
        ({"x": {"auth_methods": "otp"}}, {}, "resources.x.auth_methods", "non-empty list"),
    ],
)
def test_an_unknown_method_is_a_config_error_naming_the_field(
    resources: dict[str, Any], rules: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate(PolicyConfig, {"resources": resources, "rules": rules})
    text = str(info.value)
    assert path in text
    assert message in text


# --- decisions -------------------------------------------------------------------------------

SECURE = {"secure": {"auth_methods": ["password", "otp"]}, "plain": "authenticated"}


def test_no_session_logs_in_with_both_methods() -> None:
    assert ask(policy(SECURE), "secure", None) == Authenticate(("password", "otp"), step_up=False)


def test_a_password_session_is_sent_to_the_otp_step() -> None:
    decision = ask(policy(SECURE), "secure", session("password"))
    assert decision == Authenticate(("otp",), step_up=True)
    assert isinstance(decision, Authenticate)
    assert decision.step == "otp"
    url = login_url("/_gatehouse/", "https://gw.test/secure/x", decision.step)
    assert url == "/_gatehouse/login?rd=https%3A%2F%2Fgw.test%2Fsecure%2Fx&step=otp"
    assert decision.to_json(url)["login_url"] == url


def test_a_password_only_rule_gets_a_plain_login_url() -> None:
    decision = ask(policy(SECURE), "plain", None)
    assert isinstance(decision, Authenticate)
    assert decision.step is None
    assert login_url("/_gatehouse/", "/plain/", decision.step) == "/_gatehouse/login?rd=%2Fplain%2F"


def test_both_methods_are_allowed_and_the_backend_sees_them() -> None:
    decision = ask(policy(SECURE), "secure", session("otp", "password"))
    assert isinstance(decision, Allow)
    assert ("Remote-Auth-Methods", "password,otp") in decision.headers
    plain = ask(policy(SECURE), "plain", session("password"))
    assert isinstance(plain, Allow)
    assert ("Remote-Auth-Methods", "password") in plain.headers


def test_the_methods_header_can_be_renamed_or_left_out() -> None:
    renamed = policy(SECURE, identity_headers={"auth_methods": "X-AMR"})
    decision = ask(renamed, "secure", session("password", "otp"))
    assert isinstance(decision, Allow)
    assert ("X-AMR", "password,otp") in decision.headers
    none = policy(SECURE, identity_headers={"auth_methods": None})
    decision = ask(none, "secure", session("password", "otp"))
    assert isinstance(decision, Allow)
    assert all(name != "Remote-Auth-Methods" for name, _ in decision.headers)


def test_the_methods_header_name_must_differ_from_the_others() -> None:
    with pytest.raises(ConfigError) as info:
        validate(PolicyConfig, {"identity_headers": {"auth_methods": "remote-user"}})
    assert "identity_headers.auth_methods" in str(info.value)


def test_methods_come_in_a_stable_order() -> None:
    assert ordered_methods(frozenset({"otp", "password"})) == ["password", "otp"]
    assert ordered_methods(frozenset({"otp"})) == ["otp"]
    assert ordered_methods(frozenset({"x\r\ny", "password"})) == ["password", "xy"]


def test_the_access_point_strips_the_header_from_clients() -> None:
    from gatehouse.access_point.headers import HeaderPolicy
    from gatehouse.config.access_point import AccessPointSettings

    assert "Remote-Auth-Methods" in AccessPointSettings().identity_headers
    policy_ = HeaderPolicy.build([], "gatehouse", False, [])
    assert b"remote-auth-methods" in policy_.drop


# --- session rows ----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def session_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_a_step_up_gets_a_new_id_and_the_old_one_ends(session_db: str) -> None:
    async def scenario() -> None:
        url = session_db
        await upgrade(url, "session")
        db = Database(url)
        ended: list[tuple[list[str], str]] = []

        async def on_end(records: Any, reason: str) -> None:
            ended.append(([r.id_hash for r in records], reason))

        store = SessionStore(db, Timeouts(1800, 43200), on_end, cache_ttl=2.0)
        try:
            old_id, old = await store.create(Identity("alice"), ["password"], NOW)
            assert await store.lookup(old_id, NOW) is not None  # cached now
            rotated = await store.rotate(old, ["password", "otp"], NOW, reason="step_up")
            assert rotated is not None
            new_id, new = rotated
            assert new_id != old_id
            assert new.methods == ("password", "otp")
            assert new.absolute_expires_at == old.absolute_expires_at  # a step-up is no new login
            assert ended == [([old.id_hash], "step_up")]  # the revocation path: APs drop it
            assert await store.lookup(old_id, NOW) is None  # the cache forgot it too
            assert (await store.lookup(new_id, NOW)) is not None
            assert await store.rotate(old, ["password", "otp"], NOW) is None  # once only
            # A sign-in under way is no session, and lives minutes, not hours.
            pending_id, pending = await store.create(
                Identity("bob"), ["password"], NOW, pending={"enrol": False, "device": None}
            )
            assert await store.lookup(pending_id, NOW) is None
            found = await store.lookup(pending_id, NOW, pending=True)
            assert found is not None
            assert found.pending == {"enrol": False, "device": None}
            assert pending.absolute_expires_at - NOW <= timedelta(minutes=10)
            done = await store.rotate(pending, ["password", "otp"], NOW + timedelta(minutes=1))
            assert done is not None
            assert done[1].pending is None
            assert done[1].absolute_expires_at == NOW + timedelta(minutes=1, hours=12)
            # Revoking a user ends the sign-ins under way too.
            again_id, _ = await store.create(Identity("bob"), ["password"], NOW, pending={})
            await store.end_sessions("bob")
            assert await store.lookup(again_id, NOW, pending=True) is None
        finally:
            await db.dispose()

    asyncio.run(scenario())


def test_sessions_from_before_the_migration_say_password(session_db: str) -> None:
    """``session_0003`` gives rows without methods ``["password"]``."""

    async def migrate(url: str, target: str) -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                await conn.run_sync(_run, alembic_config(url), (target,))
                await conn.commit()
        finally:
            await engine.dispose()

    async def scenario() -> None:
        url = session_db
        await migrate(url, "session_0002")
        db = Database(url)
        try:
            async with db.session() as s:
                await s.execute(
                    sa.text(
                        "INSERT INTO sessions (id_hash, username, display_name, groups, methods,"
                        " created_at, last_seen_at, idle_expires_at, absolute_expires_at)"
                        " VALUES ('a', 'ann', '', '[]', '[]', :t, :t, :t, :t)"
                    ),
                    {"t": NOW},
                )
            await migrate(url, "session@head")
            async with db.session() as s:
                row = (await s.execute(sa.text("SELECT methods, pending FROM sessions"))).one()
            assert row[0] in ('["password"]', ["password"])  # JSON text or decoded
            assert row[1] is None
        finally:
            await db.dispose()

    asyncio.run(scenario())

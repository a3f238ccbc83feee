"""The code flow, refresh, client credentials, introspection, revocation and userinfo
through the provider's entry points, on a real SQLite OAuth2 DB."""

from __future__ import annotations

import hashlib
from base64 import urlsafe_b64encode

import pytest

from gatehouse.oauth2.authorize import Consent, ErrorPage, Login, Redirect, outcome_dict
from gatehouse.oauth2.jwt import ACCESS_TOKEN_TYP, verify
from gatehouse.oauth2.keys import SigningKeys
from gatehouse.oauth2.server import ProviderConfig
from gatehouse.oauth2.subject import Subject
from tests.oauth2.harness import (
    ALICE,
    APP1,
    APP2,
    CHALLENGE,
    ISSUER,
    KEYS,
    SETTINGS,
    SPA,
    START,
    VERIFIER,
    Env,
    auth_query,
    basic,
    body,
    code_for,
    exchange,
    post,
    query_of,
    with_env,
)


def test_the_rfc7636_vector_is_what_s256_computes() -> None:
    digest = hashlib.sha256(VERIFIER.encode()).digest()
    assert urlsafe_b64encode(digest).rstrip(b"=").decode() == CHALLENGE


def test_code_flow_gives_tokens_with_the_sessions_claims(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        mfa = Subject("alice", START - 50, ("password", "otp"), "sid-1")
        code = await code_for(p, user=mfa)
        answer = await exchange(p, code)
        assert answer.status == 200
        assert answer.headers["Cache-Control"] == "no-store"
        tokens = body(answer)
        assert tokens["token_type"] == "Bearer"
        assert tokens["scope"] == "openid profile"
        id_claims = verify(
            tokens["id_token"], KEYS.public(), typ=None, issuer=ISSUER, audience="app1", now=START
        )
        assert id_claims["sub"] == "alice"
        assert id_claims["nonce"] == "n-1"
        assert id_claims["auth_time"] == START - 50
        assert id_claims["amr"] == ["password", "otp"]
        assert id_claims["acr"] == "mfa"
        assert id_claims["sid"] == "sid-1"
        half = hashlib.sha256(tokens["access_token"].encode()).digest()[:16]
        assert id_claims["at_hash"] == urlsafe_b64encode(half).rstrip(b"=").decode()
        at = verify(
            tokens["access_token"],
            KEYS.public(),
            typ=ACCESS_TOKEN_TYP,
            issuer=ISSUER,
            audience=ISSUER,
            now=START,
        )
        assert (at["sub"], at["client_id"], at["scope"]) == ("alice", "app1", "openid profile")
        assert at["exp"] == START + 600
        assert at["jti"]

    with_env(oauth2_db, go)


def test_public_client_with_pkce_and_client_secret_post(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        assert (await exchange(p, await code_for(p, SPA), SPA)).status == 200
        assert (await exchange(p, await code_for(p, APP2), APP2)).status == 200
        # PKCE is accepted, not required, for a confidential client
        code = await code_for(p, APP1, code_challenge="", code_challenge_method="")
        assert (await exchange(p, code, APP1, verifier=None)).status == 200

    with_env(oauth2_db, go)


def test_authorize_asks_for_login_then_consent_then_remembers_it(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        query = auth_query(APP1, scope="openid email")
        assert await p.authorize(query, None, None, "x") == Login(("password",), False)
        consent = await p.authorize(query, ALICE, None, "x")
        assert consent == Consent("App One", ("openid", "email"))
        assert outcome_dict(consent) == {
            "kind": "consent",
            "client_name": "App One",
            "scopes": ["openid", "email"],
        }
        denied = await p.authorize(query, ALICE, "denied", "x")
        assert isinstance(denied, Redirect)
        assert query_of(denied.location) == {
            "error": "access_denied",
            "error_description": "The user denied the request",
            "state": "st-1",
            "iss": ISSUER,
        }
        assert isinstance(await p.authorize(query, ALICE, "granted", "x"), Redirect)
        # remembered: no consent page the next time, for these scopes or fewer
        assert isinstance(await p.authorize(query, ALICE, None, "y"), Redirect)
        narrower = auth_query(APP1, scope="openid")
        assert isinstance(await p.authorize(narrower, ALICE, None, "z"), Redirect)
        wider = auth_query(APP1, scope="openid email groups")
        assert isinstance(await p.authorize(wider, ALICE, None, "w"), Consent)
        forced = auth_query(APP1, scope="openid", prompt="consent")
        assert isinstance(await p.authorize(forced, ALICE, None, "v"), Consent)
        # revoked: asked again
        assert [c.client_id for c in await p.consents("alice")] == ["app1"]
        assert await p.revoke_consent("alice", "app1")
        assert await p.consents("alice") == []
        assert isinstance(await p.authorize(query, ALICE, None, "u"), Consent)

    with_env(oauth2_db, go)


def test_prompt_max_age_and_acr_values(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        login = await p.authorize(auth_query(APP2, prompt="login"), ALICE, None, "a")
        assert login == Login(("password",), True)
        after = await p.authorize(auth_query(APP2, prompt="login"), ALICE, None, "a", fresh=True)
        assert isinstance(after, Redirect)
        old = await p.authorize(auth_query(APP2, max_age="60"), ALICE, None, "b")
        assert old == Login(("password",), True)
        assert isinstance(
            await p.authorize(auth_query(APP2, max_age="600"), ALICE, None, "c"), Redirect
        )
        mfa = await p.authorize(auth_query(APP2, acr_values="mfa"), ALICE, None, "d")
        assert mfa == Login(("otp", "email_otp", "sms_otp"), False)
        stepped = Subject("alice", START, ("password", "email_otp"), "s")
        assert isinstance(
            await p.authorize(auth_query(APP2, acr_values="mfa"), stepped, None, "e"), Redirect
        )

    with_env(oauth2_db, go)


def test_prompt_none_answers_errors_to_the_client(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        cases = [
            (auth_query(APP2, prompt="none"), None, "login_required"),
            (auth_query(APP2, prompt="none", max_age="10"), ALICE, "login_required"),
            (auth_query(APP2, prompt="none", acr_values="mfa"), ALICE, "login_required"),
            (auth_query(APP1, prompt="none"), ALICE, "consent_required"),
        ]
        for query, user, error in cases:
            outcome = await p.authorize(query, user, None, "p")
            assert isinstance(outcome, Redirect), (query, outcome)
            assert outcome.location.startswith(query["redirect_uri"] + "?")
            params = query_of(outcome.location)
            assert (params["error"], params["state"], params["iss"]) == (error, "st-1", ISSUER)
        silent = await p.authorize(auth_query(APP2, prompt="none"), ALICE, None, "q")
        assert isinstance(silent, Redirect)
        assert "code" in query_of(silent.location)

    with_env(oauth2_db, go)


def test_a_retry_of_the_same_attempt_replaces_the_lost_code(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        first = await code_for(p, attempt="same")
        second = await code_for(p, attempt="same")
        assert first != second
        assert body(await exchange(p, first))["error"] == "invalid_grant"
        assert (await exchange(p, second)).status == 200

    with_env(oauth2_db, go)


def test_refresh_rotates_and_narrows(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        tokens = body(await exchange(p, await code_for(p, scope="openid profile email")))
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        answer = await post(p, "token", form, basic("app1"))
        assert answer.status == 200
        new = body(answer)
        assert new["refresh_token"] != tokens["refresh_token"]
        assert new["scope"] == "openid profile email"
        assert "id_token" not in new
        narrower = {"grant_type": "refresh_token", "refresh_token": new["refresh_token"]}
        answer = await post(p, "token", {**narrower, "scope": "openid"}, basic("app1"))
        assert body(answer)["scope"] == "openid"

    with_env(oauth2_db, go)


def test_client_credentials(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        answer = await post(p, "token", {"grant_type": "client_credentials"}, basic("svc"))
        tokens = body(answer)
        assert answer.status == 200
        assert "refresh_token" not in tokens
        assert tokens["scope"] == "api.read api.write"
        form = {"grant_type": "client_credentials", "scope": "api.read"}
        assert body(await post(p, "token", form, basic("svc")))["scope"] == "api.read"
        form = {"grant_type": "client_credentials", "scope": "api.admin"}
        assert body(await post(p, "token", form, basic("svc")))["error"] == "invalid_scope"
        # a client not allowed the grant
        answer = await post(p, "token", {"grant_type": "client_credentials"}, basic("app1"))
        assert (answer.status, body(answer)["error"]) == (400, "unauthorized_client")
        info = await p.bearer(tokens["access_token"])
        assert (info.active, info.client_id, info.username) == (True, "svc", None)

    with_env(oauth2_db, go)


def test_introspection_and_revocation(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        tokens = body(await exchange(p, await code_for(p)))
        access, refresh = tokens["access_token"], tokens["refresh_token"]
        seen = body(await post(p, "introspect", {"token": access}, basic("svc")))
        assert seen["active"] is True
        assert (seen["client_id"], seen["username"], seen["scope"]) == (
            "app1",
            "alice",
            "openid profile",
        )
        assert seen["exp"] == START + 600
        assert seen["token_type"] == "Bearer"
        seen = body(await post(p, "introspect", {"token": refresh}, basic("svc")))
        assert seen["active"] is True
        assert seen["token_type"] == "refresh_token"
        assert body(await post(p, "introspect", {"token": "nonsense"}, basic("svc"))) == {
            "active": False
        }
        # introspection needs a confidential client's authentication
        answer = await post(p, "introspect", {"token": access})
        assert (answer.status, body(answer)["error"]) == (401, "invalid_client")
        answer = await post(p, "introspect", {"token": access, "client_id": "spa"})
        assert body(answer)["error"] == "invalid_client"
        # expired
        env.clock.now = START + 601
        assert body(await post(p, "introspect", {"token": access}, basic("svc")))["active"] is False
        env.clock.now = START
        # another client cannot revoke it; the owner can, and the family goes
        answer = await post(p, "revoke", {"token": refresh}, basic("app2"))
        assert (answer.status, body(answer)["error"]) == (400, "invalid_grant")
        assert body(await post(p, "introspect", {"token": access}, basic("svc")))["active"]
        answer = await post(
            p, "revoke", {"token": refresh, "token_type_hint": "refresh_token"}, basic("app1")
        )
        assert answer.status == 200
        assert body(await post(p, "introspect", {"token": access}, basic("svc")))["active"] is False
        assert not (await p.bearer(access)).active
        # an unknown token is answered 200 (RFC 7009 §2.2)
        assert (await post(p, "revoke", {"token": "unknown"}, basic("app1"))).status == 200

    with_env(oauth2_db, go)


def test_userinfo_claims_by_scope(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        tokens = body(await exchange(p, await code_for(p, scope="openid profile email groups")))
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        answer = await p.endpoint("userinfo", "GET", bearer, "")
        assert answer.status == 200
        assert answer.headers["Cache-Control"] == "no-store"
        assert body(answer) == {
            "sub": "alice",
            "preferred_username": "alice",
            "name": "Alice Liddell",
            "email": "alice@example.org",
            "groups": ["staff", "admins"],
        }
        tokens = body(await exchange(p, await code_for(p, scope="openid", attempt="2")))
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert body(await p.endpoint("userinfo", "GET", bearer, "")) == {"sub": "alice"}
        answer = await p.endpoint("userinfo", "GET", {}, "")
        assert (answer.status, answer.headers["WWW-Authenticate"]) == (401, "Bearer")
        answer = await p.endpoint("userinfo", "GET", {"Authorization": "Bearer x.y.z"}, "")
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        cc = body(await post(p, "token", {"grant_type": "client_credentials"}, basic("svc")))
        answer = await p.endpoint(
            "userinfo", "GET", {"Authorization": f"Bearer {cc['access_token']}"}, ""
        )
        assert answer.status == 401

    with_env(oauth2_db, go)


def test_session_end_revokes_its_tokens_and_id_token_hint(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        tokens = body(await exchange(p, await code_for(p)))
        hint = await p.check_id_token_hint(tokens["id_token"], "app1")
        assert hint is not None
        assert (hint.client_id, hint.sid, hint.username) == (
            "app1",
            "sid-alice",
            "alice",
        )
        assert await p.check_id_token_hint(tokens["id_token"], "app2") is None
        assert await p.check_id_token_hint(tokens["access_token"], "app1") is None
        env.clock.now = START + 10_000  # expired hints are still accepted for logout
        assert await p.check_id_token_hint(tokens["id_token"]) == hint
        env.clock.now = START
        assert await p.session_ended("sid-alice") == 1
        assert not (await p.bearer(tokens["access_token"])).active
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        assert body(await post(p, "token", form, basic("app1")))["error"] == "invalid_grant"

    with_env(oauth2_db, go)


def test_unknown_endpoint_and_method(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        answer = await p.endpoint("token", "GET", {}, "")
        assert (answer.status, answer.headers["Allow"]) == (405, "POST")
        assert (await p.endpoint("nope", "POST", {}, "")).status == 404
        assert isinstance(await p.authorize({}, ALICE, None, "x"), ErrorPage)
        for attempt in ("", "a" * 129):
            with pytest.raises(ValueError, match="attempt"):
                await p.authorize(auth_query(APP1), ALICE, None, attempt)

    with_env(oauth2_db, go)


def test_a_new_configuration_version_replaces_clients_and_keys(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        tokens = body(await exchange(p, await code_for(p)))
        keys = SigningKeys.generate()
        p.configure(ProviderConfig(SETTINGS, {"spa": SPA}, keys))
        assert {k["kid"] for k in p.jwks()["keys"]} == set(keys.keys)
        outcome = await p.authorize(auth_query(APP1), ALICE, "granted", "gone")
        assert isinstance(outcome, ErrorPage)
        assert outcome.error == "invalid_client"
        # tokens signed by a key no longer published are not accepted
        assert not (await p.bearer(tokens["access_token"])).active
        assert (await exchange(p, await code_for(p, SPA), SPA)).status == 200

    with_env(oauth2_db, go)

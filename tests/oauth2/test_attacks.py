"""Issue 17's "Bad input and attacks" that live in the protocol core, each answered as the
RFCs say: an error page (never a redirect) for a bad client or redirect URI, a redirect with
``error`` (and ``iss``) after the redirect URI is validated, JSON ``error`` otherwise."""

from __future__ import annotations

import pytest

from gatehouse.oauth2.authorize import ErrorPage, Redirect
from tests.oauth2.harness import (
    ALICE,
    APP1,
    ISSUER,
    SECRETS,
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


@pytest.mark.parametrize(
    ("redirect_uri", "client_id", "error"),
    [
        ("https://app1.example/cb/../evil", "app1", "invalid_request"),
        ("https://app1.example/cb/more", "app1", "invalid_request"),  # a prefix match
        ("https://app1.example/c", "app1", "invalid_request"),
        ("https://app1.example/cb?x=1", "app1", "invalid_request"),
        ("https://APP1.example/cb", "app1", "invalid_request"),
        ("https://evil.example/cb", "app1", "invalid_request"),
        ("https://app2.example/cb", "app1", "invalid_request"),  # another client's
        ("https://app1.example/cb", "nobody", "invalid_client"),
    ],
)
def test_bad_client_or_redirect_uri_gets_an_error_page_never_a_redirect(
    oauth2_db: str, redirect_uri: str, client_id: str, error: str
) -> None:
    async def go(env: Env) -> None:
        query = {**auth_query(APP1), "redirect_uri": redirect_uri, "client_id": client_id}
        for user in (None, ALICE):
            outcome = await env.provider.authorize(query, user, "granted", "a")
            assert isinstance(outcome, ErrorPage), outcome
            assert (outcome.status, outcome.error) == (400, error)
        # prompt=none must not turn it into a redirect either
        outcome = await env.provider.authorize({**query, "prompt": "none"}, None, None, "a")
        assert isinstance(outcome, ErrorPage)

    with_env(oauth2_db, go)


def test_errors_after_the_redirect_uri_is_valid_are_redirects_with_iss(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        cases = [
            (auth_query(APP1, scope="openid admin"), "invalid_scope"),
            (auth_query(APP1, response_type="token"), "unsupported_response_type"),
            (auth_query(APP1, code_challenge_method="plain"), "invalid_request"),
            (auth_query(APP1, code_challenge_method=""), "invalid_request"),  # plain by default
            (
                auth_query(APP1, code_challenge="short", code_challenge_method="S256"),
                "invalid_request",
            ),
            (auth_query(SPA, code_challenge="", code_challenge_method=""), "invalid_request"),
        ]
        for query, error in cases:
            outcome = await p.authorize(query, ALICE, "granted", "a")
            assert isinstance(outcome, Redirect), (query, outcome)
            assert outcome.location.startswith(query["redirect_uri"] + "?")
            params = query_of(outcome.location)
            assert (params["error"], params["state"], params["iss"]) == (error, "st-1", ISSUER)
            assert "code" not in params

    with_env(oauth2_db, go)


def test_plain_pkce_is_refused(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        query = auth_query(SPA, code_challenge=VERIFIER, code_challenge_method="plain")
        outcome = await env.provider.authorize(query, ALICE, "granted", "a")
        assert isinstance(outcome, Redirect)
        params = query_of(outcome.location)
        assert params["error"] == "invalid_request"
        assert "S256" in params["error_description"]

    with_env(oauth2_db, go)


def test_missing_or_wrong_pkce_verifier(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        missing = await exchange(p, await code_for(p, SPA, attempt="1"), SPA, verifier=None)
        assert (missing.status, body(missing)["error"]) == (400, "invalid_request")
        assert missing.headers["Cache-Control"] == "no-store"
        wrong = await exchange(p, await code_for(p, SPA, attempt="2"), SPA, verifier="x" * 43)
        assert (wrong.status, body(wrong)["error"]) == (400, "invalid_grant")
        # a verifier for a code issued without a challenge (RFC 9700 §4.8.2)
        code = await code_for(p, APP1, attempt="3", code_challenge="", code_challenge_method="")
        answer = await exchange(p, code, APP1, verifier=VERIFIER)
        assert body(answer)["error"] == "invalid_request"
        # confidential client, challenge sent, verifier missing
        answer = await exchange(p, await code_for(p, APP1, attempt="4"), APP1, verifier=None)
        assert body(answer)["error"] == "invalid_request"

    with_env(oauth2_db, go)


def test_a_reused_code_is_refused_and_revokes_the_first_uses_tokens(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        code = await code_for(p)
        first = body(await exchange(p, code))
        assert (await p.bearer(first["access_token"])).active
        again = await exchange(p, code)
        assert (again.status, body(again)["error"]) == (400, "invalid_grant")
        assert not (await p.bearer(first["access_token"])).active
        form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        assert body(await post(p, "token", form, basic("app1")))["error"] == "invalid_grant"

    with_env(oauth2_db, go)


def test_an_expired_code_is_refused(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        code = await code_for(env.provider)
        env.clock.now = START + 61
        answer = await exchange(env.provider, code)
        assert (answer.status, body(answer)["error"]) == (400, "invalid_grant")

    with_env(oauth2_db, go)


def test_a_code_of_another_client_is_refused(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        code = await code_for(p, APP1)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": APP1.redirect_uris[0],
            "code_verifier": VERIFIER,
        }
        answer = await post(p, "token", form, basic("app1"))
        assert answer.status == 200  # sanity: the form is right for its own client
        code = await code_for(p, APP1, attempt="b")
        form["code"] = code
        stolen = await post(
            p, "token", {**form, "client_id": "app2", "client_secret": SECRETS["app2"]}
        )
        assert (stolen.status, body(stolen)["error"]) == (400, "invalid_grant")
        public = await post(p, "token", {**form, "client_id": "spa"})
        assert body(public)["error"] == "invalid_grant"
        # the code still works for its client: another client's attempt does not burn it
        assert (await exchange(p, code)).status == 200

    with_env(oauth2_db, go)


def test_a_wrong_redirect_uri_at_the_token_endpoint(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        form = {
            "grant_type": "authorization_code",
            "code": await code_for(p),
            "redirect_uri": "https://app1.example/other",
            "code_verifier": VERIFIER,
        }
        assert body(await post(p, "token", form, basic("app1")))["error"] == "invalid_grant"

    with_env(oauth2_db, go)


def test_wrong_client_secret_or_method(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        code = await code_for(p)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": APP1.redirect_uris[0],
            "code_verifier": VERIFIER,
        }
        answer = await post(p, "token", form, basic("app1", "wrong"))
        assert (answer.status, body(answer)["error"]) == (401, "invalid_client")
        assert answer.headers["WWW-Authenticate"].startswith('Basic error="invalid_client"')
        assert answer.headers["Cache-Control"] == "no-store"
        # no authentication at all for a confidential client
        answer = await post(p, "token", {**form, "client_id": "app1"})
        assert body(answer)["error"] == "invalid_client"
        # app1 registered client_secret_basic: client_secret_post is refused
        secret = {"client_id": "app1", "client_secret": SECRETS["app1"]}
        assert body(await post(p, "token", {**form, **secret}))["error"] == "invalid_client"
        # the failures did not burn the code
        assert (await exchange(p, code)).status == 200
        answer = await post(p, "token", {"grant_type": "client_credentials"}, basic("svc", "x"))
        assert answer.status == 401

    with_env(oauth2_db, go)


def test_scope_escalation_on_refresh_is_refused(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        tokens = body(await exchange(p, await code_for(p, scope="openid")))
        form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        answer = await post(p, "token", {**form, "scope": "openid email"}, basic("app1"))
        assert (answer.status, body(answer)["error"]) == (400, "invalid_scope")
        # the refused attempt did not use the refresh token
        assert (await post(p, "token", form, basic("app1"))).status == 200

    with_env(oauth2_db, go)


def test_refresh_reuse_revokes_the_family(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        first = body(await exchange(p, await code_for(p)))
        form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        second = body(await post(p, "token", form, basic("app1")))
        assert (await p.bearer(second["access_token"])).active
        replay = await post(p, "token", form, basic("app1"))
        assert (replay.status, body(replay)["error"]) == (400, "invalid_grant")
        assert not (await p.bearer(second["access_token"])).active
        assert not (await p.bearer(first["access_token"])).active
        newer = {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
        assert body(await post(p, "token", newer, basic("app1")))["error"] == "invalid_grant"
        # a refresh token of another client is refused without touching it
        other = body(await exchange(p, await code_for(p, attempt="o")))
        form = {"grant_type": "refresh_token", "refresh_token": other["refresh_token"]}
        secret = {"client_id": "app2", "client_secret": SECRETS["app2"]}
        assert body(await post(p, "token", {**form, **secret}))["error"] == "invalid_grant"
        assert (await post(p, "token", form, basic("app1"))).status == 200

    with_env(oauth2_db, go)


def test_repeated_parameters_are_refused(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        body_text = "grant_type=client_credentials&scope=api.read&scope=api.write"
        headers = {"Content-Type": "application/x-www-form-urlencoded", **basic("svc")}
        answer = await p.endpoint("token", "POST", headers, body_text)
        assert (answer.status, body(answer)["error"]) == (400, "invalid_request")

    with_env(oauth2_db, go)


def test_unsupported_grant_type(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        form = {"grant_type": "password", "username": "alice", "password": "x"}
        answer = await post(env.provider, "token", form, basic("app1"))
        assert (answer.status, body(answer)["error"]) == (400, "unsupported_grant_type")

    with_env(oauth2_db, go)


def test_unprintable_or_quoting_values_are_refused_cleanly(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        for value in (
            "https://app1.example/cb\x00",
            'https://app1.example/"cb',
            "https://é.example",
        ):
            query = {**auth_query(APP1), "redirect_uri": value}
            outcome = await p.authorize(query, ALICE, "granted", "a")
            assert isinstance(outcome, ErrorPage), (value, outcome)
            assert outcome.error == "invalid_request"
        form = {"grant_type": "client_credentials", "scope": "api.read\x07"}
        answer = await post(p, "token", form, basic("svc"))
        assert (answer.status, body(answer)["error"]) == (400, "invalid_request")
        assert body(answer)["error_description"] == "scope: not printable ASCII"
        form = {"grant_type": 'client"credentials'}
        answer = await post(p, "token", form, basic("svc"))
        assert (answer.status, body(answer)["error"]) == (400, "unsupported_grant_type")

    with_env(oauth2_db, go)

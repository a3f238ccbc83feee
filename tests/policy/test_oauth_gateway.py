"""The OpenID Provider end to end, through a real Access Point, Policy and Authentication
service (real processes on loopback), the client configured in the services' files:
discovery at the issuer's root (relayed by the AP), the portal's sign-in and consent, a code
exchanged with PKCE, the ID token checked against the published key set, UserInfo, a bearer
token let through to a proxied API by ``token_scopes_any``, refresh rotation (and reuse
refused), and RP-initiated logout that ends the Gatehouse session and the session's refresh
tokens, returning only to a registered ``post_logout_redirect_uri``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from gatehouse.authentication.oauth_service import KEYS_FILE
from gatehouse.oath.otp import totp
from gatehouse.oauth2.clients import new_secret
from gatehouse.oauth2.keys import SigningKeys, generate_key
from tests.support.gateway import (
    Browser,
    Gateway,
    Response,
    add_user,
    gatehouse_cli,
    start_gateway,
)
from tests.support.processes import free_port

PASSWORD = "correct horse battery staple"
P = "/_gatehouse/"
CLIENT = "app1"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
OTP_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # RFC 6238's SHA-1 seed, base32


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("oauth-gateway")
    home = tmp / "home"
    home.mkdir()
    made = [generate_key("ES256"), generate_key("RS256")]
    (home / KEYS_FILE).write_text(
        json.dumps({"keys": made, "current": {k["alg"]: k["kid"] for k in made}})
    )
    (home / KEYS_FILE).chmod(0o600)
    jwks = SigningKeys.from_jwks(made, {k["alg"]: k["kid"] for k in made}).jwks()
    ap_port = free_port()
    issuer = f"http://127.0.0.1:{ap_port}"
    secret, secret_hash = new_secret()
    redirect_uri = "http://127.0.0.1:9/cb"
    bye = "http://127.0.0.1:9/bye"
    client = {
        "client_id": CLIENT,
        "name": "App One",
        "secret_hash": secret_hash,
        "redirect_uris": [redirect_uri],
        "post_logout_redirect_uris": [bye],
        "scopes": ["openid", "profile", "email", "api.read"],
    }
    gw = start_gateway(
        tmp,
        {
            "resources": {"demo": "authenticated", "api": {"token_scopes_any": ["api.read"]}},
            "oauth": {
                "issuer": issuer,
                "clients": [
                    {k: client[k] for k in ("client_id", "name", "redirect_uris")}
                    | {"post_logout_redirect_uris": [bye]}
                ],
                "scopes": client["scopes"],
                "jwks": jwks,
            },
        },
        [{"id": "api", "path_prefix": "/api/"}, {"id": "demo", "path_prefix": "/"}],
        auth_extra={"oauth": {"issuer": issuer, "clients": [client]}},
        ap_settings={"decision_headers": ["Authorization"]},
        ap_ports=[ap_port],
    )
    try:
        add_user(gw.home, "alice", PASSWORD)
        add_user(gw.home, "bob", PASSWORD)
        added = gatehouse_cli(gw.home, "tokens", "add", "bob", "--secret", OTP_SECRET)
        assert added.returncode == 0, added.stderr
        yield {
            "gateway": gw,
            "issuer": issuer,
            "secret": secret,
            "redirect_uri": redirect_uri,
            "bye": bye,
            "jwks": jwks,
        }
    finally:
        gw.stop()


def _field(page: bytes, name: str) -> str:
    match = re.search(rb'name="' + name.encode() + rb'" value="([^"]*)"', page)
    assert match, page[:800]
    return html.unescape(match.group(1).decode())


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _basic(secret: str) -> dict[str, str]:
    raw = f"{quote(CLIENT, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def _token(browser: Browser, secret: str, form: dict[str, str]) -> Response:
    return browser.request(
        "POST", f"{P}oauth2/token", urlencode(form).encode(), {**FORM, **_basic(secret)}
    )


def _sign_in_and_authorize(
    browser: Browser, provider: dict[str, Any], nonce: str, state: str
) -> tuple[str, str]:
    """Authorize with PKCE as a browser would: sign in, allow; the code and its verifier."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT,
            "redirect_uri": provider["redirect_uri"],
            "scope": "openid profile email api.read",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    first = browser.get(f"{P}oauth2/authorize?{query}")
    assert first.status == 303, first.body[:400]
    login = urlsplit(first.location)
    assert login.path == f"{P}login", first.location
    rd = parse_qs(login.query)["rd"][0]
    assert rd.startswith(f"{P}oauth2/authorize?")
    signed_in = browser.login("alice", PASSWORD, rd=rd)
    assert signed_in.status == 303
    assert signed_in.location == rd
    consent = browser.get(rd)
    assert consent.status == 200, consent.body[:400]
    assert b"App One" in consent.body
    assert consent.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in consent.headers["content-security-policy"]
    form = {
        "csrf": _field(consent.body, "csrf"),
        "attempt": _field(consent.body, "attempt"),
        "request": _field(consent.body, "request"),
        "decision": "allow",
    }
    back = browser.request("POST", f"{P}oauth2/consent", urlencode(form).encode(), FORM)
    assert back.status == 303, back.body[:400]
    assert back.location.startswith(provider["redirect_uri"] + "?")
    answer = parse_qs(urlsplit(back.location).query)
    assert answer["state"] == [state]
    assert answer["iss"] == [provider["issuer"]]  # RFC 9207
    return answer["code"][0], verifier


def test_the_whole_flow_through_the_access_point(provider: dict[str, Any]) -> None:
    gateway: Gateway = provider["gateway"]
    browser = gateway.browser()
    issuer, secret = provider["issuer"], provider["secret"]

    # Discovery at the issuer's root, both documents, relayed by the Access Point.
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        found = browser.get(path)
        assert found.status == 200, (path, found.body[:300])
        meta = found.json()
        assert meta["issuer"] == issuer
        assert meta["authorization_endpoint"] == f"{issuer}{P}oauth2/authorize"
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["authorization_response_iss_parameter_supported"] is True
    keys = browser.get(_path(meta["jwks_uri"]))
    assert keys.status == 200
    assert keys.json() == provider["jwks"]
    assert all("d" not in key for key in keys.json()["keys"])
    assert keys.headers["access-control-allow-origin"] == "*"
    assert found.headers["access-control-allow-origin"] == "*"
    key_set = KeySet.import_key_set(keys.json())

    # No bearer token, or a made-up one: the API refuses.
    assert browser.get("/api/x").status == 403
    assert browser.get("/api/x", headers={"Authorization": "Bearer nonsense"}).status == 403

    nonce, state = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    code, verifier = _sign_in_and_authorize(browser, provider, nonce, state)

    tokens = _token(
        browser,
        secret,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider["redirect_uri"],
            "code_verifier": verifier,
        },
    )
    assert tokens.status == 200, tokens.body
    assert tokens.headers.get("cache-control") == "no-store"
    issued = tokens.json()
    assert issued["token_type"].lower() == "bearer"

    # The ID token: signed by a published key (kid), for this client, with the nonce.
    header = json.loads(base64.urlsafe_b64decode(issued["id_token"].split(".")[0] + "=="))
    assert header["kid"] in {k["kid"] for k in provider["jwks"]["keys"]}
    id_token = jwt.decode(issued["id_token"], key_set)
    claims = id_token.claims
    assert claims["iss"] == issuer
    assert claims["sub"] == "alice"
    assert claims["aud"] in (CLIENT, [CLIENT])
    assert claims["nonce"] == nonce
    assert "password" in claims["amr"]
    assert claims["auth_time"] <= time.time() + 5
    assert claims["sid"]

    # The code a second time: refused.
    again = _token(
        browser,
        secret,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider["redirect_uri"],
            "code_verifier": verifier,
        },
    )
    assert again.status == 400
    assert again.json()["error"] == "invalid_grant"
    # (Reusing the code revoked what its first use issued: refresh with a fresh flow below.)

    code, verifier = _sign_in_and_authorize_again(browser, provider)
    issued = _token(
        browser,
        secret,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider["redirect_uri"],
            "code_verifier": verifier,
        },
    ).json()
    bearer = {"Authorization": f"Bearer {issued['access_token']}"}

    info = browser.get(f"{P}oauth2/userinfo", headers=bearer)
    assert info.status == 200, info.body
    assert info.json()["sub"] == "alice"

    # A proxied API takes the bearer token (token_scopes_any: [api.read]).
    api = browser.get("/api/x", headers=bearer)
    assert api.status == 200, api.body[:300]
    assert api.json()["headers"]  # the demo backend's echo

    # Refresh: rotated; the old refresh token a second time is refused.
    refreshed = _token(
        browser, secret, {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    )
    assert refreshed.status == 200, refreshed.body
    fresh = refreshed.json()
    assert fresh["refresh_token"] != issued["refresh_token"]
    assert (
        _token(
            browser,
            secret,
            {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        ).json()["error"]
        == "invalid_grant"
    )

    # A new family for logout (the reuse above revoked that one).
    code, verifier = _sign_in_and_authorize_again(browser, provider)
    issued = _token(
        browser,
        secret,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider["redirect_uri"],
            "code_verifier": verifier,
        },
    ).json()
    assert browser.get("/").status == 200  # the Gatehouse session works for proxied resources

    # RP-initiated logout to an unregistered URI: an error page, never a redirect.
    bad = browser.get(
        f"{P}oauth2/end_session?"
        + urlencode(
            {
                "id_token_hint": issued["id_token"],
                "post_logout_redirect_uri": "https://evil.example/",
            }
        )
    )
    assert bad.status == 400
    assert "location" not in bad.headers
    assert browser.get("/").status == 200  # still signed in

    ended = browser.get(
        f"{P}oauth2/end_session?"
        + urlencode(
            {
                "id_token_hint": issued["id_token"],
                "post_logout_redirect_uri": provider["bye"],
                "state": "s1",
            }
        )
    )
    assert ended.status == 303, ended.body[:300]
    assert ended.location == provider["bye"] + "?state=s1"
    # The Gatehouse session is over for the Access Point (its cache within a second).
    deadline = time.monotonic() + 3
    while browser.get("/").status == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser.get("/").status == 303
    # And the refresh tokens bound to it died with it (revoked in the background).
    deadline = time.monotonic() + 3
    while True:
        late = _token(
            browser,
            secret,
            {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        )
        if late.status == 400 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert late.status == 400, late.body
    assert late.json()["error"] == "invalid_grant"


def _sign_in_and_authorize_again(browser: Browser, provider: dict[str, Any]) -> tuple[str, str]:
    """Authorize again: signed in if need be; no consent page while it is remembered."""
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT,
            "redirect_uri": provider["redirect_uri"],
            "scope": "openid profile email api.read",
            "state": "again",
            "nonce": "n",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    answer = browser.get(f"{P}oauth2/authorize?{query}")
    if answer.status == 303 and urlsplit(answer.location).path == f"{P}login":
        rd = parse_qs(urlsplit(answer.location).query)["rd"][0]
        browser.login("alice", PASSWORD, rd=rd)
        answer = browser.get(rd)
    if answer.status == 200 and b'name="decision"' in answer.body:  # consent withdrawn meanwhile
        form = {name: _field(answer.body, name) for name in ("csrf", "attempt", "request")} | {
            "decision": "allow"
        }
        answer = browser.request("POST", f"{P}oauth2/consent", urlencode(form).encode(), FORM)
    assert answer.status == 303, answer.body[:400]
    assert answer.location.startswith(provider["redirect_uri"] + "?"), answer.location
    return parse_qs(urlsplit(answer.location).query)["code"][0], verifier


def test_a_redirect_uri_not_registered_gets_an_error_page(provider: dict[str, Any]) -> None:
    browser = provider["gateway"].browser()
    for uri in ("https://evil.example/cb", provider["redirect_uri"] + "/x"):
        query = urlencode(
            {
                "response_type": "code",
                "client_id": CLIENT,
                "redirect_uri": uri,
                "scope": "openid",
                "code_challenge": "x" * 43,
                "code_challenge_method": "S256",
            }
        )
        page = browser.get(f"{P}oauth2/authorize?{query}")
        assert page.status == 400, (uri, page.status, page.body[:300])
        assert "location" not in page.headers
        assert page.headers["x-frame-options"] == "DENY"


def test_the_access_point_relays_only_the_exact_discovery_paths(
    provider: dict[str, Any],
) -> None:
    browser = provider["gateway"].browser()
    # A longer path is not the portal's: it goes to the resources (the demo backend).
    other = browser.get("/.well-known/openid-configuration/x")
    assert other.status == 303  # "demo" is a protected resource: sign in first
    assert browser.get("/.well-known/openid-configuration").status == 200


def _authorize_query(provider: dict[str, Any], **extra: str) -> str:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    params = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": provider["redirect_uri"],
        "scope": "openid profile",
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return urlencode(params)


def test_prompt_none_without_a_session_goes_back_with_login_required(
    provider: dict[str, Any],
) -> None:
    browser = provider["gateway"].browser()
    answer = browser.get(f"{P}oauth2/authorize?{_authorize_query(provider, prompt='none')}")
    assert answer.status == 303
    back = parse_qs(urlsplit(answer.location).query)
    assert answer.location.startswith(provider["redirect_uri"] + "?")
    assert back["error"] == ["login_required"]
    assert back["state"] == ["st"]
    assert back["iss"] == [provider["issuer"]]


def test_consent_needs_the_form_token_and_a_denial_goes_back_as_access_denied(
    provider: dict[str, Any],
) -> None:
    browser = provider["gateway"].browser()
    first = browser.get(f"{P}oauth2/authorize?{_authorize_query(provider, prompt='consent')}")
    rd = parse_qs(urlsplit(first.location).query)["rd"][0]
    browser.login("alice", PASSWORD, rd=rd)
    consent = browser.get(rd)
    assert consent.status == 200, consent.body[:300]
    form = {
        "csrf": _field(consent.body, "csrf"),
        "attempt": _field(consent.body, "attempt"),
        "request": _field(consent.body, "request"),
        "decision": "allow",
    }
    forged = browser.request(
        "POST", f"{P}oauth2/consent", urlencode({**form, "csrf": "x" * 43}).encode(), FORM
    )
    assert forged.status == 403
    assert "location" not in forged.headers
    cross_site = browser.request(
        "POST",
        f"{P}oauth2/consent",
        urlencode(form).encode(),
        {**FORM, "Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status == 403
    denied = browser.request(
        "POST", f"{P}oauth2/consent", urlencode({**form, "decision": "deny"}).encode(), FORM
    )
    assert denied.status == 303
    back = parse_qs(urlsplit(denied.location).query)
    assert back["error"] == ["access_denied"]
    assert back["iss"] == [provider["issuer"]]


def test_a_wrong_client_secret_is_refused(provider: dict[str, Any]) -> None:
    browser = provider["gateway"].browser()
    answer = _token(
        browser,
        "not-the-secret",
        {"grant_type": "authorization_code", "code": "x", "redirect_uri": provider["redirect_uri"]},
    )
    assert answer.status == 401
    assert answer.json()["error"] == "invalid_client"


def test_the_portal_sign_out_revokes_the_session_refresh_tokens(provider: dict[str, Any]) -> None:
    browser = provider["gateway"].browser()
    code, verifier = _sign_in_and_authorize_again(browser, provider)
    issued = _token(
        browser,
        provider["secret"],
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider["redirect_uri"],
            "code_verifier": verifier,
        },
    ).json()
    page = browser.get(f"{P}logout")
    out = browser.request(
        "POST", f"{P}logout", urlencode({"csrf": _field(page.body, "csrf")}).encode(), FORM
    )
    assert out.status == 200
    deadline = time.monotonic() + 3
    while True:
        late = _token(
            browser,
            provider["secret"],
            {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        )
        if late.status != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert late.status == 400, late.body
    assert late.json()["error"] == "invalid_grant"


def test_end_session_without_a_hint_asks_first_and_the_consents_page_revokes(
    provider: dict[str, Any],
) -> None:
    browser = provider["gateway"].browser()
    _sign_in_and_authorize_again(browser, provider)
    listed = browser.get(f"{P}oauth2/consents")
    assert listed.status == 200
    assert b"App One" in listed.body
    assert listed.headers["x-frame-options"] == "DENY"

    ask = browser.get(f"{P}oauth2/end_session?client_id={CLIENT}")
    assert ask.status == 200, ask.body[:300]
    assert b"Sign out" in ask.body
    assert browser.get("/").status == 200  # nothing ended by a GET without a hint
    # Consent withdrawn: the next authorization asks again.
    revoked = browser.request(
        "POST",
        f"{P}oauth2/consents",
        urlencode({"csrf": _field(listed.body, "csrf"), "client_id": CLIENT}).encode(),
        FORM,
    )
    assert revoked.status == 303
    again = browser.get(f"{P}oauth2/authorize?{_authorize_query(provider)}")
    assert again.status == 200
    assert b"Allow" in again.body

    ask = browser.get(f"{P}oauth2/end_session?client_id={CLIENT}")
    fields = {
        "csrf": _field(ask.body, "csrf"),
        "confirm": "yes",
        "client_id": CLIENT,
    }
    done = browser.request("POST", f"{P}oauth2/end_session", urlencode(fields).encode(), FORM)
    assert done.status == 200
    assert b"signed out" in done.body
    deadline = time.monotonic() + 3
    while browser.get("/").status == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser.get("/").status == 303


def _otp(used: set[int]) -> str:
    """A TOTP code of a time step not used yet (each is accepted once)."""
    while True:
        now = time.time()
        step = int(now // 30)
        if step not in used and 30 - now % 30 >= 3:
            used.add(step)
            return totp(base64.b32decode(OTP_SECRET), now, 30, 6, "sha1")
        time.sleep(30 - now % 30 + 0.2)


def _code_page_submit(browser: Browser, page: Response, used: set[int]) -> Response:
    assert page.status == 200, page.body[:400]
    assert b'name="code"' in page.body, page.body[:400]
    form = {
        "csrf": _field(page.body, "csrf"),
        "attempt": _field(page.body, "attempt"),
        "rd": _field(page.body, "rd"),
        "code": _otp(used),
    }
    return browser.request("POST", f"{P}otp", urlencode(form).encode(), FORM)


def _exchange(browser: Browser, provider: dict[str, Any], location: str, verifier: str) -> Any:
    code = parse_qs(urlsplit(location).query)["code"][0]
    answer = _token(
        browser,
        provider["secret"],
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider["redirect_uri"],
            "code_verifier": verifier,
        },
    )
    assert answer.status == 200, answer.body
    return answer.json()


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_acr_values_mfa_steps_the_session_up_and_its_tokens_survive(
    provider: dict[str, Any],
) -> None:
    browser = provider["gateway"].browser()
    used: set[int] = set()
    key_set = KeySet.import_key_set(provider["jwks"])
    # A password session first, and tokens from it.
    verifier, challenge = _pkce()
    query = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": provider["redirect_uri"],
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    first = browser.get(f"{P}oauth2/authorize?{urlencode(query)}")
    rd = parse_qs(urlsplit(first.location).query)["rd"][0]
    assert browser.login("bob", PASSWORD, rd=rd).status == 303
    consent = browser.get(rd)
    form = {name: _field(consent.body, name) for name in ("csrf", "attempt", "request")}
    back = browser.request(
        "POST", f"{P}oauth2/consent", urlencode({**form, "decision": "allow"}).encode(), FORM
    )
    early = _exchange(browser, provider, back.location, verifier)
    claims = jwt.decode(early["id_token"], key_set).claims
    assert claims["acr"] == "password"
    assert "otp" not in claims["amr"]

    # The client asks for MFA: the portal steps the session up (the code page alone).
    verifier, challenge = _pkce()
    query |= {"code_challenge": challenge, "acr_values": "mfa"}
    asked = browser.get(f"{P}oauth2/authorize?{urlencode(query)}")
    assert asked.status == 303
    login = urlsplit(asked.location)
    assert login.path == f"{P}login"
    assert parse_qs(login.query)["step"] == ["otp"]
    done = _code_page_submit(browser, browser.get(_path(asked.location)), used)
    assert done.status == 303, done.body[:300]
    again = browser.get(done.location)
    assert again.status == 303, again.body[:300]
    assert again.location.startswith(provider["redirect_uri"] + "?")
    stepped = _exchange(browser, provider, again.location, verifier)
    claims = jwt.decode(stepped["id_token"], key_set).claims
    assert claims["acr"] == "mfa"
    assert {"password", "otp"} <= set(claims["amr"])

    # The step-up gave the session a new id, not a new sid: the earlier refresh token lives.
    refreshed = _token(
        browser,
        provider["secret"],
        {"grant_type": "refresh_token", "refresh_token": early["refresh_token"]},
    )
    assert refreshed.status == 200, refreshed.body


def test_authorization_parameters_may_come_as_a_form(provider: dict[str, Any]) -> None:
    browser = provider["gateway"].browser()
    _verifier, challenge = _pkce()
    params = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": provider["redirect_uri"],
        "scope": "openid",
        "state": "posted",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    first = browser.request("POST", f"{P}oauth2/authorize", urlencode(params).encode(), FORM)
    assert first.status == 303
    rd = parse_qs(urlsplit(first.location).query)["rd"][0]
    assert parse_qs(urlsplit(rd).query)["state"] == ["posted"]
    # A parameter sent twice is an error page (RFC 6749 §3.1), never a redirect.
    twice = browser.get(f"{P}oauth2/authorize?{urlencode(params)}&scope=profile")
    assert twice.status == 400
    assert "location" not in twice.headers


@pytest.mark.parametrize("extra", [{"prompt": "login"}, {"max_age": "0"}])
def test_a_forced_sign_in_signs_in_again_once(
    provider: dict[str, Any], extra: dict[str, str]
) -> None:
    browser = provider["gateway"].browser()
    key_set = KeySet.import_key_set(provider["jwks"])
    _sign_in_and_authorize_again(browser, provider)
    time.sleep(1.1)  # auth_time has a resolution of a second
    verifier, challenge = _pkce()
    query = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": provider["redirect_uri"],
        "scope": "openid",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    asked = browser.get(f"{P}oauth2/authorize?{urlencode(query)}")
    assert asked.status == 303
    login = urlsplit(asked.location)
    assert login.path == f"{P}login"  # although the browser has a session
    assert "step" not in parse_qs(login.query)
    rd = parse_qs(login.query)["rd"][0]
    signed_in = browser.login("alice", PASSWORD, rd=rd)
    assert signed_in.status == 303
    back = browser.get(rd)
    assert back.status == 303, back.body[:300]
    assert back.location.startswith(provider["redirect_uri"] + "?")
    claims = jwt.decode(_exchange(browser, provider, back.location, verifier)["id_token"], key_set)
    assert claims.claims["auth_time"] >= time.time() - 5


def test_a_browser_based_client_of_a_registered_origin_may_call_the_endpoints(
    provider: dict[str, Any],
) -> None:
    browser = provider["gateway"].browser()
    registered = "http://127.0.0.1:9"  # the origin of the client's redirect URI
    for origin, allowed in ((registered, True), ("https://evil.example", False)):
        preflight = browser.request(
            "OPTIONS",
            f"{P}oauth2/token",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status == 204
        granted = preflight.headers.get("access-control-allow-origin")
        assert granted == (origin if allowed else None)
        if allowed:
            assert "POST" in preflight.headers["access-control-allow-methods"]
        refused = browser.request(
            "POST",
            f"{P}oauth2/token",
            urlencode({"grant_type": "authorization_code", "code": "x"}).encode(),
            {**FORM, "Origin": origin},
        )
        assert refused.status in (400, 401)
        assert refused.headers.get("access-control-allow-origin") == (origin if allowed else None)

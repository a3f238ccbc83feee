"""JWT verification refuses what an attacker would forge: ``alg: none``, HS256 "signed"
with the public key as the secret, an unknown kid, a wrong typ, iss or aud, expiry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import RSAKey

from gatehouse.oauth2.jwt import ACCESS_TOKEN_TYP, InvalidJWT, access_token_claims, sign, verify
from gatehouse.oauth2.keys import SigningKeyError, SigningKeys, generate_key
from tests.oauth2.harness import ISSUER, KEYS, START, Env, body, code_for, exchange, with_env


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(**more: Any) -> dict[str, Any]:
    base = access_token_claims(
        issuer=ISSUER,
        client_id="app1",
        subject="alice",
        scope="openid",
        jti="j1",
        issued_at=START,
        lifetime=600,
    )
    return {**base, **more}


def check(token: str, **more: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "typ": ACCESS_TOKEN_TYP,
        "issuer": ISSUER,
        "audience": ISSUER,
        "now": START,
    }
    options.update(more)
    return verify(token, KEYS.public(), **options)


def rsa_public_pem() -> bytes:
    kid = KEYS.current["RS256"]
    key = KEYS.keys[kid]
    assert isinstance(key, RSAKey)
    public = key.private_key.public_key() if key.private_key else key.public_key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_good_token_verifies_with_either_algorithm() -> None:
    for alg in ("ES256", "RS256"):
        assert check(sign(KEYS, claims(), ACCESS_TOKEN_TYP, alg))["sub"] == "alice"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (forge({"alg": "none", "typ": "at+jwt"}, claims(), None), "algorithm"),
        (forge({"alg": "none", "kid": KEYS.current["ES256"]}, claims(), None), "algorithm"),
        (
            forge({"alg": "HS256", "kid": KEYS.current["RS256"]}, claims(), rsa_public_pem()),
            "algorithm",
        ),
        (forge({"alg": "HS256", "typ": "at+jwt"}, claims(), b"secret"), "algorithm"),
    ],
)
def test_none_and_hmac_tokens_are_refused(token: str, reason: str) -> None:
    with pytest.raises(InvalidJWT, match=reason):
        check(token)


def test_unknown_or_missing_kid_is_refused() -> None:
    stranger = SigningKeys.generate(["ES256"])
    with pytest.raises(InvalidJWT, match="unknown kid"):
        check(sign(stranger, claims(), ACCESS_TOKEN_TYP))
    # a foreign key claiming one of our kids fails the signature
    ours = KEYS.current["ES256"]
    impostor = SigningKeys.from_jwks([generate_key("ES256", ours)], {"ES256": ours})
    with pytest.raises(InvalidJWT, match="bad signature"):
        check(sign(impostor, claims(), ACCESS_TOKEN_TYP))
    # our RS256 kid with an ES256 header
    token = sign(KEYS, claims(), ACCESS_TOKEN_TYP, "ES256")
    head, rest = token.split(".", 1)
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    header["kid"] = KEYS.current["RS256"]
    with pytest.raises(InvalidJWT):
        check(f"{b64(json.dumps(header).encode())}.{rest}")


@pytest.mark.parametrize(
    ("token_claims", "options", "reason"),
    [
        (claims(iss="https://evil.example"), {}, "wrong iss"),
        (claims(aud="https://other.example"), {}, "wrong aud"),
        (claims(), {"now": START + 700}, "expired"),
        (claims(iat=START + 3600), {}, "future"),
        (claims(), {"typ": "JWT"}, "typ"),
    ],
)
def test_wrong_claims_are_refused(
    token_claims: dict[str, Any], options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidJWT, match=reason):
        check(sign(KEYS, token_claims, ACCESS_TOKEN_TYP), **options)


def test_keys_must_be_what_they_say() -> None:
    with pytest.raises(SigningKeyError):
        SigningKeys.from_jwks([generate_key("ES256", "k1")], {"RS256": "k1"})
    public = {k: v for k, v in generate_key("ES256", "k2").items() if k != "d"}
    with pytest.raises(SigningKeyError):
        SigningKeys.from_jwks([public], {"ES256": "k2"})
    jwks = KEYS.jwks()["keys"]
    assert {k["kid"] for k in jwks} == set(KEYS.keys)
    assert all("d" not in k for k in jwks)


def test_forged_tokens_get_nothing_from_the_provider(oauth2_db: str) -> None:
    async def go(env: Env) -> None:
        p = env.provider
        real = body(await exchange(p, await code_for(p)))["access_token"]
        payload = json.loads(base64.urlsafe_b64decode(real.split(".")[1] + "=="))
        for token in (
            forge({"alg": "none", "typ": "at+jwt"}, payload, None),
            forge({"alg": "HS256", "kid": KEYS.current["RS256"]}, payload, rsa_public_pem()),
        ):
            assert not (await p.bearer(token)).active
            answer = await p.endpoint("userinfo", "GET", {"Authorization": f"Bearer {token}"}, "")
            assert answer.status == 401
            assert await p.check_id_token_hint(token) is None
        assert (await p.bearer(real)).active

    with_env(oauth2_db, go)


def test_rotation_keeps_verifying_tokens_of_a_retired_key() -> None:
    old = SigningKeys.generate(["ES256"])
    token = sign(old, claims(), ACCESS_TOKEN_TYP)
    fresh = generate_key("ES256")
    retired = old.jwks()["keys"]
    rotated = SigningKeys.from_jwks([fresh], {"ES256": fresh["kid"]}, published=retired)
    assert {k["kid"] for k in rotated.jwks()["keys"]} == {fresh["kid"], *old.keys}
    options = {"typ": ACCESS_TOKEN_TYP, "issuer": ISSUER, "audience": ISSUER, "now": START}
    assert verify(token, rotated.public(), **options)["sub"] == "alice"
    new_token = sign(rotated, claims(), ACCESS_TOKEN_TYP)
    assert (
        json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))["kid"] == fresh["kid"]
    )
    # once the retired key is dropped, its tokens are refused
    dropped = SigningKeys.from_jwks([fresh], {"ES256": fresh["kid"]})
    with pytest.raises(InvalidJWT, match="unknown kid"):
        verify(token, dropped.public(), **options)

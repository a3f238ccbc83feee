"""Identity assertions: ES256 compact JWS made with ``cryptography`` alone, checked against a
real JOSE library (PyJWT), and the verifier's refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from gatehouse.policy.assertion_keys import load_or_create_signing_key
from gatehouse.policy.assertions import (
    AssertionInvalid,
    SigningKey,
    UnknownKey,
    b64url,
    sign,
    thumbprint,
    verify,
)
from gatehouse.policy.decision import Allow
from gatehouse.policy.identity_assertion import AssertionIssuer, assertion_claims
from gatehouse.policy.sessions import SessionRecord

NOW = 1_900_000_000.0


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": "gatehouse",
        "sub": "alice",
        "aud": "wiki",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
        "jti": "j1",
    }
    return {**base, **changes}


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [dict(k.jwk) for k in keys]}


def part(document: dict[str, Any]) -> str:
    return b64url(json.dumps(document).encode())


def test_a_signed_token_verifies(key: SigningKey) -> None:
    token = sign(claims(), key)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": key.kid}
    assert len(base64.urlsafe_b64decode(token.split(".")[2] + "==")) == 64  # raw r || s
    assert verify(token, jwks(key), "wiki", NOW + 30) == claims()
    assert verify(token, [dict(key.jwk)], "wiki", NOW, issuer="gatehouse")["sub"] == "alice"


def test_the_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 7638, section 3.1 uses an RSA key; recompute by the rule for an EC key.
    key = SigningKey.generate()
    members = {name: key.jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    assert key.kid == b64url(hashlib.sha256(canonical).digest()) == thumbprint(key.jwk)
    assert key.kid == jwt.PyJWK(dict(key.jwk)).key_id


def test_pyjwt_accepts_a_gatehouse_token(key: SigningKey) -> None:
    now = int(datetime.now(UTC).timestamp())
    token = sign(claims(iat=now, nbf=now, exp=now + 60), key)
    decoded = jwt.decode(
        token, key=jwt.PyJWK(dict(key.jwk)).key, algorithms=["ES256"], audience="wiki"
    )
    assert decoded["sub"] == "alice"
    assert jwt.get_unverified_header(token)["kid"] == key.kid


def test_gatehouse_accepts_a_pyjwt_token(key: SigningKey) -> None:
    token = jwt.encode(claims(), key.private, algorithm="ES256", headers={"kid": key.kid})
    assert verify(token, jwks(key), "wiki", NOW)["jti"] == "j1"


def test_a_tampered_payload_is_refused(key: SigningKey) -> None:
    header, _, signature = sign(claims(), key).split(".")
    forged = f"{header}.{part(claims(sub='root'))}.{signature}"
    with pytest.raises(AssertionInvalid, match="bad signature"):
        verify(forged, jwks(key), "wiki", NOW)


@pytest.mark.parametrize(
    ("changes", "at", "message"),
    [
        ({}, NOW + 66, "expired"),
        ({"nbf": int(NOW) + 30}, NOW, "not valid yet"),
        ({"aud": "other"}, NOW, "wrong audience"),
        ({"exp": None}, NOW, "'exp'"),
        ({"exp": "soon"}, NOW, "'exp'"),
    ],
)
def test_claims_are_checked(
    key: SigningKey, changes: dict[str, Any], at: float, message: str
) -> None:
    token = sign({k: v for k, v in claims(**changes).items() if v is not None}, key)
    with pytest.raises(AssertionInvalid, match=message):
        verify(token, jwks(key), "wiki", at)


def test_leeway_and_audience_lists(key: SigningKey) -> None:
    assert verify(sign(claims(), key), jwks(key), "wiki", NOW + 64)  # within 5 s of exp
    token = sign(claims(aud=["wiki", "blog"]), key)
    assert verify(token, jwks(key), "blog", NOW)
    with pytest.raises(AssertionInvalid, match="issuer"):
        verify(token, jwks(key), "blog", NOW, issuer="someone-else")


def test_an_unknown_key_is_reported_as_such(key: SigningKey) -> None:
    other = SigningKey.generate()
    with pytest.raises(UnknownKey):
        verify(sign(claims(), other), jwks(key), "wiki", NOW)
    # A token signed by another key but naming ours: a bad signature.
    header = part({"alg": "ES256", "typ": "JWT", "kid": key.kid})
    body = part(claims())
    signed = sign(claims(), other).split(".")[2]
    with pytest.raises(AssertionInvalid, match="bad signature"):
        verify(f"{header}.{body}.{signed}", jwks(key), "wiki", NOW)


def test_alg_none_and_hs256_are_refused(key: SigningKey) -> None:
    body = part(claims())
    none = f"{part({'alg': 'none', 'kid': key.kid})}.{body}."
    with pytest.raises(AssertionInvalid, match="'none' refused"):
        verify(none, jwks(key), "wiki", NOW)
    # The classic confusion: HMAC with the public key as the secret.
    header = part({"alg": "HS256", "typ": "JWT", "kid": key.kid})
    secret = json.dumps(dict(key.jwk)).encode()
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(AssertionInvalid, match="'HS256' refused"):
        verify(f"{header}.{body}.{b64url(mac)}", jwks(key), "wiki", NOW)


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!.e30.AA", "e30.e30.AA", "x" * 20000])
def test_malformed_tokens_are_refused(key: SigningKey, token: str) -> None:
    with pytest.raises(AssertionInvalid):
        verify(token, jwks(key), "wiki", NOW)


def test_a_der_signature_is_refused(key: SigningKey) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    header, body, _ = sign(claims(), key).split(".")
    der = key.private.sign(f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(AssertionInvalid, match="64-byte"):
        verify(f"{header}.{body}.{b64url(der)}", jwks(key), "wiki", NOW)


def test_the_key_file_is_made_once_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "home" / "policy-assertion-key.pem"
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_signing_key(path).kid == first.kid
    path.chmod(0o644)
    assert load_or_create_signing_key(path).kid == first.kid
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_text("not a key")
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        load_or_create_signing_key(path)
    path.write_bytes(rsa_pem())
    with pytest.raises(ValueError, match="not a P-256 private key"):
        load_or_create_signing_key(path)


def rsa_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def record(**changes: Any) -> SessionRecord:
    now = datetime.fromtimestamp(NOW, UTC)
    base: dict[str, Any] = {
        "id_hash": "ab" * 16,
        "username": "alice",
        "display_name": "Alice Liddell",
        "email": "alice@example.org",
        "groups": ("staff", "ops", "ops"),
        "methods": ("password",),
        "created_at": now,
        "last_seen_at": now,
        "idle_expires_at": now + timedelta(minutes=30),
        "absolute_expires_at": now + timedelta(hours=12),
        "client_ip": "127.0.0.1",
        "user_agent": None,
    }
    return SessionRecord(**{**base, **changes})


def test_claims_name_the_user_and_hash_the_session() -> None:
    made = assertion_claims(record(), "wiki", NOW + 0.7, 60.0)
    assert made["exp"] - made["iat"] == 60
    assert (made["sub"], made["aud"], made["iss"]) == ("alice", "wiki", "gatehouse")
    assert (made["name"], made["email"]) == ("Alice Liddell", "alice@example.org")
    assert made["groups"] == ["ops", "staff"]
    assert (made["sid"], made["amr"]) == ("ab" * 16, ["password"])
    assert made["jti"] != assertion_claims(record(), "wiki", NOW, 60.0)["jti"]


def test_the_issuer_stamps_only_its_resources_and_cuts_the_ttl(key: SigningKey) -> None:
    issuer = AssertionIssuer(key, "Gatehouse-Assertion", 40.0, frozenset({"wiki"}))
    now = datetime.fromtimestamp(NOW, UTC)
    allow = Allow(headers=(("Remote-User", "alice"),), ttl=30.0)
    stamped = issuer.stamp(allow, record(), "wiki", now)
    assert stamped.ttl == 20.0  # half the token's 40 s
    name, token = stamped.headers[-1]
    assert name == "Gatehouse-Assertion"
    assert verify(token, jwks(key), "wiki", NOW)["sub"] == "alice"
    assert issuer.stamp(allow, record(), "blog", now) is allow
    assert issuer.stamp(allow, None, "wiki", now) is allow
    expired = record(idle_expires_at=now - timedelta(seconds=1))
    assert issuer.stamp(allow, expired, "wiki", now) is allow
    assert issuer.stamp(Allow(headers=(), ttl=5.0), record(), "wiki", now).ttl == 5.0

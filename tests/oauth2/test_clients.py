"""Client secrets and the client model; the discovery document."""

from __future__ import annotations

import hashlib

import pytest

from gatehouse.oauth2.clients import ClientSpec, check_secret, hash_secret, new_secret
from gatehouse.oauth2.discovery import metadata
from gatehouse.oauth2.grants import AuthlibClient
from gatehouse.oauth2.settings import ProviderSettings


def test_new_secret_is_32_random_bytes_and_only_its_hash_is_kept() -> None:
    secret, secret_hash = new_secret()
    assert len(secret) == 43  # 32 bytes, base64url without padding
    assert secret not in secret_hash
    assert secret_hash == "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    assert check_secret(secret, secret_hash)
    assert not check_secret(secret + "x", secret_hash)
    assert not check_secret("", secret_hash)
    assert not check_secret(secret, "")
    assert not check_secret(secret, secret_hash.removeprefix("sha256:"))  # no bare digests
    assert new_secret()[0] != secret


def test_a_public_client_has_no_secret_to_check() -> None:
    _, secret_hash = new_secret()
    spa = ClientSpec("spa", public=True, token_endpoint_auth_method="none")
    assert not spa.check_secret("anything")
    app = ClientSpec("app", secret_hash=hash_secret("s3cret-but-long-enough"))
    assert app.check_secret("s3cret-but-long-enough")
    assert secret_hash != app.secret_hash


PUBLIC = {"public": True, "token_endpoint_auth_method": "none"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"public": True}, "public client authenticates with 'none'"),
        ({"token_endpoint_auth_method": "none"}, "confidential client needs a secret"),
        ({"grant_types": ("password",)}, "unknown grant 'password'"),
        (
            {
                "public": True,
                "token_endpoint_auth_method": "none",
                "grant_types": ("client_credentials",),
            },
            "cannot use client_credentials",
        ),
    ],
)
def test_inconsistent_clients_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClientSpec("c1", **fields)  # type: ignore[arg-type]


def test_redirect_uris_match_exactly_and_scopes_are_the_clients() -> None:
    client = AuthlibClient(
        ClientSpec("c", redirect_uris=("https://a.example/cb",), scopes=("openid", "email"))
    )
    assert client.check_redirect_uri("https://a.example/cb")
    for near in (
        "https://a.example/cb/",
        "https://a.example/cb?x",
        "https://a.example/c",
        "http://a.example/cb",
    ):
        assert not client.check_redirect_uri(near)
    assert client.get_default_redirect_uri() == "https://a.example/cb"
    assert client.get_allowed_scope(None) == "openid email"
    assert client.get_allowed_scope("email openid email") == "email openid"
    assert client.get_allowed_scope("openid profile") is None
    assert client.check_endpoint_auth_method("client_secret_basic", "token")
    assert not client.check_endpoint_auth_method("client_secret_post", "token")
    assert client.check_endpoint_auth_method("client_secret_post", "introspection")
    assert not client.check_endpoint_auth_method("none", "revocation")


def test_discovery_metadata() -> None:
    settings = ProviderSettings(issuer="http://127.0.0.1:8080", portal_prefix="/_gatehouse/")
    meta = metadata(settings)
    assert meta["issuer"] == "http://127.0.0.1:8080"
    assert meta["authorization_endpoint"] == "http://127.0.0.1:8080/_gatehouse/oauth2/authorize"
    assert meta["token_endpoint"] == "http://127.0.0.1:8080/_gatehouse/oauth2/token"
    assert meta["jwks_uri"] == "http://127.0.0.1:8080/_gatehouse/oauth2/jwks"
    assert meta["end_session_endpoint"] == "http://127.0.0.1:8080/_gatehouse/oauth2/end_session"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["response_types_supported"] == ["code"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert meta["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert "none" not in meta["introspection_endpoint_auth_methods_supported"]


@pytest.mark.parametrize(
    "issuer",
    ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://sso.example"],
)
def test_issuers_accepted(issuer: str) -> None:
    assert ProviderSettings(issuer=issuer).url("token").startswith(issuer)


@pytest.mark.parametrize(
    "issuer",
    ["http://sso.example", "https://sso.example/?x=1", "https://sso.example/#f", "ftp://x", "sso"],
)
def test_issuers_refused(issuer: str) -> None:
    with pytest.raises(ValueError, match="issuer"):
        ProviderSettings(issuer=issuer)

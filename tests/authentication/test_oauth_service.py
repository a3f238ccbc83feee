"""The Authentication service's side of the OAuth provider: the ``oauth`` configuration
(clients refused with their field named), the clients handed to the protocol core, the
Policy view's part (no secret, public keys only) and the signing key file (made 0600 once,
kept, a broken one refused). The calls themselves: tests/policy/test_oauth_gateway.py and
the role matrix."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gatehouse.authentication.app import Service, check_view, restart_only_changes
from gatehouse.authentication.config import AuthenticationConfig, AuthenticationSettings
from gatehouse.authentication.oauth_keys_client import KeysUnavailable
from gatehouse.authentication.oauth_service import (
    DirectoryUsers,
    OAuthService,
    client_spec,
    load_or_create_keys,
    provider_config,
)
from gatehouse.config.loader import validate
from gatehouse.config.oauth import (
    AuthenticationOAuth,
    ClientSettings,
    OAuthSettings,
    PolicyOAuth,
    policy_oauth,
)
from gatehouse.errors import ConfigError
from gatehouse.internal.errors import ServiceError
from gatehouse.oauth2.clients import new_secret
from gatehouse.oauth2.keys import SigningKeys, generate_key
from gatehouse.oauth2.provider import Provider

SECRET, SECRET_HASH = new_secret()
CLIENT: dict[str, Any] = {
    "client_id": "app1",
    "name": "App One",
    "secret_hash": SECRET_HASH,
    "redirect_uris": ["https://app1.example/cb"],
}


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        validate(AuthenticationConfig, {"authentication": {"oauth": data}}, "test")
    return list(caught.value.problems)


@pytest.mark.parametrize(
    ("client", "path", "message"),
    [
        ({"redirect_uris": ["https://app1.example/*"]}, "redirect_uris[0]", "no wildcards"),
        ({"redirect_uris": ["https://app1.example/cb#x"]}, "redirect_uris[0]", "no fragment"),
        ({"redirect_uris": ["http://app1.example/cb"]}, "redirect_uris[0]", "not an allowed"),
        ({"secret_hash": "hunter2"}, "secret_hash", "not a secret hash"),
        ({"secret_hash": None}, "", "needs secret_hash"),
        ({"public": True}, "", "public client has no secret_hash"),
        ({"client_id": "app 1"}, "client_id", "not a client id"),
        ({"scopes": ["open id"]}, "scopes", "not a scope"),
        ({"grant_types": ["password"]}, "grant_types[0]", ""),
        ({"redirect_uris": []}, "", "authorization_code needs"),
    ],
)
def test_a_bad_client_is_refused_naming_its_field(
    client: dict[str, Any], path: str, message: str
) -> None:
    problems = _problems({"clients": [CLIENT | client]})
    where = "authentication.oauth.clients[0]" + (f".{path}" if path else "")
    assert any(p.startswith(where) and message in m for p, m in problems), problems


def test_a_client_registered_twice_is_refused() -> None:
    problems = _problems({"clients": [CLIENT, CLIENT]})
    assert any("registered twice" in m for _p, m in problems), problems


def test_a_public_client_and_loopback_or_private_scheme_redirects_are_fine() -> None:
    public = ClientSettings.model_validate(
        {
            "client_id": "cli",
            "public": True,
            "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://127.0.0.1:8400/cb", "com.example.app:/cb"],
        }
    )
    spec = client_spec(public)
    assert spec.public
    assert spec.redirect_uris == ("http://127.0.0.1:8400/cb", "com.example.app:/cb")


def test_the_core_gets_the_configured_clients_and_lifetimes() -> None:
    oauth = OAuthSettings.model_validate(
        {"issuer": "https://gate.example/", "access_token_lifetime": "5m", "clients": [CLIENT]}
    )
    assert oauth.issuer == "https://gate.example"
    config = provider_config(oauth, "/_gatehouse/", SigningKeys.generate())
    spec = config.clients["app1"]
    assert spec.check_secret(SECRET)
    assert not spec.check_secret("not it")
    assert spec.display_name == "App One"
    assert config.settings.access_token_lifetime == 300
    assert config.settings.url("token") == "https://gate.example/_gatehouse/oauth2/token"


def test_the_policy_view_has_no_secret_and_only_public_keys(tmp_path: Path) -> None:
    oauth = OAuthSettings.model_validate({"clients": [CLIENT]})
    keys = load_or_create_keys(tmp_path / "keys.json", ["ES256", "RS256"])
    view = policy_oauth(oauth, keys.jwks())
    dumped = json.dumps(view.model_dump(mode="json"))
    assert SECRET_HASH not in dumped
    assert '"d"' not in dumped
    assert view.client("app1") is not None
    with pytest.raises(ValidationError, match="private key members"):
        PolicyOAuth.model_validate(
            {"jwks": {"keys": [json.loads((tmp_path / "keys.json").read_text())["keys"][0]]}}
        )


def test_the_key_file_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "home" / "oauth-signing-keys.json"
    first = load_or_create_keys(path, ["ES256", "RS256"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(first.current) == ["ES256", "RS256"]
    again = load_or_create_keys(path, ["ES256", "RS256"])
    assert again.current == first.current
    assert again.jwks() == first.jwks()
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a signing key set"):
        load_or_create_keys(path, ["ES256"])


def test_a_delivered_key_set_is_used_and_kept_for_the_next_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "oauth-signing-keys.json"
        oauth = OAuthSettings.model_validate({"clients": [CLIENT]})
        users = DirectoryUsers(_no_user)
        service = OAuthService(
            f"sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}", oauth, "/_gatehouse/", path, users
        )
        try:
            first = _running(service).jwks()
            made = [generate_key("ES256"), generate_key("RS256")]
            delivered = {"keys": made, "current": {k["alg"]: k["kid"] for k in made}}
            service.use_keys(delivered)
            assert _running(service).jwks() != first
            assert {k["kid"] for k in _running(service).jwks()["keys"]} == {k["kid"] for k in made}
            assert json.loads(path.read_text()) == delivered
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            with pytest.raises(ValueError, match="not a signing key set"):
                service.use_keys({"keys": made, "current": {"ES256": "no-such-kid"}})
            assert json.loads(path.read_text()) == delivered  # the running set stays
            restarted = load_or_create_keys(path, ["ES256"])
            assert restarted.current == delivered["current"]
        finally:
            await service.stop()

    asyncio.run(scenario())


async def _no_user(username: str) -> None:
    return None


def test_the_service_applies_a_new_oauth_version_live(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
        service = Service(
            AuthenticationSettings(),
            db,
            oauth2_db=f"sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}",
            oauth_keys=tmp_path / "keys.json",
        )
        try:
            assert service.oauth is not None
            assert dict(_running(service.oauth).config.clients) == {}
            view = {
                "authentication": {"oauth": {"issuer": "https://gate.example", "clients": [CLIENT]}}
            }
            service.apply(2, view)
            config = _running(service.oauth).config
            assert set(config.clients) == {"app1"}
            assert config.settings.issuer == "https://gate.example"
            moved = {"authentication": {"oauth2_db": "sqlite+aiosqlite:///elsewhere.db"}}
            assert restart_only_changes(service.started, check_view(moved).authentication) == [
                "authentication.oauth2_db"
            ]
        finally:
            await service.stop()

    asyncio.run(scenario())


def _view(made: list[dict[str, Any]]) -> dict[str, Any]:
    public = SigningKeys.from_jwks(made, {k["alg"]: k["kid"] for k in made}).jwks()
    return {"jwks": public, "current": {k["alg"]: k["kid"] for k in made}}


def test_a_view_s_keys_are_fetched_once_kept_and_followed(tmp_path: Path) -> None:
    """With ``oauth.keys`` (Admin's view) the private keys come from the state file or,
    missing there, from Admin; 503 until they are here; a new view's keys replace them."""

    async def scenario() -> None:
        first = [generate_key("ES256"), generate_key("RS256")]
        second = [generate_key("ES256"), generate_key("RS256")]
        held = {k["kid"]: k for k in [*first, *second]}
        asked: list[list[str]] = []
        admin_up = asyncio.Event()

        async def fetch(kids: Any) -> list[dict[str, Any]]:  # Admin's key API, as it answers
            asked.append(list(kids))
            if not admin_up.is_set():
                raise KeysUnavailable("Admin unreachable")
            return [held[kid] for kid in kids]

        path = tmp_path / "state" / "oauth-signing-keys.json"
        oauth = AuthenticationOAuth.model_validate({"clients": [CLIENT], "keys": _view(first)})
        service = OAuthService(
            f"sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}",
            oauth,
            "/_gatehouse/",
            path,
            DirectoryUsers(_no_user),
            fetch=fetch,
        )
        try:
            await service.start()
            await asyncio.wait_for(service.ready.wait(), 10)
            with pytest.raises(ServiceError) as caught:
                service.require()
            assert caught.value.status == 503
            admin_up.set()
            for _ in range(100):
                if service.provider is not None:
                    break
                await asyncio.sleep(0.05)
            provider = service.require()
            assert provider.config.keys.current == {k["alg"]: k["kid"] for k in first}
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            # A new version names new keys: fetched, then used.
            newer = AuthenticationOAuth.model_validate({"clients": [CLIENT], "keys": _view(second)})
            service.apply(newer, "/_gatehouse/")
            for _ in range(100):
                if provider.config.keys.current == newer.keys.current:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.05)
            assert provider.config.keys.current == {k["alg"]: k["kid"] for k in second}
        finally:
            await service.stop()
        # A restart signs at once from the state file: Admin is not asked again.
        count = len(asked)
        again = OAuthService(
            f"sqlite+aiosqlite:///{tmp_path / 'oauth2.db'}",
            newer,
            "/_gatehouse/",
            path,
            DirectoryUsers(_no_user),
            fetch=fetch,
        )
        assert again.provider is not None
        assert len(asked) == count
        await again.stop()

    asyncio.run(scenario())


def _running(service: OAuthService) -> Provider:
    assert service.provider is not None
    return service.provider

"""The ``oauth`` section of the installation model: what it refuses, and what each role's
view gets of it (checked through the services' own models)."""

from __future__ import annotations

import pytest

from gatehouse.administration.model import InstallationConfig
from gatehouse.administration.views import view_for
from gatehouse.authentication.config import AuthenticationConfig
from gatehouse.config.loader import validate
from gatehouse.config.oauth import SigningKeyView
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.oauth2.keys import generate_key
from tests.administration.samples import ha, minimal

CLIENT = {
    "client_id": "app1",
    "secret_hash": "sha256:" + "a" * 64,
    "redirect_uris": ["https://app1.example/cb"],
}


def problems(document: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as raised:
        validate(InstallationConfig, document)
    return raised.value.problems


def test_what_the_oauth_section_refuses() -> None:
    document = minimal()
    document["oauth"] = {"keys": {"current": {}}}
    assert problems(document)[0][0] == "oauth.keys"  # set by Admin, never by hand
    document["oauth"] = {"signing": {"algorithms": ["ES256", "EdDSA"]}}
    [(path, message)] = problems(document)
    assert path == "oauth.signing.algorithms[1]"
    assert "EdDSA" in message
    document["oauth"] = {"clients": [CLIENT, CLIENT]}
    assert "registered twice" in problems(document)[0][1]
    document = ha()
    document["databases"]["oauth2_db"] = "sqlite+aiosqlite:///var/oauth2.db"
    found = problems(document)
    assert (
        "databases.oauth2_db",
        "SQLite cannot be shared across nodes (int1, int2); use PostgreSQL",
    ) in found


def test_each_role_gets_its_part() -> None:
    document = minimal()
    document["oauth"] = {"issuer": "https://sso.example.org", "clients": [CLIENT]}
    config = validate(InstallationConfig, document)
    jwk = generate_key("ES256")
    public = {k: v for k, v in jwk.items() if k != "d"}
    keys = SigningKeyView.model_validate(
        {"jwks": {"keys": [public]}, "current": {"ES256": jwk["kid"]}}
    )

    auth = validate(AuthenticationConfig, view_for(config, "auth1", keys)).authentication.oauth
    assert auth.issuer == "https://sso.example.org"
    assert auth.clients[0].secret_hash == CLIENT["secret_hash"]
    assert auth.keys == keys
    policy = validate(PolicyConfig, view_for(config, "ps1", keys)).oauth
    assert policy.issuer == "https://sso.example.org"
    assert policy.jwks == {"keys": [public]}
    assert "secret_hash" not in str(view_for(config, "ps1", keys))
    assert "sso.example.org" not in str(view_for(config, "ap1", keys))
    for sid in ("auth1", "ps1", "ap1"):
        assert jwk["d"] not in str(view_for(config, sid, keys))
    # Without keys yet: none named, nothing published.
    assert view_for(config, "auth1")["authentication"]["oauth"]["keys"] is None
    assert view_for(config, "ps1")["oauth"]["jwks"] == {"keys": []}
    # A view can never carry a private key: the models refuse one.
    with pytest.raises(ValueError, match="private key members"):
        SigningKeyView.model_validate({"jwks": {"keys": [jwk]}, "current": {}})

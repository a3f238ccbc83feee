"""Provider metadata: OpenID Connect Discovery 1.0 and :rfc:`8414` (one document serves
both ``/.well-known/openid-configuration`` and ``/.well-known/oauth-authorization-server``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatehouse.oauth2.keys import ALGORITHMS
from gatehouse.oauth2.settings import ACR_VALUES, SCOPES, ProviderSettings

CLAIMS = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "sid",
    "azp",
    "at_hash",
    "name",
    "preferred_username",
    "email",
    "groups",
)


def metadata(settings: ProviderSettings, algorithms: Sequence[str] = ALGORITHMS) -> dict[str, Any]:
    """The metadata document for ``settings.issuer`` (``algorithms``: those with a key)."""
    url = settings.url
    auth_methods = ["client_secret_basic", "client_secret_post", "none"]
    return {
        "issuer": settings.issuer,
        "authorization_endpoint": url("authorize"),
        "token_endpoint": url("token"),
        "userinfo_endpoint": url("userinfo"),
        "jwks_uri": url("jwks"),
        "introspection_endpoint": url("introspect"),
        "revocation_endpoint": url("revoke"),
        "end_session_endpoint": url("end_session"),
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(algorithms),
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods[:2],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": list(CLAIMS),
        "acr_values_supported": list(ACR_VALUES),
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
    }


__all__ = ["metadata"]

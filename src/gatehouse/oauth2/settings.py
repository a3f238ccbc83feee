"""What the provider needs to know of the configuration: issuer, endpoints, lifetimes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

#: Gatehouse's sign-in methods that count as a second factor (``amr`` values).
SECOND_FACTORS: Final = ("otp", "email_otp", "sms_otp")
#: ``acr`` values: a password alone, or a password and a second factor.
ACR_PASSWORD: Final = "password"
ACR_MFA: Final = "mfa"
ACR_VALUES: Final = (ACR_PASSWORD, ACR_MFA)
SCOPES: Final = ("openid", "profile", "email", "groups", "offline_access")


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """``oauth`` of the configuration, lifetimes in seconds. ``portal_prefix`` is
    ``login.portal_prefix`` (the endpoints live under it, reached through the Access Points)."""

    issuer: str = "http://127.0.0.1:8080"
    portal_prefix: str = "/_gatehouse/"
    access_token_lifetime: int = 600
    id_token_lifetime: int = 600
    code_lifetime: int = 60
    refresh_token_lifetime: int = 30 * 86400

    def __post_init__(self) -> None:
        check_issuer(self.issuer)
        if not (self.portal_prefix.startswith("/") and self.portal_prefix.endswith("/")):
            raise ValueError("portal_prefix: must start and end with '/'")

    def url(self, endpoint: str) -> str:
        """``authorize``, ``token``, ``userinfo``, ``introspect``, ``revoke``, ``jwks``,
        ``end_session``: that endpoint's absolute URL."""
        return f"{self.issuer.rstrip('/')}{self.portal_prefix}oauth2/{endpoint}"


def check_issuer(issuer: str) -> None:
    """An issuer is an https URL without query or fragment; plain http only on loopback
    (the single node's Access Point), as RFC 8414 §2 and RFC 8252 §7.3 allow."""
    parts = urlsplit(issuer)
    if parts.query or parts.fragment or not parts.hostname:
        raise ValueError(f"issuer: not a URL without query and fragment: {issuer!r}")
    if parts.scheme == "https":
        return
    loopback = parts.hostname == "localhost"
    try:
        loopback = loopback or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        pass
    if parts.scheme != "http" or not loopback:
        raise ValueError(f"issuer: must be https (http only on loopback): {issuer!r}")


def has_second_factor(amr: tuple[str, ...] | list[str]) -> bool:
    return any(method in SECOND_FACTORS for method in amr)


def acr_of(amr: tuple[str, ...] | list[str]) -> str:
    return ACR_MFA if has_second_factor(amr) else ACR_PASSWORD


__all__ = [
    "ACR_MFA",
    "ACR_PASSWORD",
    "ACR_VALUES",
    "SCOPES",
    "SECOND_FACTORS",
    "ProviderSettings",
    "acr_of",
    "check_issuer",
    "has_second_factor",
]

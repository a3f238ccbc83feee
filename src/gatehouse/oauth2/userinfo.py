"""UserInfo (OpenID Connect Core §5.3): the claims a bearer access token's scopes allow,
from user data the Authentication service supplies through :class:`UserSource`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class UserClaims:
    name: str = ""
    email: str = ""
    groups: tuple[str, ...] = ()


class UserSource(Protocol):
    """How the provider learns about a user (the service reads its user DB)."""

    async def claims(self, username: str) -> UserClaims | None:
        """The user's data, or None when there is no such (enabled) user."""
        ...


def claims_for(username: str, user: UserClaims, scopes: set[str]) -> dict[str, Any]:
    """``sub`` always; ``profile``: name, preferred_username; ``email``; ``groups``."""
    claims: dict[str, Any] = {"sub": username}
    if "profile" in scopes:
        claims["preferred_username"] = username
        if user.name:
            claims["name"] = user.name
    if "email" in scopes and user.email:
        claims["email"] = user.email
    if "groups" in scopes:
        claims["groups"] = list(user.groups)
    return claims


__all__ = ["UserClaims", "UserSource", "claims_for"]

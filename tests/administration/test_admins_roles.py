"""Roles and permissions (pure): what each role may do, and the permission of each admin
API route."""

from __future__ import annotations

import pytest

from gatehouse.administration.admins_roles import (
    PERMISSIONS,
    ROLES,
    allows,
    check_role,
    rest_permission,
)

#: The issue's matrix, written out: role -> permissions.
EXPECTED = {
    "superadmin": set(PERMISSIONS),
    "operator": {"config.read", "config.draft", "config.publish", "nodes.read", "audit.read"},
    "helpdesk": {
        "users.read",
        "users.write",
        "tokens.read",
        "tokens.write",
        "sessions.read",
        "sessions.write",
        "config.read",
    },
    "auditor": {p for p in PERMISSIONS if p.endswith(".read")},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("permission", PERMISSIONS)
def test_the_role_matrix(role: str, permission: str) -> None:
    assert allows(role, permission) == (permission in EXPECTED[role])


def test_only_the_superadmin_manages_administrators_and_an_unknown_role_has_nothing() -> None:
    assert [r for r in ROLES if allows(r, "admins.write")] == ["superadmin"]
    assert not any(allows("root", p) for p in PERMISSIONS)
    with pytest.raises(ValueError, match="role: must be one of superadmin, operator"):
        check_role("root")


@pytest.mark.parametrize(
    ("method", "path", "permission"),
    [
        ("GET", "/api/v1/draft", "config.read"),
        ("PUT", "/api/v1/draft", "config.draft"),
        ("GET", "/api/v1/diff", "config.read"),
        ("POST", "/api/v1/publish", "config.publish"),
        ("POST", "/api/v1/rollback", "config.publish"),
        ("GET", "/api/v1/versions/{number:int}", "config.read"),
        ("GET", "/api/v1/services", "nodes.read"),
        ("POST", "/api/v1/join-tokens", "nodes.write"),
        ("POST", "/api/v1/services/{service_id}/revoke", "nodes.write"),
        ("GET", "/api/v1/audit", "audit.read"),
        ("GET", "/api/v1/tokens", "tokens.read"),
        ("POST", "/api/v1/tokens/{serial}/{action}", "tokens.write"),
        ("PUT", "/api/v1/token-enrolment/{user}", "tokens.write"),
        ("POST", "/api/v1/token-invitations", "tokens.write"),
        ("GET", "/api/v1/oauth/clients", "config.read"),
        ("POST", "/api/v1/oauth/keys/rotate", "config.publish"),
        ("GET", "/api/v1/admins", "admins.read"),
        ("POST", "/api/v1/admins", "admins.write"),
        ("GET", "/api/v1/me/tokens", ""),
        ("POST", "/api/v1/me/tokens", ""),
        ("POST", "/api/v1/something-new", "admins.write"),
    ],
)
def test_each_route_needs_its_permission(method: str, path: str, permission: str) -> None:
    assert rest_permission(method, path) == permission

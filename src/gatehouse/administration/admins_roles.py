"""Administrator roles and what each may do (pure: no I/O).

Four roles: ``superadmin`` may do everything; ``operator`` edits, publishes and watches the
configuration and the nodes; ``helpdesk`` looks after users, their tokens and sessions;
``auditor`` reads everything and changes nothing. A permission is ``AREA.read`` or
``AREA.write`` (``config`` has ``draft`` and ``publish`` instead of ``write``);
``admins.write`` (administrators and their roles) is the superadmin's alone.
"""

from __future__ import annotations

from typing import Final, Literal

Role = Literal["superadmin", "operator", "helpdesk", "auditor"]

SUPERADMIN: Final = "superadmin"
ROLES: Final[tuple[str, ...]] = ("superadmin", "operator", "helpdesk", "auditor")

PERMISSIONS: Final[tuple[str, ...]] = (
    "config.read",
    "config.draft",
    "config.publish",
    "users.read",
    "users.write",
    "tokens.read",
    "tokens.write",
    "sessions.read",
    "sessions.write",
    "nodes.read",
    "nodes.write",
    "audit.read",
    "admins.read",
    "admins.write",
)

ROLE_PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "superadmin": frozenset(PERMISSIONS),
    "operator": frozenset(
        {"config.read", "config.draft", "config.publish", "nodes.read", "audit.read"}
    ),
    "helpdesk": frozenset(
        {
            "users.read",
            "users.write",
            "tokens.read",
            "tokens.write",
            "sessions.read",
            "sessions.write",
            "config.read",
        }
    ),
    "auditor": frozenset(p for p in PERMISSIONS if p.endswith(".read")),
}

ROLE_SUMMARIES: Final[dict[str, str]] = {
    "superadmin": "everything, including administrators and their roles",
    "operator": "edit, publish and roll back the configuration; see the nodes and the log",
    "helpdesk": "users, groups, tokens and sessions; read the configuration",
    "auditor": "read everything, change nothing",
}


def check_role(role: str) -> str:
    """``role`` if it is one; ``ValueError`` naming the roles otherwise."""
    if role not in ROLE_PERMISSIONS:
        raise ValueError(f"role: must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def check_permission(permission: str) -> str:
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")
    return permission


def allows(role: str, permission: str) -> bool:
    """Whether ``role`` has ``permission`` (an unknown role has none)."""
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


def permissions_of(role: str) -> frozenset[str]:
    return ROLE_PERMISSIONS.get(role, frozenset())


def rest_permission(method: str, path: str) -> str:
    """The permission a call of the admin REST API needs (``path`` below ``/api/v1``).

    Reads need ``AREA.read``; changes the matching write permission; ``""``: any
    administrator (their own account and tokens). A route not listed
    here needs ``admins.write`` (the superadmin's): a new route is closed until it is
    placed.
    """
    read = method in ("GET", "HEAD")
    parts = [p for p in path.removeprefix("/api/v1").split("/") if p]
    head = parts[0] if parts else ""
    if head in ("draft", "diff", "versions"):
        return "config.read" if read else "config.draft"
    if head in ("publish", "rollback"):
        return "config.publish"
    if head == "oauth":
        return "config.read" if read else "config.publish"
    if head in ("services", "join-tokens"):
        return "nodes.read" if read else "nodes.write"
    if head in ("tokens", "token-enrolment", "token-invitations"):
        return "tokens.read" if read else "tokens.write"
    if head == "audit":
        return "audit.read"
    if head == "admins":
        return "admins.read" if read else "admins.write"
    if head == "me":
        return ""  # one's own account and personal tokens: any administrator
    return "admins.write"

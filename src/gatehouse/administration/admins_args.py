"""``gatehouse admins ...`` and ``gatehouse status``: arguments only (the commands are in
:mod:`.admins_cli`, imported when they run)."""

from __future__ import annotations

import argparse

from gatehouse.administration.admins_roles import ROLE_SUMMARIES, ROLES
from gatehouse.cli_support import Sub, admin_action

MODULE = "gatehouse.administration.admins_cli"

_TOKEN_NOTE = (
    "Commands authenticate with $GATEHOUSE_TOKEN (a personal token) or the file "
    "$GATEHOUSE_TOKEN_FILE names; without either, with the home's admin token (break-glass, "
    "audited as 'admin-token')."
)


def _action(actions: Sub, name: str, help_text: str, command: str) -> argparse.ArgumentParser:
    return admin_action(actions, name, help_text, MODULE, command)


def register(sub: Sub) -> None:
    roles = "; ".join(f"{role}: {ROLE_SUMMARIES[role]}" for role in ROLES)
    admins = sub.add_parser(
        "admins",
        help="named administrators, their roles and personal tokens",
        description=f"Roles: {roles}. {_TOKEN_NOTE}",
    )
    actions = admins.add_subparsers(dest="admins_command", required=True, metavar="ACTION")
    boot = _action(
        actions,
        "bootstrap",
        "make the first superadmin (once; prints the password and OTP secret once)",
        "bootstrap",
    )
    boot.add_argument("--name", default="admin", help="user name (default: admin)")
    boot.add_argument("--email", default=None)
    add = _action(actions, "add", "make a user an administrator (a new user is created)", "add")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--email", default=None, help="for a new user")
    _action(actions, "list", "list the administrators", "list_admins")
    remove = _action(
        actions, "remove", "take the role away (tokens revoked, sessions ended)", "remove"
    )
    remove.add_argument("name", metavar="NAME")
    role = _action(actions, "set-role", "give an administrator another role", "set_role")
    role.add_argument("name", metavar="NAME")
    role.add_argument("role", choices=ROLES, metavar="ROLE")
    _action(actions, "whoami", "who the token you use belongs to", "whoami")

    tokens = actions.add_parser("tokens", help="personal API tokens for the CLI and REST API")
    token_actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    create = _action(token_actions, "create", "a new personal token (shown once)", "token_create")
    create.add_argument("--for", dest="owner", metavar="NAME", help="another administrator's")
    create.add_argument("--description", default="", metavar="TEXT")
    create.add_argument("--ttl", default="90d", help="how long it is valid (default 90d)")
    listing = _action(token_actions, "list", "your personal tokens", "token_list")
    listing.add_argument("--all", action="store_true", help="every administrator's")
    revoke = _action(token_actions, "revoke", "revoke a personal token", "token_revoke")
    revoke.add_argument("id", metavar="ID")

    status = sub.add_parser(
        "status",
        help="every service: health, version, acknowledgement, certificate expiry",
    )
    status.add_argument("--admin", metavar="URL", help="default: from HOME/administration.yaml")
    from gatehouse.cli_support import add_home, lazy_handler

    add_home(status)
    status.set_defaults(handler=lazy_handler(MODULE, "status"))

"""The arguments of ``gatehouse oauth ...`` (argparse only, so ``gatehouse --help`` stays
fast); the commands are in :mod:`.oauth_cli`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from gatehouse.cli_support import Sub, admin_action

#: The client field each option sets (an error about the field names the option).
OPTION_OF: Mapping[str, str] = {
    "client_id": "CLIENT_ID",
    "name": "--name",
    "public": "--public",
    "redirect_uris": "--redirect-uri",
    "post_logout_redirect_uris": "--post-logout-redirect-uri",
    "grant_types": "--grant",
    "scopes": "--scope",
    "token_endpoint_auth_method": "--auth-method",
    "consent": "--no-consent",
}


def register(sub: Sub) -> None:
    oauth = sub.add_parser("oauth", help="the OpenID Provider's clients and signing keys")
    groups = oauth.add_subparsers(dest="oauth_group", required=True, metavar="WHAT")
    clients = groups.add_parser("clients", help="register, list, remove OAuth clients")
    actions = clients.add_subparsers(dest="oauth_command", required=True, metavar="ACTION")
    add = _action(actions, "add", "register a client and publish it", "clients_add")
    add.add_argument("client_id", metavar="CLIENT_ID")
    add.add_argument(
        "--redirect-uri",
        action="append",
        metavar="URI",
        help="an exact redirect URI (repeat for more)",
    )
    add.add_argument(
        "--public",
        action="store_true",
        help="a public client (no secret; PKCE only), e.g. a browser or native app",
    )
    add.add_argument(
        "--scope",
        action="append",
        metavar="SCOPES",
        help='the scopes it may ask for (default: "openid profile email")',
    )
    add.add_argument("--name", metavar="N", help="the name users see on the consent page")
    add.add_argument(
        "--grant",
        action="append",
        metavar="GRANT",
        help="authorization_code, refresh_token, client_credentials "
        "(default: authorization_code refresh_token)",
    )
    add.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        metavar="URI",
        help="where end_session may send the browser back (repeat for more)",
    )
    add.add_argument(
        "--auth-method",
        choices=("client_secret_basic", "client_secret_post"),
        help="how a confidential client authenticates (default: client_secret_basic)",
    )
    add.add_argument(
        "--no-consent", action="store_true", help="do not ask users to consent (first party)"
    )
    _wait(add)
    _action(actions, "list", "list the clients", "clients_list")
    remove = _action(actions, "remove", "remove a client and publish", "clients_remove")
    remove.add_argument("client_id", metavar="CLIENT_ID")
    _wait(remove)
    rotate = _action(
        actions,
        "rotate-secret",
        "give a confidential client a new secret (printed once) and publish",
        "clients_rotate_secret",
    )
    rotate.add_argument("client_id", metavar="CLIENT_ID")
    _wait(rotate)

    keys = groups.add_parser("keys", help="the signing keys (made and rotated by Admin)")
    key_actions = keys.add_subparsers(dest="oauth_command", required=True, metavar="ACTION")
    _action(key_actions, "list", "list the signing keys and their state", "keys_list")
    _action(
        key_actions,
        "rotate",
        "make a new key per algorithm now (published at once, signs after publish_before)",
        "keys_rotate",
    )


def _wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds to wait for the services to run the new version (default: 0)",
    )


def _action(actions: Sub, name: str, help_text: str, command: str) -> argparse.ArgumentParser:
    return admin_action(actions, name, help_text, "gatehouse.administration.oauth_cli", command)

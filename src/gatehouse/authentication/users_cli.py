"""Argument parsing of ``gatehouse users ...`` and ``gatehouse groups ...``.

Only argparse here: the commands (``users_commands``) import the database stack when they
run, so ``gatehouse --help`` and the other services start without it.
"""

from __future__ import annotations

import argparse

from gatehouse.cli_support import Sub, home_action


def register(sub: Sub) -> None:
    users = sub.add_parser("users", help="manage users in the user DB")
    actions = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    add = _action(actions, "add", "add a user", "users_add")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--group", action="append", default=[], metavar="G", help="repeatable")
    add.add_argument("--email", metavar="ADDR", help="e-mail address (codes by e-mail)")
    add.add_argument("--phone", metavar="E164", help="phone number, e.g. +4915112345678")
    add.add_argument("--display-name", metavar="D", help="default: NAME")
    add.add_argument("--password-stdin", action="store_true", help="else one is generated")

    passwd = _action(
        actions, "passwd", "set a user's password (ends their sessions)", "users_passwd"
    )
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument("--password-stdin", action="store_true", help="else one is generated")

    contact = _action(
        actions, "set", "set a user's contact data (for codes by e-mail or SMS)", "users_set"
    )
    contact.add_argument("name", metavar="NAME")
    contact.add_argument("--email", metavar="ADDR", help="e-mail address; '' removes it")
    contact.add_argument("--phone", metavar="E164", help="e.g. +4915112345678; '' removes it")

    for name, help_text, handler in (
        ("disable", "refuse a user's logins (ends their sessions)", "users_disable"),
        ("enable", "allow a user's logins again", "users_enable"),
        ("delete", "delete a user (ends their sessions)", "users_delete"),
        ("unlock", "clear a user's failed-login lockout", "users_unlock"),
        ("end-sessions", "sign a user out everywhere", "users_end_sessions"),
    ):
        _action(actions, name, help_text, handler).add_argument("name", metavar="NAME")
    _action(actions, "list", "list users", "users_list")

    groups = sub.add_parser("groups", help="manage groups in the user DB")
    gactions = groups.add_subparsers(dest="groups_command", required=True, metavar="ACTION")
    _action(gactions, "add", "add a group", "groups_add").add_argument("name", metavar="NAME")
    _action(
        gactions, "delete", "delete a group (ends its members' sessions)", "groups_delete"
    ).add_argument("name", metavar="NAME")
    _action(gactions, "list", "list groups and their members", "groups_list")
    for name, help_text, handler in (
        ("add-member", "put a user in a group (ends their sessions)", "groups_add_member"),
        (
            "remove-member",
            "take a user out of a group (ends their sessions)",
            "groups_remove_member",
        ),
    ):
        action = _action(gactions, name, help_text, handler)
        action.add_argument("group", metavar="GROUP")
        action.add_argument("user", metavar="USER")


def _action(actions: Sub, name: str, help_text: str, command: str) -> argparse.ArgumentParser:
    return home_action(actions, name, help_text, "gatehouse.authentication.users_commands", command)

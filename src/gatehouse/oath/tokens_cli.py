"""Argument parsing of ``gatehouse tokens ...``: the OATH tokens of the installation's OATH DB.

Only argparse here, like :mod:`gatehouse.authentication.users_cli`: the commands
(:mod:`.tokens_commands`) import the database stack and the crypto when they run.
"""

from __future__ import annotations

import argparse

from gatehouse.cli_support import Sub, home_action


def register(sub: Sub) -> None:
    tokens = sub.add_parser("tokens", help="manage OATH (HOTP/TOTP) tokens in the OATH DB")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")

    listing = _action(actions, "list", "list tokens (never their seeds)", "tokens_list")
    listing.add_argument("--user", metavar="USER", help="only this user's tokens")

    add = _action(actions, "add", "add an active token for a user", "tokens_add")
    add.add_argument("user", metavar="USER")
    add.add_argument("--type", choices=("totp", "hotp"), default="totp")
    seed = add.add_mutually_exclusive_group()
    seed.add_argument(
        "--secret", metavar="BASE32", help="the seed, in base32 (else 160 bits are generated)"
    )
    seed.add_argument(
        "--secret-file",
        metavar="FILE",
        help="read the base32 seed from FILE ('-': standard input), so that it is not in the "
        "process list or the shell history",
    )
    add.add_argument("--algorithm", choices=("sha1", "sha256", "sha512"), default="sha1")
    add.add_argument("--digits", type=int, choices=(6, 8), default=6)
    add.add_argument("--period", type=int, choices=(30, 60), help="TOTP only (default: 30)")
    add.add_argument("--description", default="", metavar="TEXT")

    imp = _action(
        actions, "import", "import tokens from a PSKC, CSV or otpauth:// file", "tokens_import"
    )
    imp.add_argument("file", metavar="FILE")
    imp.add_argument(
        "--format", choices=("pskc", "csv", "uri"), help="default: guessed from the content"
    )
    psk = imp.add_mutually_exclusive_group()
    psk.add_argument("--psk", metavar="HEX", help="the pre-shared key of a protected PSKC file")
    psk.add_argument("--psk-file", metavar="F", help="a file holding that key in hex")
    imp.add_argument("--assign", metavar="USER", help="give every imported token to USER")

    assign = _action(actions, "assign", "give a token to a user", "tokens_assign")
    assign.add_argument("serial", metavar="SERIAL")
    assign.add_argument("user", metavar="USER")

    for name, help_text, handler in (
        ("unassign", "take a token from its user", "tokens_unassign"),
        ("disable", "make a token answer no code", "tokens_disable"),
        ("enable", "make a token active again (clears its failures)", "tokens_enable"),
        ("unlock", "clear a token's failures and lock", "tokens_unlock"),
        ("delete", "delete a token", "tokens_delete"),
    ):
        _action(actions, name, help_text, handler).add_argument("serial", metavar="SERIAL")

    resync = _action(
        actions,
        "resync",
        "resynchronise a token from two consecutive codes (HOTP counter, TOTP clock drift)",
        "tokens_resync",
    )
    resync.add_argument("serial", metavar="SERIAL")
    resync.add_argument("code1", metavar="CODE1")
    resync.add_argument("code2", metavar="CODE2")

    enrol = _action(
        actions,
        "require-enrolment",
        "make a user enrol a token at their next login",
        "tokens_require_enrolment",
    )
    enrol.add_argument("user", metavar="USER")
    enrol.add_argument("--off", action="store_true", help="no longer require it")

    invite = _action(
        actions,
        "invite",
        "e-mail USER a single-use link to enrol a TOTP token (sent by the Distribution service)",
        "tokens_invite",
    )
    invite.add_argument("user", metavar="USER")
    invite.add_argument(
        "--lifetime",
        type=_duration,
        default=72 * 3600.0,
        metavar="DURATION",
        help="how long the link works, e.g. 72h, 30m (default 72h; 5m to 720h)",
    )
    invitations = _action(
        actions, "invitations", "list token invitations (never their links)", "tokens_invitations"
    )
    invitations.add_argument("--user", metavar="USER", help="only this user's invitations")
    _action(
        actions, "revoke-invitation", "withdraw an open invitation", "tokens_revoke_invitation"
    ).add_argument("id", metavar="ID")

    _action(
        actions,
        "rekey",
        "add a new seed key and re-encrypt every seed under it (old keys are kept)",
        "tokens_rekey",
    )


def _duration(value: str) -> float:
    from gatehouse.config.units import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert isinstance(seconds, float)
    return seconds


def _action(actions: Sub, name: str, help_text: str, command: str) -> argparse.ArgumentParser:
    return home_action(actions, name, help_text, "gatehouse.oath.tokens_commands", command)

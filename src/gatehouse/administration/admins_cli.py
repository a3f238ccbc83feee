"""``gatehouse admins ...`` and ``gatehouse status``: talk to the Administration service's
admin API (:mod:`.admins_api`) with a personal token or the home's admin token."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from gatehouse.administration.config_cli import AdminClient, command, status_table
from gatehouse.cli_tables import print_table
from gatehouse.config.units import parse_duration
from gatehouse.errors import GatehouseError


def print_credentials(answer: dict[str, Any]) -> None:
    """A new administrator's first credentials, shown this once."""
    creds = answer.get("credentials")
    name = answer["name"]
    if not creds:
        print(
            f"{name} is an administrator ({answer['role']}); they sign in with their own "
            "password and one-time password"
        )
        return
    print(f"Administrator: {name} ({answer['role']})")
    print(f"  password:       {creds['password']}")
    print(f"  OTP secret:     {creds['otp_secret']}")
    print(f"  otpauth URI:    {creds['otpauth_uri']}")
    print("  (shown once: add the secret or URI to an authenticator app, then sign in)")


@command
def bootstrap(args: argparse.Namespace, admin: AdminClient) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.email:
        body["email"] = args.email
    print_credentials(admin.call("POST", "/api/v1/admins/bootstrap", body))
    return 0


@command
def add(args: argparse.Namespace, admin: AdminClient) -> int:
    body: dict[str, Any] = {"name": args.name, "role": args.role}
    if args.email:
        body["email"] = args.email
    print_credentials(admin.call("POST", "/api/v1/admins", body))
    return 0


@command
def list_admins(args: argparse.Namespace, admin: AdminClient) -> int:
    rows = [
        (a["name"], a["role"], a["created_at"][:19].replace("T", " "), a["created_by"])
        for a in admin.call("GET", "/api/v1/admins")
    ]
    print_table(("NAME", "ROLE", "SINCE", "BY"), rows, title="Administrators")
    return 0


@command
def remove(args: argparse.Namespace, admin: AdminClient) -> int:
    admin.call("DELETE", f"/api/v1/admins/{args.name}")
    print(f"{args.name} is no longer an administrator (tokens revoked, sessions ended)")
    return 0


@command
def set_role(args: argparse.Namespace, admin: AdminClient) -> int:
    admin.call("PUT", f"/api/v1/admins/{args.name}/role", {"role": args.role})
    print(f"{args.name} is now {args.role}")
    return 0


@command
def whoami(args: argparse.Namespace, admin: AdminClient) -> int:
    me = admin.call("GET", "/api/v1/me")
    note = " (the home's admin token: break-glass)" if me["via"] == "break-glass" else ""
    print(f"{me['name']} ({me['role']}){note}")
    return 0


def _ttl(text: str) -> float:
    """``90d``, ``12h``, ``30m`` or seconds."""
    raw = text.strip()
    try:
        if raw.endswith("d"):
            return float(raw[:-1]) * 86400
        return float(parse_duration(raw))  # type: ignore[arg-type]
    except ValueError:
        raise GatehouseError(f"--ttl: not a duration: {text!r} (e.g. 90d, 12h, 30m)") from None


@command
def token_create(args: argparse.Namespace, admin: AdminClient) -> int:
    ttl = _ttl(args.ttl)
    body = {"description": args.description, "ttl": ttl}
    path = f"/api/v1/admins/{args.owner}/tokens" if args.owner else "/api/v1/me/tokens"
    answer = admin.call("POST", path, body)
    token = answer["token"]
    print(answer["secret"])
    print(
        f"personal token {token['id']} of {token['name']}, expires {token['expires_at']} "
        "(shown once; use it as $GATEHOUSE_TOKEN or in the file $GATEHOUSE_TOKEN_FILE names)",
        file=sys.stderr,
    )
    return 0


@command
def token_list(args: argparse.Namespace, admin: AdminClient) -> int:
    path = "/api/v1/admins/tokens" if args.all else "/api/v1/me/tokens"
    rows = [
        (
            t["id"],
            t["name"],
            t["state"],
            t["expires_at"][:16].replace("T", " "),
            (t["last_used_at"] or "never")[:16].replace("T", " "),
            t["description"],
        )
        for t in admin.call("GET", path)
    ]
    headers = ("ID", "ADMINISTRATOR", "STATE", "EXPIRES", "LAST USED", "DESCRIPTION")
    print_table(headers, rows, title="Personal tokens")
    return 0


@command
def token_revoke(args: argparse.Namespace, admin: AdminClient) -> int:
    me = admin.call("GET", "/api/v1/me")
    if me["via"] == "break-glass" or "admins.write" in me["permissions"]:
        admin.call("POST", f"/api/v1/admins/tokens/{args.id}/revoke")
    else:
        admin.call("POST", f"/api/v1/me/tokens/{args.id}/revoke")
    print(f"personal token {args.id} revoked")
    return 0


@command
def status(args: argparse.Namespace, admin: AdminClient) -> int:
    return status_table(admin, datetime.now(UTC))

"""``gatehouse oauth clients add|list|remove|rotate-secret`` and ``gatehouse oauth keys
list|rotate``: the OpenID Provider's clients and signing keys, through the Administration
API (:mod:`.oauth_api`) with the admin token, like ``gatehouse config``.

Each change publishes a new version. A confidential client's secret is printed once, alone on
standard output's first line (the rest goes to standard error), and is kept nowhere: only
its hash is published. A bad value is refused before Admin is asked, naming the option.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pydantic import ValidationError

from gatehouse.administration.config_cli import AdminClient, command, follow, table
from gatehouse.administration.oauth_args import OPTION_OF
from gatehouse.config.oauth import ClientSettings
from gatehouse.errors import GatehouseError

#: A placeholder to check a confidential client's other fields before Admin makes its secret.
_PLACEHOLDER_HASH = "sha256:" + "0" * 64


#: For a problem of the whole client: the option its sentence is about.
_MENTIONED = (
    ("redirect_uris", "--redirect-uri"),
    ("client_credentials", "--grant"),
    ("refresh_token", "--grant"),
    ("token_endpoint_auth_method", "--auth-method"),
    ("secret", "--public"),
)


def client_body(args: argparse.Namespace) -> dict[str, Any]:
    """The API's fields from the command line, checked here (errors name the option)."""
    body: dict[str, Any] = {
        "client_id": args.client_id,
        "name": args.name or "",
        "public": bool(args.public),
        "redirect_uris": list(args.redirect_uri or []),
        "post_logout_redirect_uris": list(args.post_logout_redirect_uri or []),
        "consent": not args.no_consent,
    }
    if args.scope is not None:
        body["scopes"] = [s for part in args.scope for s in part.split()]
    if args.grant:
        body["grant_types"] = [g for part in args.grant for g in part.replace(",", " ").split()]
    if args.auth_method:
        body["token_endpoint_auth_method"] = args.auth_method
    check = dict(body)
    if body["public"]:
        check.setdefault("token_endpoint_auth_method", "none")
    else:
        check["secret_hash"] = _PLACEHOLDER_HASH
    try:
        ClientSettings.model_validate(check)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        option = OPTION_OF.get(field) or next(
            (opt for word, opt in _MENTIONED if word in message), None
        )
        if option is None:
            raise GatehouseError(message) from None
        raise GatehouseError(f"{option}: {message}") from None
    return body


def clients_add(args: argparse.Namespace) -> int:
    """Checked before Admin is asked, then registered."""
    args.body = client_body(args)
    return _clients_add(args)


@command
def _clients_add(args: argparse.Namespace, admin: AdminClient) -> int:
    answer = admin.call("POST", "/api/v1/oauth/clients", args.body)
    kind = "public" if args.public else "confidential"
    if answer.get("secret"):
        print(answer["secret"], flush=True)
        print(
            f"client {args.client_id!r} ({kind}) registered in version {answer['version']}; "
            "its secret is the line above, shown this once (only its hash is kept)",
            file=sys.stderr,
        )
    else:
        print(f"client {args.client_id!r} ({kind}) registered in version {answer['version']}")
    return follow(admin, answer["version"], args.wait) if args.wait > 0 else 0


@command
def clients_list(args: argparse.Namespace, admin: AdminClient) -> int:
    listed = admin.call("GET", "/api/v1/oauth/clients")
    if not listed:
        print("no OAuth clients")
        return 0
    rows = [
        [
            c["client_id"],
            "public" if c["public"] else "confidential",
            c["name"] or "-",
            " ".join(c["scopes"]),
            " ".join(c["grant_types"]),
            " ".join(c["redirect_uris"]) or "-",
        ]
        for c in listed
    ]
    print(table(["CLIENT", "TYPE", "NAME", "SCOPES", "GRANTS", "REDIRECT URIS"], rows), end="")
    return 0


@command
def clients_remove(args: argparse.Namespace, admin: AdminClient) -> int:
    answer = admin.call("DELETE", f"/api/v1/oauth/clients/{args.client_id}")
    print(f"client {args.client_id!r} removed in version {answer['version']}")
    return follow(admin, answer["version"], args.wait) if args.wait > 0 else 0


@command
def clients_rotate_secret(args: argparse.Namespace, admin: AdminClient) -> int:
    answer = admin.call("POST", f"/api/v1/oauth/clients/{args.client_id}/secret", {})
    print(answer["secret"], flush=True)
    print(
        f"client {args.client_id!r}: new secret in version {answer['version']} (the line "
        "above, shown this once); the old one is refused once the services run it",
        file=sys.stderr,
    )
    return follow(admin, answer["version"], args.wait) if args.wait > 0 else 0


@command
def keys_list(args: argparse.Namespace, admin: AdminClient) -> int:
    listed = admin.call("GET", "/api/v1/oauth/keys")
    if not listed:
        print("no signing keys yet")
        return 0
    rows = [[k["kid"], k["alg"], k["state"], k["signs_from"], k["drop_at"] or "-"] for k in listed]
    print(table(["KID", "ALG", "STATE", "SIGNS FROM", "LEAVES JWKS"], rows), end="")
    return 0


@command
def keys_rotate(args: argparse.Namespace, admin: AdminClient) -> int:
    answer = admin.call("POST", "/api/v1/oauth/keys/rotate", {})
    made = answer["made"]
    if not made:
        print("a new key is on its way for every algorithm already ('gatehouse oauth keys list')")
        return 0
    where = f" in version {answer['version']}" if answer.get("version") else ""
    print(
        f"new signing keys {', '.join(made)} published{where}; they sign once "
        "oauth.signing.publish_before has passed"
    )
    return 0


__all__ = ["client_body"]

"""``gatehouse oauth clients add|list|remove|rotate-secret`` and ``gatehouse oauth keys
list|rotate`` on a real single node (``gatehouse up``): discovery through the Access Point at
the issuer's root, a token request with the secret the CLI printed once, the old secret
refused after rotate-secret, a removed client refused, and errors naming the option."""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
from typing import Any
from urllib.parse import urlencode

from tests.support.node import Node, get_json, node

__all__ = ["node"]

SECRET = re.compile(r"[A-Za-z0-9_\-]{40,}")


def token(port: int, client_id: str, secret: str, scope: str) -> tuple[int, dict[str, Any]]:
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    body = urlencode({"grant_type": "client_credentials", "scope": scope})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            "/_gatehouse/oauth2/token",
            body,
            {
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def eventually(check: Any, timeout: float = 20.0) -> Any:
    """``check()`` once it stops raising AssertionError (the services apply a version)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_clients_and_keys_from_the_command_line(node: Node) -> None:
    node.wait_for("Gatehouse is up")
    issuer = f"http://127.0.0.1:{node.port}"
    discovery = get_json(node.port, "/.well-known/openid-configuration")
    assert discovery["issuer"] == issuer
    assert discovery["token_endpoint"] == f"{issuer}/_gatehouse/oauth2/token"

    # Bad values are refused before Admin is asked, naming the option.
    bad = node.cli("oauth", "clients", "add", "app1", "--redirect-uri", "http://evil.example/cb")
    assert bad.returncode == 2
    assert bad.stderr.startswith("gatehouse: --redirect-uri: not an allowed redirect URI")
    bad = node.cli("oauth", "clients", "add", "app1", "--grant", "password")
    assert bad.returncode == 2
    assert bad.stderr.startswith("gatehouse: --grant: ")

    added = node.cli(
        "oauth",
        "clients",
        "add",
        "api-client",
        *("--grant", "client_credentials"),
        *("--scope", "api.read api.write"),
        *("--name", "API client"),
        *("--wait", "20"),
    )
    assert added.returncode == 0, added.stderr
    first = added.stdout.splitlines()[0]
    assert SECRET.fullmatch(first), added.stdout  # the secret alone on its own line
    assert "shown this once" in added.stderr
    again = node.cli("oauth", "clients", "add", "api-client", "--grant", "client_credentials")
    assert again.returncode == 2
    assert "client_id: 'api-client' is registered already" in again.stderr

    listed = node.cli("oauth", "clients", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(
        r"api-client\s+confidential\s+API client\s+api\.read api\.write", listed.stdout
    )
    assert first not in listed.stdout

    def works(secret: str) -> dict[str, Any]:
        status, answer = token(node.port, "api-client", secret, "api.read")
        assert status == 200, answer
        return answer

    answer = eventually(lambda: works(first))
    assert answer["token_type"].lower() == "bearer"
    assert answer["scope"] == "api.read"
    # Signed (kid in the header) by a key Admin made and publishes: the current ES256 one.
    header = json.loads(base64.urlsafe_b64decode(answer["access_token"].split(".")[0] + "=="))
    jwks = get_json(node.port, "/_gatehouse/oauth2/jwks")
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    current = node.cli("oauth", "keys", "list").stdout
    assert re.search(rf"^{re.escape(header['kid'])}\s+{header['alg']}\s+current\s", current, re.M)
    status, refused = token(node.port, "api-client", first + "x", "api.read")
    assert (status, refused["error"]) == (401, "invalid_client")

    rotated = node.cli("oauth", "clients", "rotate-secret", "api-client", "--wait", "20")
    assert rotated.returncode == 0, rotated.stderr
    second = rotated.stdout.splitlines()[0]
    assert SECRET.fullmatch(second)
    assert second != first
    eventually(lambda: works(second))

    def old_refused() -> None:
        status, answer = token(node.port, "api-client", first, "api.read")
        assert (status, answer["error"]) == (401, "invalid_client")

    eventually(old_refused)

    keys = node.cli("oauth", "keys", "list")
    assert keys.returncode == 0, keys.stderr
    assert len(re.findall(r"\s(ES256|RS256)\s+current\s", keys.stdout)) == 2, keys.stdout
    rotate = node.cli("oauth", "keys", "rotate")
    assert rotate.returncode == 0, rotate.stderr
    assert "new signing keys" in rotate.stdout
    upcoming = node.cli("oauth", "keys", "list").stdout
    assert len(re.findall(r"\supcoming\s", upcoming)) == 2, upcoming

    def published() -> None:
        jwks = get_json(node.port, "/_gatehouse/oauth2/jwks")
        kids = {k["kid"] for k in jwks["keys"]}
        listed = set(re.findall(r"^(\S+)\s+(?:ES256|RS256)\s", upcoming, re.M))
        assert listed <= kids, (listed, kids)

    eventually(published)

    removed = node.cli("oauth", "clients", "remove", "api-client", "--wait", "20")
    assert removed.returncode == 0, removed.stderr

    def gone() -> None:
        status, answer = token(node.port, "api-client", second, "api.read")
        assert (status, answer["error"]) == (401, "invalid_client")

    eventually(gone)
    missing = node.cli("oauth", "clients", "remove", "api-client")
    assert missing.returncode == 2
    assert "no OAuth client 'api-client'" in missing.stderr

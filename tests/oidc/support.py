"""A running Gatehouse OpenID Provider for independent relying parties.

:func:`start_provider` starts a single node's services as real processes on loopback (the
Authentication, Policy and Access Point services and the demo backend, tests.support.gateway)
with two clients in the services' configuration files: a confidential one
(``client_secret_basic``) and a public one (PKCE only). The issuer is the Access Point's URL,
so every request an RP makes goes through the AP. :class:`Callback` is the RPs' redirect
target, a tiny HTTP server that records what it was sent.

:func:`sign_in` plays the user's browser by following the portal's pages with plain HTTP
(the sign-in form, then the consent form); the Playwright tests do the same in Chromium.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import yaml

from gatehouse.authentication.oauth_service import KEYS_FILE
from gatehouse.oauth2.clients import new_secret
from gatehouse.oauth2.keys import SigningKeys, generate_key
from tests.support.gateway import Browser, Gateway, add_user, start_gateway
from tests.support.node import Node
from tests.support.processes import Service, free_port, write_config

P = "/_gatehouse/"
PASSWORD = "correct horse battery staple"
CONFIDENTIAL = "rp-confidential"
PUBLIC = "rp-public"
SCOPES = ["openid", "profile", "email", "offline_access"]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
#: The npm project with panva's openid-client and oidc-provider (``npm ci`` there).
NODE_DIR = Path(__file__).parent / "node"


def require_node_modules() -> Path:
    """The Node project's directory, once ``npm ci`` installed it; else skip (fail in CI)."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "openid-client").is_dir():
        reason = (
            "Node.js and the npm packages of tests/oidc/node are needed "
            "(apt-get install nodejs npm; cd tests/oidc/node && npm ci)"
        )
        if os.environ.get("GATEHOUSE_REQUIRE_ALL"):
            pytest.fail(reason)
        pytest.skip(reason)
    return NODE_DIR


class _Handler(BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = b"<!doctype html><title>RP</title><p>callback received</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _CallbackServer(ThreadingHTTPServer):
    hits: list[str]


class Callback:
    """The relying party's redirect and post-logout targets: ``/cb`` and ``/bye``."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server = _CallbackServer(("127.0.0.1", self.port), _Handler)
        self._server.hits = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/cb"

    @property
    def post_logout_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/bye"

    @property
    def hits(self) -> list[str]:
        return self._server.hits

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Provider:
    """A running provider: the services from files (``gateway``) or ``gatehouse up``
    (``node``), reached at ``issuer`` (an Access Point)."""

    issuer: str
    secret: str
    callback: Callback
    jwks: dict[str, Any]
    home: Path
    ap_port: int
    gateway: Gateway | None = None
    node: Node | None = None
    users: list[str] = field(default_factory=list)

    @property
    def redirect_uri(self) -> str:
        return self.callback.redirect_uri

    def browser(self) -> Browser:
        return Browser("127.0.0.1", self.ap_port)

    @property
    def logs(self) -> list[Path]:
        """The services' logs (for a failure message)."""
        if self.node is not None:
            return [self.node.log_path]
        assert self.gateway is not None
        return sorted(self.gateway.home.parent.glob("*.log"))

    def new_user(self, name: str) -> str:
        """A user of its own for a test (consents are remembered per user and client)."""
        add_user(self.home, name, PASSWORD)
        self.users.append(name)
        return name

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.node is not None:
            self.node.close()
        self.callback.close()


def client_settings(secret_hash: str, callback: Callback) -> list[dict[str, Any]]:
    common = {
        "redirect_uris": [callback.redirect_uri],
        "post_logout_redirect_uris": [callback.post_logout_uri],
        "scopes": SCOPES,
    }
    return [
        {
            "client_id": CONFIDENTIAL,
            "name": "Confidential RP",
            "secret_hash": secret_hash,
            "token_endpoint_auth_method": "client_secret_basic",
            **common,
        },
        {
            "client_id": PUBLIC,
            "name": "Public RP",
            "public": True,
            "token_endpoint_auth_method": "none",
            **common,
        },
    ]


def start_provider(
    tmp: Path,
    algorithms: tuple[str, ...] = ("ES256", "RS256"),
    oauth_extra: dict[str, Any] | None = None,
    auth_settings: dict[str, Any] | None = None,
    more_authentication: list[str] | None = None,
) -> Provider:
    """A single node with both clients, signing with a key per algorithm (the first signs).
    ``oauth_extra``: more of the Authentication service's ``oauth`` (lifetimes, say);
    ``auth_settings``: more of its settings (``oauth2_db``); ``more_authentication``: URLs of
    more Authentication services for the Policy service, after the gateway's own."""
    home = tmp / "home"
    home.mkdir()
    made = [generate_key(alg) for alg in algorithms]
    current = {k["alg"]: k["kid"] for k in made}
    (home / KEYS_FILE).write_text(json.dumps({"keys": made, "current": current}))
    (home / KEYS_FILE).chmod(0o600)
    jwks = SigningKeys.from_jwks(made, current).jwks()
    ap_port = free_port()
    issuer = f"http://127.0.0.1:{ap_port}"
    secret, secret_hash = new_secret()
    callback = Callback()
    clients = client_settings(secret_hash, callback)
    public_keys = ("client_id", "name", "public", "redirect_uris", "post_logout_redirect_uris")
    try:
        gateway = start_gateway(
            tmp,
            {
                "resources": {"demo": "authenticated"},
                "oauth": {
                    "issuer": issuer,
                    "algorithms": list(algorithms),
                    "clients": [{k: c[k] for k in public_keys if k in c} for c in clients],
                    "scopes": SCOPES,
                    "jwks": jwks,
                },
            },
            [{"id": "demo", "path_prefix": "/"}],
            auth_extra={
                "oauth": {
                    "issuer": issuer,
                    "signing": {"algorithms": list(algorithms)},
                    "clients": clients,
                    **(oauth_extra or {}),
                },
                **(auth_settings or {}),
            },
            ap_ports=[ap_port],
            more_authentication=more_authentication,
        )
    except BaseException:
        callback.close()
        raise
    return Provider(issuer, secret, callback, jwks, home, ap_port, gateway=gateway)


def start_node_provider(tmp: Path) -> Provider:
    """``gatehouse up`` (a single node with its Administration service) and both clients
    registered with ``gatehouse oauth clients add``, published to the services."""
    node = Node(tmp)
    callback = Callback()
    try:
        node.wait_for("Gatehouse is up")
        secret = ""
        for client_id, extra in (
            (CONFIDENTIAL, ["--name", "Confidential RP"]),
            (PUBLIC, ["--name", "Public RP", "--public"]),
        ):
            added = node.cli(
                *("oauth", "clients", "add", client_id),
                *("--redirect-uri", callback.redirect_uri),
                *("--post-logout-redirect-uri", callback.post_logout_uri),
                *("--scope", " ".join(SCOPES)),
                *extra,
                *("--wait", "30"),
            )
            assert added.returncode == 0, added.stdout + added.stderr
            if client_id == CONFIDENTIAL:  # the secret alone on the first line, once
                secret = added.stdout.splitlines()[0].strip()
        issuer = f"http://127.0.0.1:{node.port}"
        browser = Browser("127.0.0.1", node.port)
        # The version is running; the Authentication service answers 503 until it has the
        # signing keys it names.
        probe = f"{P}oauth2/authorize?" + urlencode(
            {"response_type": "code", "client_id": PUBLIC, "redirect_uri": callback.redirect_uri}
        )
        deadline = time.monotonic() + 30
        while browser.get(probe).status in (400, 503):
            assert time.monotonic() < deadline, f"the clients never worked:\n{node.output()}"
            time.sleep(0.3)
        jwks = browser.get(f"{P}oauth2/jwks").json()
        assert jwks["keys"], jwks
    except BaseException:
        node.close()
        callback.close()
        raise
    return Provider(issuer, secret, callback, jwks, node.home, node.port, node=node)


@dataclass
class Pair:
    """Two Authentication services on one OAuth2 DB behind one Policy service and AP; the
    second is started by :meth:`start_second` (so the first alone can issue a code)."""

    provider: Provider
    second_args: list[str]
    second_log: Path
    second_port: int
    second: Service | None = None

    def start_second(self) -> Service:
        self.second = Service(self.second_args, self.second_log, "127.0.0.1", self.second_port)
        self.second.wait_ready(30)
        return self.second

    def stop(self) -> None:
        if self.second is not None:
            self.second.stop()
        self.provider.stop()


def start_pair(tmp: Path, oauth2_db: str) -> Pair:
    """Like :func:`start_provider`, with the OAuth2 DB at ``oauth2_db`` and the Policy service
    knowing two Authentication services: the gateway's and one more (not started yet) on the
    same home (keys, users) and OAuth2 DB."""
    second_port = free_port()
    provider = start_provider(
        tmp,
        auth_settings={"oauth2_db": oauth2_db},
        more_authentication=[f"http://127.0.0.1:{second_port}"],
    )
    assert provider.gateway is not None
    config = yaml.safe_load((tmp / "auth.yaml").read_text())
    config["authentication"]["listen"] = f"127.0.0.1:{second_port}"
    second_config = write_config(tmp / "auth2.yaml", config)
    args = [
        "authentication",
        *("--config", str(second_config), "--home", str(provider.home)),
    ]
    return Pair(provider, args, tmp / "auth2.log", second_port)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def form_field(page: bytes, name: str) -> str:
    match = re.search(rb'name="' + name.encode() + rb'" value="([^"]*)"', page)
    assert match, page[:800]
    return html.unescape(match.group(1).decode())


def sign_in(provider: Provider, browser: Browser, authorize_url: str, username: str) -> str:
    """Follow the portal from ``authorize_url`` as the user's browser: sign in if asked,
    allow on the consent page if shown. The URL the client's redirect URI was sent."""
    assert authorize_url.startswith(provider.issuer + P), authorize_url
    answer = browser.get(path_of(authorize_url))
    if answer.status == 303 and urlsplit(answer.location).path == f"{P}login":
        rd = parse_qs(urlsplit(answer.location).query)["rd"][0]
        signed_in = browser.login(username, PASSWORD, rd=rd)
        assert signed_in.status == 303, signed_in.body[:400]
        assert signed_in.location == rd
        answer = browser.get(rd)
    if answer.status == 200:  # the consent page
        assert b"Allow access?" in answer.body or b"allow" in answer.body, answer.body[:400]
        form = {
            "csrf": form_field(answer.body, "csrf"),
            "attempt": form_field(answer.body, "attempt"),
            "request": form_field(answer.body, "request"),
            "decision": "allow",
        }
        answer = browser.request("POST", f"{P}oauth2/consent", urlencode(form).encode(), FORM)
    assert answer.status in (302, 303), (answer.status, answer.body[:400])
    assert answer.location.startswith(provider.redirect_uri + "?"), answer.location
    return answer.location


__all__ = [
    "CONFIDENTIAL",
    "NODE_DIR",
    "PASSWORD",
    "PUBLIC",
    "SCOPES",
    "Callback",
    "P",
    "Provider",
    "form_field",
    "path_of",
    "require_node_modules",
    "sign_in",
    "start_node_provider",
    "start_provider",
]

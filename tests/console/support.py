"""The console in-process: the Administration app over Starlette's TestClient (HTTPS base
URL, so its cookies are ``__Host-`` and Secure as in production), a break-glass token, and
administrators signed in by a session made directly in the store."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.testclient import TestClient

from gatehouse.administration.app import create_app
from gatehouse.administration.console.csrf import csrf_token
from gatehouse.administration.service import AdministrationService, prepare_database
from gatehouse.administration.signing import load_or_create_private_key
from gatehouse.administration.store import AdminStore
from gatehouse.administration.tokens_api import HomeTokens
from gatehouse.storage.engine import Database
from gatehouse.storage.home import database_urls
from gatehouse.trust.ca import CertificateAuthority

TOKEN = "break-glass-token-0123456789abcdef"
SESSION_COOKIE = "__Host-gatehouse_console"


@dataclass
class Console:
    client: TestClient
    service: AdministrationService
    home: Path

    def bearer(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def make_admin(self, name: str, role: str) -> None:
        self.client.portal.call(self.service.admins.add, name, role, "test")  # type: ignore[union-attr]

    def sign_in(self, name: str, role: str | None = None) -> str:
        """Make ``name`` an administrator (with ``role``) and give the client a session;
        the session's CSRF token."""
        if role is not None:
            self.make_admin(name, role)
        session = self.client.portal.call(self.service.admins.create_session, name)  # type: ignore[union-attr]
        self.client.cookies.set(SESSION_COOKIE, session.secret)
        return csrf_token(session.secret)


@contextmanager
def console_app(tmp: Path) -> Iterator[Console]:
    home = tmp / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    url = database_urls(home).user_db
    asyncio.run(prepare_database(url))
    key = load_or_create_private_key(tmp / "signing.pem")
    ca, _ = CertificateAuthority.load_or_create(tmp / "ca")

    def make() -> AdministrationService:
        return AdministrationService(AdminStore(Database(url)), key, TOKEN, None, ca)

    app = create_app(make, tokens=lambda: HomeTokens(home))
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        yield Console(client, app.state.service, home)


def field(html: str, name: str) -> str:
    match = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert match, f"no field {name!r} in the page"
    return match[1]

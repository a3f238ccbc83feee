"""A provider on a real, migrated OAuth2 DB with test clients, a settable clock and users."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

from gatehouse.oauth2.adapter import HttpAnswer
from gatehouse.oauth2.authorize import Redirect
from gatehouse.oauth2.clients import ClientSpec, new_secret
from gatehouse.oauth2.keys import SigningKeys
from gatehouse.oauth2.provider import Provider
from gatehouse.oauth2.server import ProviderConfig
from gatehouse.oauth2.settings import ProviderSettings
from gatehouse.oauth2.store import OAuth2Store
from gatehouse.oauth2.subject import Subject
from gatehouse.oauth2.userinfo import UserClaims
from gatehouse.storage.engine import Database

T = TypeVar("T")

ISSUER = "https://sso.example.org"
SETTINGS = ProviderSettings(issuer=ISSUER)
#: RFC 7636 Appendix B (../shared/reference/test-vectors.md).
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
START = 2_000_000_000

APP1_SECRET, APP1_HASH = new_secret()
APP2_SECRET, APP2_HASH = new_secret()
SVC_SECRET, SVC_HASH = new_secret()
APP1 = ClientSpec(
    "app1",
    name="App One",
    secret_hash=APP1_HASH,
    redirect_uris=("https://app1.example/cb",),
    scopes=("openid", "profile", "email", "groups"),
)
APP2 = ClientSpec(
    "app2",
    secret_hash=APP2_HASH,
    redirect_uris=("https://app2.example/cb",),
    scopes=("openid", "profile"),
    token_endpoint_auth_method="client_secret_post",
    consent=False,
)
SPA = ClientSpec(
    "spa",
    public=True,
    redirect_uris=("https://spa.example/cb", "http://127.0.0.1:9999/cb"),
    scopes=("openid", "profile"),
    token_endpoint_auth_method="none",
    consent=False,
)
SVC = ClientSpec(
    "svc",
    secret_hash=SVC_HASH,
    grant_types=("client_credentials",),
    scopes=("api.read", "api.write"),
)
CLIENTS = {c.client_id: c for c in (APP1, APP2, SPA, SVC)}
SECRETS = {"app1": APP1_SECRET, "app2": APP2_SECRET, "svc": SVC_SECRET}
ALICE = Subject("alice", START - 100, ("password",), "sid-alice")


@dataclass
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Users:
    known: dict[str, UserClaims] = field(
        default_factory=lambda: {
            "alice": UserClaims("Alice Liddell", "alice@example.org", ("staff", "admins"))
        }
    )

    async def claims(self, username: str) -> UserClaims | None:
        return self.known.get(username)


KEYS = SigningKeys.generate()


@dataclass
class Env:
    provider: Provider
    clock: Clock
    store: OAuth2Store


def make_provider(db: Database, clock: Clock | None = None) -> Env:
    clock = clock or Clock()
    store = OAuth2Store(db.engine)
    config = ProviderConfig(SETTINGS, CLIENTS, KEYS)
    return Env(Provider(store, config, Users(), clock), clock, store)


def with_env(url: str, body: Callable[[Env], Awaitable[T]]) -> T:
    async def go() -> T:
        db = Database(url)
        try:
            return await body(make_provider(db))
        finally:
            await db.dispose()

    return asyncio.run(go())


def basic(client_id: str, secret: str | None = None) -> dict[str, str]:
    secret = SECRETS[client_id] if secret is None else secret
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def post(
    p: Provider, name: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> HttpAnswer:
    return await p.endpoint(name, "POST", {**FORM, **(headers or {})}, urlencode(form))


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def auth_query(client: ClientSpec = APP1, **more: str) -> dict[str, str]:
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0] if client.redirect_uris else "",
        "scope": "openid profile",
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    query.update(more)
    return {k: v for k, v in query.items() if v != ""}


async def code_for(
    p: Provider, client: ClientSpec = APP1, user: Subject = ALICE, attempt: str = "a1", **more: str
) -> str:
    outcome = await p.authorize(auth_query(client, **more), user, "granted", attempt)
    assert isinstance(outcome, Redirect), outcome
    params = query_of(outcome.location)
    assert params["iss"] == ISSUER
    return params["code"]


async def exchange(
    p: Provider, code: str, client: ClientSpec = APP1, verifier: str | None = VERIFIER
) -> HttpAnswer:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uris[0],
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    if client.public:
        return await post(p, "token", {**form, "client_id": client.client_id})
    if client.token_endpoint_auth_method == "client_secret_post":
        secret = {"client_id": client.client_id, "client_secret": SECRETS[client.client_id]}
        return await post(p, "token", {**form, **secret})
    return await post(p, "token", form, basic(client.client_id))


def body(answer: HttpAnswer) -> Any:
    return answer.json()

"""The Administration service's token routes, in-process (its Starlette app with a real store
and home): the admin token is required, every operation works and is audited in both logs,
and no answer carries a seed but the URI of a token the call generated."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from gatehouse.administration.app import create_app
from gatehouse.administration.service import AdministrationService, migrate
from gatehouse.administration.signing import generate_private_key
from gatehouse.administration.store import AdminStore
from gatehouse.administration.tokens_api import HomeTokens
from gatehouse.cli import main
from gatehouse.oath import otp
from gatehouse.oath.keyuri import parse_uri
from gatehouse.oath.seeds import KEYRING_FILE, Keyring
from gatehouse.oath.store import TokenStore
from gatehouse.storage.engine import Database, create_engine
from gatehouse.storage.home import database_urls
from gatehouse.storage.models import AuditEvent
from gatehouse.trust.ca import CertificateAuthority
from tests.oath.test_pskc import FIGURE_6, PSK, SECRET

TOKEN = "operator-token-0123456789abcdef"
SEED = bytes(range(1, 21))
SEED_B32 = base64.b32encode(SEED).decode().rstrip("=")


@dataclass
class Client:
    app: Any
    home: Path
    answers: list[bytes] = field(default_factory=list)

    async def __call__(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        raw = b"" if body is None else orjson.dumps(body)
        route, _, query = path.partition("?")
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        if token is not None:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": route,
            "raw_path": route.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8001),
            "state": {},
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        data = b"".join(chunks)
        self.answers.append(data)
        return status, json.loads(data) if data else None

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self(method, path, body)
        assert status == 200, answer
        return answer

    async def tokens(self) -> TokenStore:
        return TokenStore(create_engine(database_urls(self.home).oath_db))

    def seed(self, serial: str, token: Any) -> bytes:
        ring = Keyring.load(self.home / KEYRING_FILE)
        return ring.decrypt(token.seed_key_id, token.seed_ciphertext, serial.encode())


@asynccontextmanager
async def admin_app(home: Path) -> AsyncIterator[Client]:
    url = database_urls(home).user_db
    await migrate(url)
    ca = CertificateAuthority.create()
    key = generate_private_key()

    def make_service() -> AdministrationService:
        return AdministrationService(AdminStore(Database(url)), key, TOKEN, None, ca)

    app = create_app(make_service, tokens=lambda: HomeTokens(home))
    async with app.router.lifespan_context(app):
        yield Client(app, home)


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    home = tmp_path / "home"
    for user in ("alice", "bob"):
        assert main(["users", "add", user, "--home", str(home)]) == 0
    capsys.readouterr()
    return home


def run(home: Path, body: Callable[[Client], Any]) -> Any:
    async def go() -> Any:
        async with admin_app(home) as client:
            return await body(client)

    return asyncio.run(go())


async def user_db_audit(home: Path) -> list[tuple[str, str | None, dict[str, Any]]]:
    db = Database(database_urls(home).user_db)
    try:
        async with db.connect() as conn:
            query = select(AuditEvent.event, AuditEvent.username, AuditEvent.detail)
            rows = (await conn.execute(query.order_by(AuditEvent.id))).all()
    finally:
        await db.dispose()
    return [(r.event, r.username, dict(r.detail)) for r in rows]


CALLS = [
    ("GET", "/api/v1/tokens", None),
    ("POST", "/api/v1/tokens", {"user": "alice"}),
    ("POST", "/api/v1/tokens/import", {"content": f"x, {SEED.hex()}, hotp\n"}),
    ("POST", "/api/v1/tokens/rekey", None),
    ("GET", "/api/v1/tokens/S1", None),
    ("DELETE", "/api/v1/tokens/S1", None),
    ("POST", "/api/v1/tokens/S1/assign", {"user": "bob"}),
    ("POST", "/api/v1/tokens/S1/disable", None),
    ("POST", "/api/v1/tokens/S1/resync", {"code1": "123456", "code2": "654321"}),
]


def test_without_the_admin_token_nothing_is_done(home: Path) -> None:
    async def body(client: Client) -> None:
        await client.ok("POST", "/api/v1/tokens/import", {"content": f"S1, {SEED.hex()}, hotp\n"})
        for token in (None, "not-the-token-0123456789"):
            for method, path, payload in CALLS:
                status, answer = await client(method, path, payload, token=token)
                assert status == 401, (method, path, answer)
                assert answer["error"] == "unauthorized"
        store = await client.tokens()
        try:
            tokens = await store.list_tokens()
        finally:
            await store.engine.dispose()
        assert [(t.serial, t.owner, t.state) for t in tokens] == [("S1", None, "active")]
        assert tokens[0].seed_key_id == Keyring.load(home / KEYRING_FILE).current

    run(home, body)


def test_the_operator_manages_tokens_and_every_change_is_audited(home: Path) -> None:
    async def body(client: Client) -> None:
        added = await client.ok("POST", "/api/v1/tokens", {"user": "alice"})
        serial = added["token"]["serial"]
        assert serial.startswith("TOTP")
        assert added["token"]["owner"] == "alice"
        assert added["token"]["state"] == "active"
        uri = parse_uri(added["uri"])
        assert uri.issuer == "Gatehouse"
        store = await client.tokens()
        try:
            row = await store.get(serial)
        finally:
            await store.engine.dispose()
        generated = client.seed(serial, row)
        assert uri.secret == generated
        assert otp.totp(uri.secret, 1e9, 30, 6, "sha1") == otp.totp(generated, 1e9, 30, 6, "sha1")
        uri_answer = client.answers[-1]

        given = await client.ok(
            "POST",
            "/api/v1/tokens",
            {"user": "bob", "type": "hotp", "secret": SEED_B32, "digits": 8},
        )
        assert given["uri"] is None
        hotp_serial = given["token"]["serial"]
        listed = await client.ok("GET", "/api/v1/tokens?user=bob")
        assert [t["serial"] for t in listed] == [hotp_serial]
        assert listed[0]["digits"] == 8
        assert listed[0]["counter"] == 0

        path = f"/api/v1/tokens/{hotp_serial}"
        assert (await client.ok("POST", f"{path}/disable"))["state"] == "disabled"
        assert (await client.ok("POST", f"{path}/enable"))["state"] == "active"
        assert (await client.ok("POST", f"{path}/unlock"))["state"] == "active"
        assert (await client.ok("POST", f"{path}/unassign"))["owner"] is None
        assert (await client.ok("POST", f"{path}/assign", {"user": "alice"}))["owner"] == "alice"
        codes = {"code1": otp.hotp(SEED, 40, 8, "sha1"), "code2": otp.hotp(SEED, 41, 8, "sha1")}
        assert (await client.ok("POST", f"{path}/resync", codes))["counter"] == 42
        status, answer = await client("POST", f"{path}/resync", codes)
        assert status == 400
        assert "not two consecutive codes" in answer["message"]

        imported = await client.ok(
            "POST",
            "/api/v1/tokens/import",
            {"content": FIGURE_6, "psk": PSK.hex(), "assign": "bob", "name": "figure6.xml"},
        )
        assert imported == {"serials": ["987654321"]}
        rekeyed = await client.ok("POST", "/api/v1/tokens/rekey")
        assert rekeyed["rekeyed"] == 3
        assert rekeyed["failed"] == []
        listed = await client.ok("GET", "/api/v1/tokens")
        assert {t["seed_key_id"] for t in listed} == {rekeyed["key_id"]}
        store = await client.tokens()
        try:
            assert client.seed("987654321", await store.get("987654321")) == SECRET
            assert client.seed(hotp_serial, await store.get(hotp_serial)) == SEED
        finally:
            await store.engine.dispose()
        await client.ok("DELETE", path)
        assert (await client("GET", path))[0] == 404

        # No answer but the generating one carries a seed.
        for answer_bytes in client.answers:
            text = answer_bytes.decode()
            for seed in (SEED, SECRET, generated):
                if answer_bytes is uri_answer and seed == generated:
                    continue
                assert seed.hex() not in text
                assert base64.b32encode(seed).decode().rstrip("=") not in text
                assert base64.b64encode(seed).decode() not in text

        audit = await client.ok("GET", "/api/v1/audit?limit=100")
        actions = [
            entry["action"] for entry in reversed(audit) if entry["action"].startswith("token")
        ]
        assert actions == [
            "token.add",
            "token.add",
            "token.disable",
            "token.enable",
            "token.unlock",
            "token.unassign",
            "token.assign",
            "token.resync",
            "token.import",
            "token.rekey",
            "token.delete",
        ]
        assert {entry["who"] for entry in audit if entry["action"].startswith("token")} == {
            "admin-token"
        }
        events = await user_db_audit(client.home)
        assert [e[0] for e in events][:2] == ["token_added", "token_added"]
        assert {e[2]["by"] for e in events} == {"admin-api"}

    run(home, body)


def test_errors_name_what_is_wrong(home: Path) -> None:
    async def body(client: Client) -> None:
        status, answer = await client("POST", "/api/v1/tokens", {"user": "carol"})
        assert (status, answer["error"]) == (404, "not_found")
        assert answer["message"] == "user 'carol' does not exist"
        status, answer = await client(
            "POST", "/api/v1/tokens", {"user": "alice", "secret": "JBSWY3DPEHPK3PXP"}
        )
        assert status == 400
        assert "80 bits; at least 128 bits" in answer["message"]
        status, answer = await client("POST", "/api/v1/tokens", {"user": "alice", "digits": 7})
        assert status == 400
        status, answer = await client("POST", "/api/v1/tokens/NOPE/disable")
        assert (status, answer["message"]) == (404, "no token has serial 'NOPE'")
        status, answer = await client("POST", "/api/v1/tokens/NOPE/explode")
        assert status == 404
        bad = f"a1, {SEED.hex()}, hotp\na2, {SEED.hex()}, hotp\na3, zz, hotp\n"
        status, answer = await client("POST", "/api/v1/tokens/import", {"content": bad})
        assert status == 400
        assert answer["message"].startswith("line 3, column 2 (seed)")
        assert answer["message"].endswith("nothing was imported")
        assert await client.ok("GET", "/api/v1/tokens") == []
        await client.ok("POST", "/api/v1/tokens/import", {"content": f"a1, {SEED.hex()}, hotp\n"})
        status, answer = await client(
            "POST", "/api/v1/tokens/import", {"content": f"a1, {SEED.hex()}, hotp\n"}
        )
        assert (status, answer["error"]) == (409, "conflict")
        await client.ok("POST", "/api/v1/tokens/a1/assign", {"user": "alice"})
        status, answer = await client("POST", "/api/v1/tokens/a1/assign", {"user": "bob"})
        assert status == 409
        assert "assigned to 'alice'" in answer["message"]

    run(home, body)


def test_the_operator_requires_enrolment(home: Path) -> None:
    async def body(client: Client) -> None:
        path = "/api/v1/token-enrolment/alice"
        assert await client.ok("GET", path) == {"user": "alice", "required": False}
        status, _ = await client("PUT", path, {"required": True}, token=None)
        assert status == 401
        assert await client.ok("PUT", path, {"required": True}) == {
            "user": "alice",
            "required": True,
        }
        assert await client.ok("GET", path) == {"user": "alice", "required": True}
        status, answer = await client("PUT", "/api/v1/token-enrolment/carol", {})
        assert (status, answer["message"]) == (404, "user 'carol' does not exist")
        audit = await client.ok("GET", "/api/v1/audit?limit=10")
        assert audit[0]["action"] == "token.require_enrolment"

    run(home, body)


def test_a_real_administration_service_serves_the_token_routes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.administration.test_api import Admin

    home = tmp_path / "home"
    assert main(["users", "add", "alice", "--home", str(home)]) == 0
    process = Admin(home)
    try:
        admin = process.start()
        status, _ = admin.call("GET", "/api/v1/tokens", token=None)
        assert status == 401
        added = admin.ok("POST", "/api/v1/tokens", {"user": "alice", "type": "hotp"})
        serial = added["token"]["serial"]
        assert parse_uri(added["uri"]).params.type == "hotp"
        assert [t["serial"] for t in admin.ok("GET", "/api/v1/tokens")] == [serial]
    finally:
        process.stop()
    # The CLI on the same home sees the token the service made, under the same keyring.
    capsys.readouterr()
    assert main(["tokens", "list", "--home", str(home)]) == 0
    assert serial in capsys.readouterr().out
    assert len(Keyring.load(home / KEYRING_FILE).keys) == 1

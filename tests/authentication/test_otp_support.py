"""In-process Authentication apps for the OTP tests: the real Starlette app and its lifespan,
called through ASGI (no sockets), with a clock the test moves, and tokens put straight into
the OATH DB under the service's seed keyring."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from gatehouse.authentication.app import Service, create_app
from gatehouse.authentication.config import AuthenticationSettings
from gatehouse.internal.calls import Call
from gatehouse.oath.seeds import Keyring
from gatehouse.oath.store import TokenRow, TokenStore
from gatehouse.storage.models import AuditEvent

#: RFC 4226 / RFC 6238 seeds (test-vectors.md).
SHA1_SEED = b"12345678901234567890"
SHA256_SEED = b"12345678901234567890123456789012"
SHA512_SEED = b"1234567890123456789012345678901234567890123456789012345678901234"


class Clock:
    """Unix time as the service sees it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class App:
    """One running in-process Authentication service."""

    app: Any
    service: Service
    clock: Clock

    @property
    def store(self) -> TokenStore:
        assert self.service.otp is not None
        return self.service.otp.store

    async def call(self, call: Call[Any, Any], body: dict[str, Any]) -> tuple[int, Any]:
        """POST ``body`` to ``call``'s route; the status and the decoded JSON answer."""
        raw = orjson.dumps(body)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": call.method,
            "scheme": "http",
            "path": call.path,
            "raw_path": call.path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8201),
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
        return status, orjson.loads(b"".join(chunks))

    async def add_token(
        self,
        serial: str,
        owner: str,
        seed: bytes,
        *,
        type: str = "totp",
        algorithm: str = "sha1",
        digits: int = 6,
        period: int = 30,
        counter: int = 0,
        state: str = "active",
    ) -> TokenRow:
        assert self.service.otp is not None
        ring = self.service.otp.keys.get()
        key_id, blob = ring.encrypt(seed, serial.encode())
        return await self.store.add(
            serial,
            type=type,  # type: ignore[arg-type]
            seed_key_id=key_id,
            seed_ciphertext=blob,
            algorithm=algorithm,  # type: ignore[arg-type]
            digits=digits,
            period=period,
            owner=owner,
            state=state,  # type: ignore[arg-type]
            counter=counter,
        )

    async def events(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        """The audit events, oldest first: (event, username, detail)."""
        query = select(AuditEvent.event, AuditEvent.username, AuditEvent.detail).order_by(
            AuditEvent.id
        )
        async with self.service.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.event, row.username, dict(row.detail)) for row in rows]


def sqlite(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@contextlib.asynccontextmanager
async def running(
    tmp: Path,
    *,
    user_db: str | None = None,
    oath_db: str | None = None,
    keyring: Path | None = None,
    clock: Clock | None = None,
    failover_wait: float = 0.0,
    **settings: Any,
) -> AsyncIterator[App]:
    """An Authentication app (its lifespan started: DBs migrated, keyring loaded);
    ``failover_wait``: how long its work waits for an unavailable database."""
    clock = clock or Clock()
    config = AuthenticationSettings.model_validate(settings)
    app = create_app(
        config,
        user_db or sqlite(tmp / "gatehouse.db"),
        oath_db=oath_db or sqlite(tmp / "oath.db"),
        oath_keyring=keyring or tmp / "home" / "oath-seeds.key",
        failover_wait=failover_wait,
    )
    async with app.router.lifespan_context(app):
        service: Service = app.state.service
        assert service.otp is not None
        service.otp.clock = clock
        yield App(app, service, clock)


def keyring_of(path: Path) -> Keyring:
    return Keyring.load(path)

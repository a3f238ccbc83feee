"""The running Policy service: its parts, how they start and stop, and the decision call.

:class:`PolicyService` owns the session DB (migrated on start; if it is not reachable yet the
service starts anyway, answers 503 and keeps retrying), the user DB (for the audit log), the
failover client to the Authentication services, the event hub (with PostgreSQL LISTEN/NOTIFY
between instances) and the compiled rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gatehouse.authentication import audit
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.internal.client import FailoverClient, InternalCallError
from gatehouse.internal.endpoint import bad_request, parse_json_object
from gatehouse.policy.admin_api import AdminAPI, read_token
from gatehouse.policy.csrf import CsrfGuard, load_or_create_key
from gatehouse.policy.decision import (
    Authenticate,
    CompiledPolicy,
    DecisionInput,
    SessionView,
    decide,
)
from gatehouse.policy.events import EventHub, PostgresBridge
from gatehouse.policy.portal import (
    AuthUnavailable,
    Portal,
    PortalSettings,
    Verdict,
)
from gatehouse.policy.redirects import HostPatterns
from gatehouse.policy.sessions import Identity, SessionRecord, SessionStore, Timeouts
from gatehouse.storage.engine import Database
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import start_migrations

log = logging.getLogger("gatehouse.policy")

ROLE = "policy"
MAX_DECISION_BODY = 64 * 1024
PURGE_INTERVAL = 60.0
HEALTH_DB_TIMEOUT = 2.0
CSRF_KEY_FILE = "policy-csrf.key"
VERIFY_PATH = "/internal/v1/password/verify"


# --- the decision call: wire format ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    """A parsed ``DECISION_REQUEST``; ``url`` is the original URL (our addition)."""

    session: str | None
    url: str | None
    input: DecisionInput


_bad = bad_request

#: How long a session read from the DB answers decisions without another read. Revocations
#: this instance hears (its own, and other instances' through LISTEN/NOTIFY) drop it at once.
SESSION_CACHE_TTL = 2.0


def _required(data: Mapping[str, object], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise _bad(f"{name}: {'missing' if value is None else 'must be a string'}")
    return value


def _optional(data: Mapping[str, object], name: str) -> str | None:
    return None if data.get(name) is None else _required(data, name)


def parse_decision_request(body: bytes) -> DecisionRequest:
    """Parse and check a ``DECISION_REQUEST``; errors name the field at fault."""
    data = parse_json_object(body, MAX_DECISION_BODY)
    resource = _required(data, "resource")
    method = _required(data, "method")
    path = _required(data, "path")
    client_ip = _required(data, "client_ip")
    if not path.startswith("/"):
        raise _bad("path: must start with '/'")
    try:
        client_ip = ipaddress.ip_address(client_ip).compressed
    except ValueError:
        raise _bad(f"client_ip: not an IP address: {client_ip[:64]!r}") from None
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise _bad("headers: must be an object of strings")
    url = _optional(data, "url")
    if url is not None and not url.startswith(("http://", "https://", "/")):
        raise _bad("url: must be an absolute http(s) URL")
    return DecisionRequest(
        session=_optional(data, "session") or None,
        url=url,
        input=DecisionInput(
            resource=resource,
            method=method.upper(),
            path=path,
            client_ip=client_ip,
            headers={k.lower(): v for k, v in headers.items()},
            access_point=_optional(data, "ap") or "",
        ),
    )


def login_url(prefix: str, original: str) -> str:
    return f"{prefix}login?rd={quote(original, safe='')}"


def session_view(record: SessionRecord) -> SessionView:
    return SessionView(
        username=record.username,
        groups=frozenset(record.groups),
        email=record.email,
        display_name=record.display_name or None,
        methods=frozenset(record.methods),
        idle_expires_at=record.idle_expires_at,
        absolute_expires_at=record.absolute_expires_at,
    )


# --- the Authentication service ------------------------------------------------------------


def parse_verdict(data: Any) -> Verdict:
    """The answer of ``POST /internal/v1/password/verify``; ``ValueError`` if malformed."""
    if not isinstance(data, dict):
        raise ValueError("answer is not an object")
    result = data.get("result")
    if result == "invalid":
        return Verdict("invalid")
    if result == "locked":
        retry = data.get("retry_after")
        seconds = float(retry) if isinstance(retry, int | float) and retry > 0 else 60.0
        return Verdict("locked", retry_after=seconds)
    if result == "ok":
        user = data.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("username"), str):
            raise ValueError("ok without a user")
        groups = user.get("groups") or []
        email = user.get("email")
        display = user.get("display_name")
        identity = Identity(
            username=user["username"],
            display_name=display if isinstance(display, str) else "",
            email=email if isinstance(email, str) else None,
            groups=tuple(g for g in groups if isinstance(g, str)),
        )
        return Verdict("ok", identity)
    raise ValueError(f"unknown result {result!r}")


class AuthServiceChecker:
    """Checks passwords with the Authentication services, through the failover client."""

    def __init__(self, client: FailoverClient) -> None:
        self.client = client

    async def verify(self, username: str, password: str, client_ip: str) -> Verdict:
        body = {"username": username, "password": password, "client_ip": client_ip}
        try:
            # Not retry-safe: a failed attempt counts towards the lockout where it arrived.
            response = await self.client.call("POST", VERIFY_PATH, json=body, retry_safe=False)
        except InternalCallError as exc:
            raise AuthUnavailable(str(exc)) from exc
        if response.status != 200:
            raise AuthUnavailable(f"authentication service answered {response.status}")
        try:
            return parse_verdict(response.json())
        except ValueError as exc:
            raise AuthUnavailable(f"authentication service answer: {exc}") from None


# --- the service ---------------------------------------------------------------------------


def resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


class PolicyService:
    """Everything one Policy service process runs."""

    def __init__(
        self,
        config: PolicyConfig,
        *,
        session_db: str,
        user_db: str,
        home: Path,
        config_dir: Path,
    ) -> None:
        settings = config.policy
        self.config = config
        self.policy = CompiledPolicy.from_config(config)
        self.session_db_url = session_db
        self.instance = f"{settings.id}-{os.getpid()}-{secrets.token_hex(3)}"
        shared = session_db.startswith("postgresql")
        # With other instances on the same DB, streams wait until their revocations are heard.
        self.hub = EventHub(self.instance, live=not shared)
        self.session_db = Database(session_db)
        self.user_db = self.session_db if user_db == session_db else Database(user_db)
        timeouts = Timeouts(config.sessions.idle_timeout, config.sessions.absolute_timeout)
        self.sessions = SessionStore(
            self.session_db, timeouts, self._session_ended, cache_ttl=SESSION_CACHE_TTL
        )
        self.hub.revoke_listeners.append(self.sessions.forget)
        self.hub.reset_listeners.append(self.sessions.forget_all)
        self.client = FailoverClient(settings.authentication, connect_timeout=1.0, timeout=5.0)
        self.bridge = PostgresBridge(session_db, self.hub) if shared else None
        try:
            token = (
                read_token(resolve(settings.admin_token_file, config_dir))
                if settings.admin_token_file
                else None
            )
        except ValueError as exc:
            raise ConfigError([("policy.admin_token_file", str(exc))]) from None
        self.admin = AdminAPI(token, self.sessions, self.audit)
        login = config.login
        key_file = login.csrf_key_file
        key_path = resolve(key_file, config_dir) if key_file else home / CSRF_KEY_FILE
        try:
            csrf = CsrfGuard(load_or_create_key(key_path))
        except (OSError, ValueError) as exc:
            raise ConfigError([("login.csrf_key_file", f"{key_path}: {exc}")]) from None
        self.portal = Portal(
            PortalSettings(
                prefix=login.portal_prefix,
                title=login.title,
                cookie_name=config.sessions.cookie_name,
                cookie_domain=config.sessions.cookie_domain,
                trusted_proxies=tuple(settings.trusted_proxies),
                redirect_hosts=HostPatterns.of(login.allowed_redirect_hosts),
            ),
            self.sessions,
            AuthServiceChecker(self.client),
            csrf,
            self.audit,
        )
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # lifecycle

    async def start(self) -> None:
        migrating = await start_migrations(self.session_db_url, "session", self.ready)
        if migrating is not None:
            self._tasks.append(migrating)
        if self.bridge is not None:
            await self.bridge.start(timeout=2.0)
        self._tasks.append(asyncio.create_task(self._purge_forever()))

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            if not self.ready.is_set():
                continue
            try:
                purged = await self.sessions.purge_expired(datetime.now(UTC))
            except DatabaseUnavailable as exc:
                log.warning("could not purge expired sessions: %s", exc)
            except Exception:
                log.exception("purging expired sessions failed")
            else:
                if purged:
                    log.info("purged %d expired session(s)", len(purged))

    async def stop(self) -> None:
        self.hub.shutdown()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.bridge is not None:
            await self.bridge.close()
        await self.client.aclose()
        await self.session_db.dispose()
        if self.user_db is not self.session_db:
            await self.user_db.dispose()

    def require_ready(self) -> None:
        if not self.ready.is_set():
            raise DatabaseUnavailable("database unavailable: session DB not reachable yet")

    # calls

    async def health(self) -> dict[str, object]:
        self.require_ready()
        try:
            await asyncio.wait_for(self.session_db.ping(), HEALTH_DB_TIMEOUT)
        except TimeoutError:
            raise DatabaseUnavailable("database unavailable: health check timed out") from None
        return {"status": "ok", "role": ROLE, "instance": self.instance}

    async def decide(self, body: bytes) -> dict[str, object]:
        request = parse_decision_request(body)
        now = datetime.now(UTC)
        record = None
        if request.session is not None:
            self.require_ready()
            record = await self.sessions.lookup(request.session, now, cached=self.hub.live)
        decision = decide(
            self.policy,
            request.input,
            session_view(record) if record is not None else None,
            now,
        )
        if isinstance(decision, Authenticate):
            original = request.url or request.input.path
            return decision.to_json(login_url(self.config.login.portal_prefix, original))
        return decision.to_json()

    async def audit(
        self, event: str, username: str | None, client_ip: str | None, detail: dict[str, object]
    ) -> None:
        """Write an audit event; a failure is logged, never passed on to the caller."""
        try:
            await audit.record(self.user_db, event, username, client_ip, detail)
        except Exception as exc:
            log.error("audit event %s for %r not written: %s", event, username, exc)

    async def _session_ended(self, records: Sequence[SessionRecord], reason: str) -> None:
        hashes = [r.id_hash for r in records]
        self.hub.revoked(hashes)
        if self.bridge is not None:
            await self.bridge.notify(hashes)

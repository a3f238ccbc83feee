"""The running Administration service: its settings file, its credentials and every API call.

:class:`AdministrationService` does what the API promises on top of the store
(:class:`~gatehouse.administration.store.AdminStore`); the HTTP layer (:mod:`.app`) only turns
requests into its calls and answers into JSON. The newest version is kept in memory, so the
services' long polls are answered without touching the database.

Credentials: the admin token is a file under the home (mode 0600, made on first start);
the installation's internal CA (HOME/ca, :mod:`gatehouse.trust.ca`) issues every service its
certificate at enrolment (the identity from the join token, the key from the service's CSR)
and at renewal; a service's own calls are authenticated by that certificate (the TLS peer),
and a revoked one is refused. Administrators call the API with a personal token
(:mod:`.admins_store`) or the admin token, the break-glass identity (:meth:`authenticate`);
what they change is audited under their name (:mod:`.admins`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import logging
import os
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import Field, field_validator

from gatehouse.administration import api_models as api
from gatehouse.administration.acks import AckWriter
from gatehouse.administration.admins import BREAK_GLASS, BREAK_GLASS_ACTOR, Actor, actor_name
from gatehouse.administration.admins_signin import CredentialChecker
from gatehouse.administration.admins_store import AdminAccounts
from gatehouse.administration.canonical import timestamp
from gatehouse.administration.diff import diff_configs, diff_documents
from gatehouse.administration.document import config_document, parse_config
from gatehouse.administration.errors import (
    AdminAlreadyRunning,
    AdminError,
    Forbidden,
    NoDraft,
    UnknownService,
    VersionNotFound,
)
from gatehouse.administration.lock import AdminLock, acquire_admin_lock
from gatehouse.administration.model import ROLE_NAMES, Listen, ServiceId
from gatehouse.administration.oauth_admin import SigningKeyKeeper
from gatehouse.administration.oauth_keys import KEYRING_FILE as OAUTH_KEYRING_FILE
from gatehouse.administration.signing import Ed25519PrivateKey, public_key_pem
from gatehouse.administration.store import (
    Ack,
    AdminStore,
    IssuedCertificate,
    ServiceStatus,
    Version,
    token_hash,
)
from gatehouse.administration.waiters import VersionWatch
from gatehouse.config.access_point import parse_listen
from gatehouse.config.base import Strict
from gatehouse.config.loader import load_file
from gatehouse.config.policy import Duration
from gatehouse.errors import ConfigError
from gatehouse.internal.errors import Code
from gatehouse.metrics.settings import MetricsSettings
from gatehouse.oath.seeds import Keyring
from gatehouse.storage.engine import Database
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.home import DatabaseURL, database_urls, resolve_relative_sqlite
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.retry import DEFAULT_FAILOVER_WAIT
from gatehouse.storage.types import utcnow
from gatehouse.trust.ca import DEFAULT_LIFETIME, MAX_LIFETIME, CertificateAuthority, CsrInvalid
from gatehouse.trust.identity import SERVICE_ROLES, Identity, Peer

log = logging.getLogger("gatehouse.administration")

ROLE: Literal["administration"] = "administration"
ADMIN = BREAK_GLASS
KEY_FILE = "admin-signing.pem"
TOKEN_FILE = "admin.token"
CONFIG_FILE = "administration.yaml"
DEFAULT_LISTEN = "127.0.0.1:8001"
#: The longest a config request may wait for a new version.
MAX_WAIT = 60.0
#: A service not seen for this long is not healthy (it polls at least every MAX_WAIT).
HEALTHY_WINDOW = timedelta(seconds=MAX_WAIT + 30)
SECRET_BYTES = 32
MIN_TOKEN_LENGTH = 16


# --- the settings file ---------------------------------------------------------------------


class AdministrationSettings(Strict):
    """``administration:`` in the Administration service's config file."""

    id: ServiceId = "admin"
    listen: Listen = DEFAULT_LISTEN
    database: DatabaseURL | None = Field(
        default=None, description="default: the home's user DB (HOME/databases.yaml)"
    )
    key_file: str | None = Field(default=None, description=f"default: HOME/{KEY_FILE}")
    admin_token_file: str | None = Field(default=None, description=f"default: HOME/{TOKEN_FILE}")
    lock_check_interval: Duration = 5.0
    #: How long the services' configuration acknowledgements wait for this database through
    #: a failover (a primary being replaced) before answering 503; read at start.
    database_failover_wait: Duration = Field(default=DEFAULT_FAILOVER_WAIT, ge=0, le=300)
    #: The metrics listener (``GET /metrics``); read at start.
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    #: How long the internal certificates this service issues are valid; services renew
    #: theirs at about two thirds (the default, 7 days, lets Admin be down two days).
    certificate_lifetime: Duration = DEFAULT_LIFETIME.total_seconds()

    @field_validator("certificate_lifetime")
    @classmethod
    def _lifetime(cls, value: float) -> float:
        if value > MAX_LIFETIME.total_seconds():
            raise ValueError(f"must be at most {MAX_LIFETIME.days} days")
        return value


class AdministrationConfig(Strict):
    administration: AdministrationSettings = Field(default_factory=AdministrationSettings)


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings with every path and URL resolved."""

    id: str
    host: str
    port: int
    database: str
    key_file: Path
    token_file: Path
    lock_check_interval: float
    certificate_lifetime: timedelta = DEFAULT_LIFETIME
    #: The key file the OAuth signing keys are sealed under (HOME/oauth-keys.key).
    oauth_keyring: Path | None = None
    #: The metrics listener's ``HOST:PORT`` (None: none).
    metrics_listen: str | None = None
    #: ``database_failover_wait``: how long acknowledgements wait for the database.
    failover_wait: float = DEFAULT_FAILOVER_WAIT


def _resolve(path: str | None, base: Path, default: Path) -> Path:
    if not path:
        return default
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def load_settings(
    config_path: str | Path | None, home: Path, listen: tuple[str, int] | None = None
) -> Settings:
    """Read the config file (None or missing: defaults) and resolve it against ``home``;
    relative file names are relative to the config file's directory."""
    if config_path is not None and Path(config_path).exists():
        config = load_file(AdministrationConfig, config_path)
        base = Path(config_path).resolve().parent
    elif config_path is not None:
        raise ConfigError([("", "cannot read config file: no such file")], str(config_path))
    else:
        config, base = AdministrationConfig(), home
    own = config.administration
    home = home.absolute()
    database = (
        resolve_relative_sqlite(own.database, home) if own.database else database_urls(home).user_db
    )
    host, port = listen or parse_listen(own.listen)
    return Settings(
        id=own.id,
        host=host,
        port=port,
        database=database,
        key_file=_resolve(own.key_file, base, home / KEY_FILE),
        token_file=_resolve(own.admin_token_file, base, home / TOKEN_FILE),
        lock_check_interval=own.lock_check_interval,
        certificate_lifetime=timedelta(seconds=own.certificate_lifetime),
        oauth_keyring=home / OAUTH_KEYRING_FILE,
        metrics_listen=own.metrics.listen,
        failover_wait=own.database_failover_wait,
    )


# --- credentials ---------------------------------------------------------------------------


def read_token(path: Path) -> str:
    """The admin token: the file's first line, at least 16 characters."""
    try:
        lines = path.read_text(encoding="utf-8").strip().splitlines()
    except OSError as exc:
        raise ConfigError(
            [("", f"cannot read the admin token: {exc.strerror}")], str(path)
        ) from None
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            [("", f"the admin token must be at least {MIN_TOKEN_LENGTH} characters")], str(path)
        )
    return token


def ensure_admin_token(path: Path) -> bool:
    """Write a new random admin token (mode 0600) unless the file exists; True if written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ConfigError(
            [("", f"cannot write the admin token: {exc.strerror}")], str(path)
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(SECRET_BYTES) + "\n")
    return True


def bearer(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer X`` header."""
    scheme, _, value = (header or "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


class Unauthorized(AdminError):
    code = Code.UNAUTHORIZED
    status = 401


class BadRequest(AdminError):
    code = Code.BAD_REQUEST
    status = 400


class VersionConflict(AdminError):
    """A service says it runs a version newer than any published here (a restored or
    different database): it must not be handed an older one silently."""

    code = Code.CONFLICT
    status = 409


async def migrate(url: str) -> None:
    """Create or migrate every table of the Administration service (branch ``admin``)."""
    await upgrade(url, "admin")


async def prepare_database(url: str) -> Version | None:
    """Create or migrate the Administration tables; return the newest version."""
    await migrate(url)
    store = AdminStore(Database(url))
    try:
        return await store.latest_version()
    finally:
        await store.close()


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _issued(certificate: x509.Certificate, service_id: str, role: str) -> IssuedCertificate:
    return IssuedCertificate(
        certificate.serial_number,
        service_id,
        role,
        certificate.not_valid_before_utc,
        certificate.not_valid_after_utc,
    )


# --- the service ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Report:
    version: int | None
    error: str | None
    at: datetime


class AdministrationService:
    """Every call of the Administration API, on top of the store."""

    def __init__(
        self,
        store: AdminStore,
        key: Ed25519PrivateKey,
        admin_token: str,
        latest: Version | None,
        ca: CertificateAuthority,
        clock: Callable[[], datetime] = utcnow,
        certificate_lifetime: timedelta = DEFAULT_LIFETIME,
        oauth_keyring: Keyring | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.public_key = public_key_pem(key)
        self.ca = ca
        self.certificate_lifetime = certificate_lifetime
        self._admin_hash = token_hash(admin_token)
        self._latest = latest
        self.watch = VersionWatch(latest.number if latest else 0)
        self.clock = clock
        self._polled: dict[str, datetime] = {}
        self._reports: dict[str, _Report] = {}
        self.acks = AckWriter(store.record_acks)
        # Only this process revokes (it holds the one-Admin lock), so the set is cached.
        self._revoked: set[int] | None = None
        #: The OAuth signing keys (None: this service makes none, e.g. in unit tests).
        self.oauth_keys: SigningKeyKeeper | None = None
        if oauth_keyring is not None:
            self.oauth_keys = SigningKeyKeeper(self, oauth_keyring)
        #: Named administrators, their personal tokens and console sessions.
        self.admins = AdminAccounts(store.db, clock, writer=store._write)
        #: Checks console sign-ins with the Authentication services (None: no console
        #: sign-in here, e.g. in unit tests).
        self.checker: CredentialChecker | None = None
        #: Admin's own client context (its certificate), to read the Access Points' status.
        self.client_context: ssl.SSLContext | None = None

    @property
    def latest(self) -> Version | None:
        """The newest published version."""
        return self._latest

    # credentials

    async def authenticate(self, header: str | None) -> Actor:
        """Who calls the admin API: the home's admin token (break-glass) or an
        administrator's personal token.

        Raises:
            Unauthorized: neither (401).
        """
        given = bearer(header)
        if given is not None and hmac.compare_digest(token_hash(given), self._admin_hash):
            return BREAK_GLASS_ACTOR
        actor = await self.admins.authenticate_token(given) if given is not None else None
        if actor is None:
            raise Unauthorized(
                "a valid bearer token is required: a personal token ('gatehouse admins tokens "
                "create') or the home's admin token"
            )
        return actor

    async def revoked(self) -> set[int]:
        """Serials of the revoked certificates that have not expired."""
        if self._revoked is None:
            self._revoked = await self.store.revoked_serials()
        return self._revoked

    async def authorize_service(self, service_id: str | None, peer: Peer | None) -> Peer:
        """The calling service, when its certificate names ``service_id`` (None: any
        service) and is not revoked.

        Raises:
            Forbidden: no certificate, another's, or a revoked one (403).
        """
        if peer is None:
            whose = f"of {service_id!r}" if service_id else "of a service"
            raise Forbidden(
                f"this call needs the client certificate {whose} (issued when it registered)"
            )
        if peer.role not in SERVICE_ROLES or (
            service_id is not None and peer.service_id != service_id
        ):
            expected = f"{service_id!r}'s" if service_id else "a service's"
            raise Forbidden(f"the client certificate is {peer.identity}'s, not {expected}")
        if peer.serial in await self.revoked():
            raise Forbidden(
                f"the certificate of {peer.service_id!r} (serial {peer.serial:x}) is revoked; "
                "enrol the service again with a new join token"
            )
        return peer

    def _issue(self, csr: str, identity: Identity) -> x509.Certificate:
        try:
            return self.ca.issue(csr, identity, lifetime=self.certificate_lifetime)
        except CsrInvalid as exc:
            raise BadRequest(str(exc)) from None

    # anyone

    async def health(self) -> api.HealthOut:
        await self.store.db.check_health()
        return api.HealthOut(status="ok", role=ROLE, version=self.watch.latest)

    # the configuration

    async def draft(self) -> api.DraftOut:
        draft = await self.store.get_draft()
        if draft is None:
            raise NoDraft("there is no draft yet; apply a configuration first")
        return api.DraftOut(
            text=draft.source, updated_at=timestamp(draft.saved_at), updated_by=draft.saved_by
        )

    async def save_draft(self, source: str, allow_removal: Sequence[str] = ()) -> None:
        """Save a draft that is valid (an invalid one changes nothing: ConfigError) and
        removes nothing that runs unless ``allow_removal`` names it (RemovalRefused)."""
        parse_config(source)
        await self.store.save_draft(source, actor_name(), allow_removal)

    async def diff(self, since: int | None) -> str:
        draft = await self.store.get_draft()
        if draft is None:
            raise NoDraft("there is no draft yet; apply a configuration first")
        new = parse_config(draft.source)
        base = self._latest if since is None else await self.store.get_version(since)
        if base is None:
            return diff_configs(None, new, "(nothing published)", "draft")
        label = f"version {base.number}"
        try:
            old = base.config()
        except ConfigError:  # published under rules that have grown stricter since
            return diff_documents(base.content, config_document(new), label, "draft")
        return diff_configs(old, new, label, "draft")

    async def publish(self, comment: str) -> int:
        return self._published(await self.store.publish(actor_name(), self.key, comment))

    async def rollback(self, number: int, comment: str, allow_removal: Sequence[str] = ()) -> int:
        version = await self.store.rollback(number, actor_name(), self.key, comment, allow_removal)
        return self._published(version)

    async def publish_text(self, source: str, comment: str) -> int:
        """Publish ``source`` (a change made by the API, not the draft) as the next version."""
        return self._published(
            await self.store.publish_text(source, actor_name(), self.key, comment)
        )

    async def republish(self, reason: str) -> int:
        """Publish the newest configuration again (new signing keys, revocations)."""
        return await self._republish(reason)

    def _published(self, version: Version) -> int:
        if self.oauth_keys is not None:
            self.oauth_keys.wake()  # the signing settings may have changed
        if self._latest is None or version.number > self._latest.number:
            self._latest = version
        self.watch.published(version.number)
        log.info("published version %d (%s)", version.number, version.info.comment or "-")
        return version.number

    async def versions(self, limit: int) -> list[api.VersionSummary]:
        return [
            api.VersionSummary(
                version=info.number,
                created_at=timestamp(info.created_at),
                created_by=info.created_by,
                comment=info.comment,
                rollback_of=info.rollback_of,
            )
            for info in await self.store.list_versions(limit)
        ]

    async def version(self, number: int) -> api.VersionOut:
        version = await self.store.get_version(number)
        info = version.info
        listed = version.content.get("services") or []
        return api.VersionOut(
            version=info.number,
            created_at=timestamp(info.created_at),
            created_by=info.created_by,
            comment=info.comment,
            rollback_of=info.rollback_of,
            text=version.source,
            services=[s["id"] for s in listed if isinstance(s, dict) and "id" in s],
        )

    # services, tokens, audit

    async def services(self) -> list[api.ServiceOut]:
        now = self.clock()
        certificates = await self.store.certificates()
        return [
            self._service_out(status, now, certificates.get(status.id))
            for status in await self.store.list_services()
        ]

    def _service_out(
        self, status: ServiceStatus, now: datetime, certificate: IssuedCertificate | None = None
    ) -> api.ServiceOut:
        seen = [t for t in (status.last_seen_at, self._polled.get(status.id)) if t is not None]
        last_seen = max(seen) if seen else None
        healthy = (
            last_seen is not None
            and now - last_seen <= HEALTHY_WINDOW
            and status.last_error is None
            and status.running_version == self.watch.latest
        )
        report = self._reports.get(status.id)
        return api.ServiceOut(
            id=status.id,
            role=status.role,  # type: ignore[arg-type]  # registered with a valid role
            node=status.node,
            endpoint=status.endpoint,
            running_version=status.running_version,
            last_seen_at=timestamp(last_seen) if last_seen else None,
            last_error=status.last_error,
            healthy=healthy,
            last_report=api.Report(
                version=report.version, error=report.error, at=timestamp(report.at)
            )
            if report
            else None,
            certificate=api.CertificateOut(
                serial=f"{certificate.serial:x}",
                not_before=timestamp(certificate.not_before),
                not_after=timestamp(certificate.not_after),
                revoked=certificate.revoked_at is not None,
            )
            if certificate
            else None,
        )

    async def join_token(self, request: api.JoinTokenIn) -> api.JoinTokenOut:
        ttl = timedelta(seconds=request.ttl)
        expires = self.clock() + ttl
        fingerprint = self.ca.fingerprint
        token = await self.store.create_join_token(
            request.role, request.service_id, actor_name(), ttl, fingerprint, request.replace
        )
        return api.JoinTokenOut(
            token=token, expires_at=timestamp(expires), ca_fingerprint=fingerprint
        )

    async def revoke(self, service_id: str, reason: str = "") -> api.RevokeOut:
        """Revoke every certificate of ``service_id`` and publish the list at once."""
        serials = await self.store.revoke_service(service_id, actor_name(), reason)
        (await self.revoked()).update(serials)
        number = await self._republish(f"revoked the certificates of {service_id!r}")
        log.warning(
            "revoked the certificates of %r (%s)",
            service_id,
            ", ".join(f"{s:x}" for s in serials) or "none left",
        )
        return api.RevokeOut(revoked=[f"{s:x}" for s in serials], version=number)

    async def _republish(self, reason: str) -> int:
        """Publish the newest configuration again, with today's revocations; the number."""
        version = await self.store.republish(actor_name(), self.key, reason)
        if version is None:
            return self.watch.latest
        return self._published(version)

    async def audit(self, limit: int, before: int | None) -> list[api.AuditOut]:
        return [
            api.AuditOut(
                id=entry.id,
                at=timestamp(entry.at),
                who=entry.who,
                action=entry.action,
                what=entry.what,
                diff=entry.diff,
            )
            for entry in await self.store.audit_log(limit, before)
        ]

    # calls of the services themselves

    async def register(self, request: api.RegisterIn) -> api.RegisterOut:
        """Enrol with a one-time token made for this service: its certificate names the
        token's role and id (the CSR only proves the key)."""
        configured = self._configured_role(request.service_id)
        if configured is not None and configured != request.role:
            raise BadRequest(
                f"role: {request.service_id!r} is {_a(ROLE_NAMES[configured])} in version "
                f"{self.watch.latest}, not {_a(ROLE_NAMES[request.role])}"
            )
        certificate = self._issue(request.csr, Identity(request.role, request.service_id))
        enrolment = await self.store.enrol(
            request.token,
            request.service_id,
            request.role,
            request.node,
            request.endpoint,
            _issued(certificate, request.service_id, request.role),
        )
        if enrolment.replaced:
            log.warning(
                "enrolled %r again (--replace); revoked its old certificates: %s",
                request.service_id,
                ", ".join(f"{s:x}" for s in enrolment.revoked) or "none in use",
            )
            if enrolment.revoked:
                (await self.revoked()).update(enrolment.revoked)
                await self._republish(f"enrolled {request.service_id!r} again")
        return api.RegisterOut(
            certificate=_pem(certificate),
            ca=self.ca.certificate_pem.decode("ascii"),
            public_key=self.public_key,
        )

    async def renew(self, peer: Peer, request: api.RenewIn) -> api.RenewOut:
        """A new certificate for the calling service's new key: the same identity."""
        certificate = self._issue(request.csr, peer.identity)
        await self.store.record_certificate(_issued(certificate, peer.service_id, peer.role))
        return api.RenewOut(
            certificate=_pem(certificate), ca=self.ca.certificate_pem.decode("ascii")
        )

    def _configured_role(self, service_id: str) -> str | None:
        """The role the newest version gives ``service_id`` (None: not in it)."""
        if self._latest is None:
            return None
        listed = self._latest.content.get("services") or []
        return next((s.get("role") for s in listed if s.get("id") == service_id), None)

    async def config_for(
        self, service_id: str, after: int, wait: float, serial: int | None = None
    ) -> dict[str, object] | None:
        """The newest signed envelope of a service once it is newer than ``after``; None
        when ``wait`` seconds pass without one. ``serial``: the caller's certificate, checked
        again after the wait (a revocation publishes a version, which ends the wait)."""
        self._polled[service_id] = self.clock()
        if after > self.watch.latest:
            raise VersionConflict(
                f"{service_id!r} runs version {after}, but the newest version here is "
                f"{self.watch.latest}: is this the installation's Administration service?"
            )
        if after == self.watch.latest and await self.watch.wait_newer(after, wait) is None:
            self._polled[service_id] = self.clock()
            return None
        self._polled[service_id] = self.clock()
        if serial is not None and serial in await self.revoked():
            raise Forbidden(f"the certificate of {service_id!r} (serial {serial:x}) is revoked")
        latest = self._latest
        if latest is None:  # pragma: no cover - the watch says a version exists
            raise VersionNotFound("no version has been published yet")
        envelope = latest.envelopes.get(service_id)
        if envelope is None:
            raise UnknownService(f"service {service_id!r} is not in version {latest.number}")
        return envelope

    async def ack(self, service_id: str, request: api.AckIn) -> None:
        version, error = request.version, request.error
        if error is None and version is not None and version > self.watch.latest:
            raise BadRequest(f"version: there is no version {version} to run")
        if error is None:
            what = f"{service_id} runs version {version}" if version else f"{service_id} runs none"
        else:
            what = f"{service_id} failed to apply version {version}: {error}"
        await self.acks.record(Ack(service_id, version, error, audit=what))
        self._reports[service_id] = _Report(version, error, self.clock())


# --- the one-Admin lock --------------------------------------------------------------------


#: Pause between attempts to take the lock again while the database is unavailable, seconds.
RETAKE_PAUSE = 0.25


class LockKeeper:
    """Holds the one-Admin lock on a thread of its own and checks it every ``interval``.

    The thread has its own event loop because a PostgreSQL lock lives on a connection, and
    a connection belongs to the loop that opened it; the server's loop is uvicorn's.

    A PostgreSQL lock is lost with its connection, and a database failover or restart ends
    every connection: the keeper then takes the lock again, trying for up to ``retake``
    seconds (``database_failover_wait``) while the database is unavailable. Only when another
    Administration service holds it by then, or the database stayed away, is the lock lost:
    ``on_lost`` runs (on the keeper's thread) so the process can stop.
    """

    def __init__(
        self, url: str, interval: float, on_lost: Callable[[], None], retake: float = 0.0
    ) -> None:
        self.url = url
        self.interval = interval
        self.on_lost = on_lost
        self.retake = retake
        self.lost = False
        #: How many times the lock was taken again after a connection to it was lost.
        self.retaken = 0
        self.description = ""
        self._acquired: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="admin-lock", daemon=True)

    def start(self) -> None:
        """Take the lock; raises what taking it raised (AdminAlreadyRunning, ...)."""
        self._thread.start()
        self.description = self._acquired.result()

    def stop(self) -> None:
        """Release the lock and end the thread."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has just ended
                loop.call_soon_threadsafe(stop.set)
        self._thread.join()

    def _run(self) -> None:
        asyncio.run(self._hold())

    async def _hold(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            lock = await acquire_admin_lock(self.url)
        except BaseException as exc:
            self._acquired.set_exception(exc)
            return
        self._acquired.set_result(lock.description)
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
                if self._stop.is_set() or await lock.still_held():
                    continue
                await lock.release()
                again = await self._take_again() if lock.retakeable else None
                if again is None:
                    self.lost = True
                    log.error("lost the Administration lock (%s); stopping", lock.description)
                    self.on_lost()
                    return
                lock = again
        finally:
            await lock.release()

    async def _take_again(self) -> AdminLock | None:
        """The lock taken again after its connection was lost; None when another Admin holds
        it or the database did not come back within ``retake`` seconds."""
        deadline = time.monotonic() + self.retake
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                lock = await acquire_admin_lock(self.url)
            except AdminAlreadyRunning as exc:
                log.error("the Administration lock was taken by another service: %s", exc)
                return None
            except DatabaseUnavailable as exc:
                if time.monotonic() >= deadline:
                    log.error("the database did not come back within %gs: %s", self.retake, exc)
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RETAKE_PAUSE)
                continue
            self.retaken += 1
            log.warning("took the Administration lock again (%s)", lock.description)
            return lock
        return None


_HOLDER = re.compile(r"pid[ =](?P<pid>\d+)(?: on)? host[ =](?P<host>[^\s,()]+)")


def already_running(error: AdminAlreadyRunning) -> str:
    """``another Administration service is running (pid N on HOST)``, from the lock's
    longer message (which names the holder for SQLite and PostgreSQL alike)."""
    match = _HOLDER.search(error.message)
    if match is None:
        return error.message
    return f"another Administration service is running (pid {match['pid']} on {match['host']})"

"""The Authentication service's HTTP app (Starlette): the Auth endpoints of docs/internal-api.md.

Every answer is JSON. A database that is down answers 503 ``unavailable`` so the caller fails
over; a request that cannot be parsed answers 400 naming the field; nothing answers a
traceback. Migrations run on start; if the database is not reachable yet the service starts
anyway, answers 503 and keeps retrying in the background.

Following the Administration service (``--state``), :meth:`Service.apply` applies each new
version: ``lockout`` and ``password_hash`` live, swapped as one value (an attempt under way
finishes under the rules it started with; stored hashes with other parameters are upgraded
at the user's next successful login); ``otp`` live too. ``id``, ``listen``, ``user_db``,
``oath_db`` and ``oath_keyring`` are read once at start: a version changing them is still
applied, acknowledged and saved as last-known-good, they take effect at the next start, and a
warning names them.

One-time passwords (:mod:`gatehouse.authentication.otp`) need the OATH DB, migrated on start
like the user DB (branch ``oath``), and the seed key file (created 0600 if missing). While
either cannot be used the OTP calls answer 503 saying why, and password checks keep working.

One-time codes by e-mail or SMS (:mod:`gatehouse.authentication.code_checks`) need the same
two and the Distribution services (``distribution``: URLs preferred first, over mutual TLS
with this service's credentials); ``codes`` and ``distribution`` apply live (a new list gets
a new failover client, the old one is closed once the calls using it are done).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.authentication import invitations, lockout, oauth_service
from gatehouse.authentication.calls import (
    CODE_SEND,
    CODE_STATUS,
    CODE_VERIFY,
    HEALTH,
    OTP_CONFIRM,
    OTP_ENROL,
    OTP_STATUS,
    OTP_VERIFY,
    VERIFY,
    Account,
    CodeSendAnswer,
    CodeSendRequest,
    CodeStatusAnswer,
    CodeStatusRequest,
    CodeVerifyAnswer,
    CodeVerifyRequest,
    ConfirmRequest,
    EnrolAnswer,
    EnrolRequest,
    OtpAnswer,
    OtpRequest,
    StatusAnswer,
    StatusRequest,
    VerifyAnswer,
    VerifyRequest,
)
from gatehouse.authentication.code_checks import CodeChecks
from gatehouse.authentication.code_store import CodeStore
from gatehouse.authentication.config import AuthenticationConfig, AuthenticationSettings
from gatehouse.authentication.distribution_client import RETIRE_GRACE, FailoverDistribution
from gatehouse.authentication.oauth_keys_client import Fetch
from gatehouse.authentication.oauth_service import DirectoryUsers, OAuthService
from gatehouse.authentication.otp import OtpChecker, SeedKeys
from gatehouse.authentication.otp import Rules as OtpRules
from gatehouse.authentication.passwords import Overloaded, Passwords
from gatehouse.authentication.verifier import Invalid, Limits, Locked, Ok, Outcome, Rules, Verifier
from gatehouse.config.loader import validate
from gatehouse.internal.config_agent import ConfigAgent, config_fields
from gatehouse.internal.direct import DirectCalls
from gatehouse.internal.endpoint import http_error, unexpected_error
from gatehouse.internal.errors import Code, ServiceError, json_response
from gatehouse.internal.managed import follow_admin
from gatehouse.internal.service_tls import revocations_of
from gatehouse.metrics.service import count_authentication
from gatehouse.oath.store import TokenStore
from gatehouse.storage.engine import Database, warm_when_ready
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import start_migrations
from gatehouse.storage.types import utcnow
from gatehouse.trust.identity import Peer
from gatehouse.trust.tls import Credentials

log = logging.getLogger("gatehouse.authentication")

ROLE = "authentication"
#: Settings read once at start (see the module docstring).
RESTART_ONLY = (
    "id",
    "listen",
    "user_db",
    "oath_db",
    "oath_keyring",
    "oauth2_db",
    "oauth_keys_file",
)
#: Seconds between purges of expired login counters (the first runs once the DB is ready).
PURGE_INTERVAL = 60.0

#: The wire error code of a password check refused because too many are under way.
OVERLOADED = "overloaded"

Handler = Callable[[Request], Awaitable[Response]]


def check_view(view: dict[str, Any]) -> AuthenticationConfig:
    """The agent's check of a published view: this service's model."""
    return validate(AuthenticationConfig, view, "the published configuration")


def restart_only_changes(started: AuthenticationSettings, new: AuthenticationSettings) -> list[str]:
    """The settings read once at start that ``new`` sets otherwise, as ``authentication.X``."""
    return [
        f"authentication.{name}"
        for name in RESTART_ONLY
        if getattr(started, name) != getattr(new, name)
    ]


class Service:
    """The running service's parts; ``ready`` once the user DB is migrated, ``oath_ready``
    once the OATH DB is.

    Args:
        settings: the settings to start with.
        user_db: the user DB URL (read once).
        agent: the config agent when following Admin; it runs next to the service and
            applies each new version with :meth:`apply`.
        oath_db: the OATH DB URL; None: no one-time passwords (their calls answer 503).
        oath_keyring: the seed key file (created if missing); None as for ``oath_db``.
        credentials: this service's internal TLS credentials (its calls to Distribution are
            mutual TLS with them); None: plaintext.
    """

    def __init__(
        self,
        settings: AuthenticationSettings,
        user_db: str,
        agent: ConfigAgent | None = None,
        *,
        oath_db: str | None = None,
        oath_keyring: Path | None = None,
        credentials: Credentials | None = None,
        oauth2_db: str | None = None,
        oauth_keys: Path | None = None,
        oauth_fetch: Fetch | None = None,
        failover_wait: float = 0.0,
    ) -> None:
        self.started = settings
        self.credentials = credentials
        self.settings = settings
        self.user_db = user_db
        self.agent = agent
        # Sign-ins wait for the user DB through a failover (lockout counters, audit).
        self.db = Database(user_db, failover_wait=failover_wait)
        self.verifier = Verifier(self.db, _passwords(settings), Limits.of(settings.lockout))
        self.ready = asyncio.Event()
        self.oath_url = oath_db
        self.oath_db: Database | None = None
        self.oath_ready = asyncio.Event()
        self.otp: OtpChecker | None = None
        self.codes: CodeChecks | None = None
        self.distribution: FailoverDistribution | None = None
        if oath_db is not None and oath_keyring is not None:
            self.oath_db = (
                self.db if oath_db == user_db else Database(oath_db, failover_wait=failover_wait)
            )
            keys = SeedKeys(oath_keyring)
            rules = OtpRules.of(settings.otp)
            # OTP checks wait for the OATH DB through a failover, as sign-ins do.
            tokens = TokenStore(self.oath_db.engine, self.oath_db.waiting)
            self.otp = OtpChecker(tokens, keys, self.db, rules)
            self.codes = CodeChecks(
                CodeStore(self.oath_db.engine, self.oath_db.waiting),
                keys,
                self.db,
                settings.codes,
                self._distribution(settings.distribution),
            )
        #: The OAuth 2.0 / OIDC provider (None: not configured, its calls answer 503).
        self.oauth: OAuthService | None = None
        if oauth2_db is not None and oauth_keys is not None:
            shared = {user_db: self.db}
            if oath_db is not None and self.oath_db is not None:
                shared[oath_db] = self.oath_db
            self.oauth = OAuthService(
                oauth2_db,
                settings.oauth,
                settings.invitations.portal_prefix,
                oauth_keys,
                DirectoryUsers(self.verifier.user),
                db=shared.get(oauth2_db),
                fetch=oauth_fetch,
                failover_wait=failover_wait,
            )
        self._tasks: list[asyncio.Task[None]] = []
        self._retiring: set[asyncio.Task[None]] = set()

    def _distribution(self, urls: list[str]) -> FailoverDistribution | None:
        """The client of the Distribution services at ``urls`` (None: none configured)."""
        self.distribution = (
            FailoverDistribution.of(
                list(urls), self.credentials, revocations=revocations_of(self.agent)
            )
            if urls
            else None
        )
        return self.distribution

    async def start(self) -> None:
        """Migrate now, or keep trying in the background while answering 503."""
        if self.distribution is not None:
            self.distribution.client.start_probing()
        if self.settings.lockout.insecure_no_rate_cap:
            log.warning("lockout.insecure_no_rate_cap is set: the ASVS rate cap is OFF")
        migrating = await start_migrations(self.user_db, "user", self.ready)
        if migrating is not None:
            self._tasks.append(migrating)
        self._tasks.append(asyncio.create_task(self._purge_forever()))
        self._tasks.append(asyncio.create_task(warm_when_ready(self.ready, self.db)))
        if self.otp is not None and self.oath_url is not None and self.oath_db is not None:
            self.otp.keys.load()
            migrating = await start_migrations(self.oath_url, "oath", self.oath_ready)
            if migrating is not None:
                self._tasks.append(migrating)
            if self.oath_db is not self.db:
                warming = warm_when_ready(self.oath_ready, self.oath_db)
                self._tasks.append(asyncio.create_task(warming))
            self._tasks.append(asyncio.create_task(invitations.send_forever(self)))
        if self.oauth is not None:
            await self.oauth.start()
        if self.agent is not None:
            follow = follow_admin(self.agent, self.apply, check_view)
            self._tasks.append(asyncio.create_task(follow))

    def apply(self, version: int, view: dict[str, Any]) -> None:
        """Check attempts under ``view``'s rules from now on; raises (keeping the running
        rules) if the view is refused. The swap itself is one assignment."""
        settings = check_view(view).authentication
        current = self.verifier.rules
        passwords = (
            current.passwords
            if settings.password_hash == self.settings.password_hash
            and settings.verify_queue == self.settings.verify_queue
            else _passwords(settings)
        )
        self.verifier.use(Rules(passwords, Limits.of(settings.lockout)))
        if self.otp is not None:
            self.otp.use(OtpRules.of(settings.otp))
        if self.codes is not None:
            previous = self.distribution
            distribution = previous
            if settings.distribution != self.settings.distribution:
                distribution = self._distribution(settings.distribution)
                if distribution is not None:
                    distribution.client.start_probing()
                if previous is not None:
                    task = asyncio.create_task(previous.aclose(RETIRE_GRACE))
                    self._retiring.add(task)
                    task.add_done_callback(self._retiring.discard)
            self.codes.use(settings.codes, distribution)
        if self.oauth is not None:
            self.oauth.apply(settings.oauth, settings.invitations.portal_prefix)
        self.settings = settings
        later = restart_only_changes(self.started, settings)
        if later:
            log.warning(
                "version %d changes %s: applied at the next start (the service keeps the "
                "values it started with until then)",
                version,
                ", ".join(later),
            )
        if settings.lockout.insecure_no_rate_cap:
            log.warning("lockout.insecure_no_rate_cap is set: the ASVS rate cap is OFF")

    async def purge(self) -> int:
        """Delete the expired login counters now; returns how many went."""
        async with self.db.connect() as conn:
            return await lockout.purge(conn, utcnow())

    async def _purge_forever(self) -> None:
        await self.ready.wait()
        while True:
            try:
                gone = await self.purge()
            except DatabaseUnavailable as exc:
                log.warning("purging expired login counters: %s", exc)
            except Exception:
                log.exception("purging expired login counters failed")
            else:
                if gone:
                    log.info("purged %d expired login counters", gone)
            if self.codes is not None and self.oath_ready.is_set():
                try:
                    await self.codes.purge()
                except DatabaseUnavailable as exc:
                    log.warning("purging expired one-time codes: %s", exc)
                except Exception:
                    log.exception("purging expired one-time codes failed")
            await asyncio.sleep(PURGE_INTERVAL)

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._retiring]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.distribution is not None:
            await self.distribution.aclose()
        if self.oauth is not None:
            await self.oauth.stop()
        if self.oath_db is not None and self.oath_db is not self.db:
            await self.oath_db.dispose()
        await self.db.dispose()

    def require_ready(self) -> None:
        if not self.ready.is_set():
            raise DatabaseUnavailable("database unavailable: user DB not reachable yet")

    def require_otp(self) -> OtpChecker:
        """The OTP checks, if they can run now (else 503 saying why)."""
        if self.otp is None:
            raise ServiceError(
                Code.UNAVAILABLE, "one-time passwords are not configured on this service", 503
            )
        self.require_ready()  # the audit log is in the user DB
        if not self.oath_ready.is_set():
            raise DatabaseUnavailable("database unavailable: OATH DB not reachable yet")
        return self.otp

    def require_codes(self) -> CodeChecks:
        """The code calls, if they can run now (else 503 saying why)."""
        if self.codes is None:
            raise ServiceError(
                Code.UNAVAILABLE, "one-time codes are not configured on this service", 503
            )
        self.require_otp()
        return self.codes


def _passwords(settings: AuthenticationSettings) -> Passwords:
    return Passwords(settings.password_hash, max_waiting=settings.verify_queue)


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def answer_of(outcome: Outcome) -> VerifyAnswer:
    """A verification's outcome as the wire says it (``VERIFY``'s answer)."""
    match outcome:
        case Ok(user, device):
            account = Account(
                user.username, user.display_name, user.email, user.groups, user.enabled
            )
            return VerifyAnswer("ok", account, device=device)
        case Locked(retry_after):
            return VerifyAnswer("locked", retry_after=retry_after)
        case Invalid():
            return VerifyAnswer("invalid")


async def health(request: Request, peer: Peer | None, body: None) -> dict[str, object]:
    service = _service(request)
    service.require_ready()
    # While the user DB is waited for (a failover), password checks wait for it: this service
    # is up, and its callers must not replay their checks on another one that waits too.
    await service.db.check_health()
    answer: dict[str, object] = {"status": "ok", "role": ROLE, **config_fields(service.agent)}
    if service.agent is not None:
        answer["config"] = service.agent.status().to_json()
    return answer


async def verify_password(
    request: Request, peer: Peer | None, parsed: VerifyRequest
) -> VerifyAnswer | Response:
    """A password check. Over mutual TLS only a Policy service gets here (``VERIFY``'s
    roles), so the client address it names is believed because of who sent it."""
    service = _service(request)
    service.require_ready()
    try:
        outcome = await service.verifier.verify(
            parsed.username, parsed.password, parsed.client_ip, parsed.device
        )
    except Overloaded as exc:
        # Nothing was counted: the caller may try another Authentication service.
        return json_response({"error": OVERLOADED, "message": str(exc)}, 503)
    answer = answer_of(outcome)
    count_authentication("password", answer.result)
    if parsed.otp and answer.result == "ok" and answer.user is not None:
        answer = await _with_otp_status(service, answer, answer.user.username)
    return answer


async def _with_otp_status(service: Service, answer: VerifyAnswer, username: str) -> VerifyAnswer:
    """``answer`` with the user's one-time password status, as ``OTP_STATUS`` would answer;
    unchanged when this service cannot tell now (the Policy service then asks for it)."""
    if service.otp is None or not service.oath_ready.is_set():
        return answer
    try:
        status = await service.otp.status(username)
    except DatabaseUnavailable as exc:
        log.info("password check of %r: no one-time password status: %s", username, exc)
        return answer
    return dataclasses.replace(answer, otp=status)


async def verify_otp(request: Request, peer: Peer | None, parsed: OtpRequest) -> OtpAnswer:
    """A one-time password check; over mutual TLS only a Policy service gets here."""
    otp = _service(request).require_otp()
    answer = await otp.verify(parsed.username, parsed.code, parsed.client_ip, parsed.attempt)
    count_authentication("otp", answer.result)
    return answer


async def enrol_otp(request: Request, peer: Peer | None, parsed: EnrolRequest) -> EnrolAnswer:
    otp = _service(request).require_otp()
    return await otp.enrol(parsed.username, parsed.issuer)


async def confirm_otp(request: Request, peer: Peer | None, parsed: ConfirmRequest) -> OtpAnswer:
    otp = _service(request).require_otp()
    return await otp.confirm(
        parsed.username, parsed.serial, parsed.code, parsed.client_ip, parsed.attempt
    )


async def otp_status(request: Request, peer: Peer | None, parsed: StatusRequest) -> StatusAnswer:
    otp = _service(request).require_otp()
    return await otp.status(parsed.username)


async def send_code(request: Request, peer: Peer | None, parsed: CodeSendRequest) -> CodeSendAnswer:
    """Send a one-time code; answered once a Distribution service accepted its message."""
    codes = _service(request).require_codes()
    return await codes.send(parsed.username, parsed.method, parsed.key, parsed.client_ip)


async def code_status(
    request: Request, peer: Peer | None, parsed: CodeStatusRequest
) -> CodeStatusAnswer:
    codes = _service(request).require_codes()
    return await codes.status(parsed.username, parsed.id)


async def verify_code(
    request: Request, peer: Peer | None, parsed: CodeVerifyRequest
) -> CodeVerifyAnswer:
    codes = _service(request).require_codes()
    answer = await codes.verify(
        parsed.username, parsed.method, parsed.code, parsed.client_ip, parsed.attempt
    )
    count_authentication(parsed.method, answer.result)
    return answer


def create_app(
    settings: AuthenticationSettings,
    user_db: str,
    agent: ConfigAgent | None = None,
    *,
    oath_db: str | None = None,
    oath_keyring: Path | None = None,
    credentials: Credentials | None = None,
    oauth2_db: str | None = None,
    oauth_keys: Path | None = None,
    oauth_fetch: Fetch | None = None,
    failover_wait: float = 0.0,
) -> Starlette:
    """The app; with ``agent``, the service follows Admin while it runs. Without ``oath_db``
    and ``oath_keyring`` the OTP calls answer 503; without ``oauth2_db`` and ``oauth_keys``
    (the signing key file) the OAuth calls do; ``oauth_fetch`` asks Admin for the private
    signing keys a view names (then ``oauth_keys`` is the state directory's key file)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = Service(
            settings,
            user_db,
            agent,
            oath_db=oath_db,
            oath_keyring=oath_keyring,
            credentials=credentials,
            oauth2_db=oauth2_db,
            oauth_keys=oauth_keys,
            oauth_fetch=oauth_fetch,
            failover_wait=failover_wait,
        )
        app.state.service = service
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        HEALTH.route(health),
        VERIFY.route(verify_password),
        OTP_VERIFY.route(verify_otp),
        OTP_ENROL.route(enrol_otp),
        OTP_CONFIRM.route(confirm_otp),
        OTP_STATUS.route(otp_status),
        CODE_SEND.route(send_code),
        CODE_STATUS.route(code_status),
        CODE_VERIFY.route(verify_code),
        *invitations.routes(),
        *oauth_service.routes(),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(DirectCalls, calls=oauth_service.direct_calls())],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected_error},
    )

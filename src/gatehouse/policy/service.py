"""The running Policy service: its parts, how they start and stop, and the decision call.

:class:`PolicyService` owns the session DB (migrated on start; if it is not reachable yet the
service starts anyway, answers 503 and keeps retrying), the user DB (for the audit log), the
event hub (with PostgreSQL LISTEN/NOTIFY between instances) and a :class:`Runtime`: what one
configuration version makes of the service (compiled rules, session timeouts, portal, the
failover client to the Authentication services, the admin API).

Following the Administration service (``--state``), each new version is turned into a new
:class:`Runtime` by :meth:`PolicyService.apply` and swapped in with one assignment: every
request reads ``service.runtime`` once, so it sees the old configuration or the new one,
never a mix. Everything is built before the swap (files read, rules compiled), so a version
that cannot be built raises and the running one stays.

What applies live and what at the next start:

- live: rules, ``global_rule``, ``resources``, ``identity_headers``, ``decision_ttl``,
  ``identity_assertion``, ``assertion_ttl`` (the signing key is this service's own, made
  once in its home: :mod:`gatehouse.policy.assertion_keys`),
  ``sessions`` (cookie name and domain, timeouts: a new ``absolute_timeout`` for sessions
  created from then on, a new ``idle_timeout`` at a session's next use), ``login.title``,
  ``login.allowed_redirect_hosts``, ``trusted_proxies``, the ``authentication`` endpoints (a
  new failover client; the old one is closed once the requests holding it are done), and the
  two files, ``admin_token_file`` and ``login.csrf_key_file``, which are read again at every
  version: a version naming a file that cannot be read is refused, so a last-known-good
  version is always one the service can start from.
- at the next start: ``policy.id``, ``policy.listen``, ``policy.session_db`` (connections,
  migrations and LISTEN/NOTIFY are set up once) and ``login.portal_prefix`` (the portal's
  routes are mounted at start; until then the service keeps its start prefix everywhere, in
  login URLs and cookie paths alike). A version changing them is still applied, acknowledged
  and saved as last-known-good: the rest of it applies now, they apply when the service
  restarts, and a warning names them.

Relative file paths are resolved against the configuration file's directory, or against the
home directory (``--home``) when the configuration comes from Admin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from gatehouse.authentication import audit
from gatehouse.authentication.calls import (
    CODE_SEND,
    CODE_STATUS,
    CODE_VERIFY,
    OTP_CONFIRM,
    OTP_ENROL,
    OTP_STATUS,
    OTP_VERIFY,
    VERIFY,
    CodeSendRequest,
    CodeStatusRequest,
    CodeVerifyRequest,
    ConfirmRequest,
    EnrolRequest,
    OtpRequest,
    StatusRequest,
    VerifyAnswer,
    VerifyRequest,
)
from gatehouse.authentication.calls import HEALTH as AUTH_HEALTH
from gatehouse.authentication.invitation_calls import (
    INVITATION_CHECK,
    INVITATION_CONFIRM,
    INVITATION_ENROL,
    InvitationAnswer,
    InvitationCheck,
    InvitationConfirm,
    InvitationEnrol,
    InvitationEnrolAnswer,
    InvitationRequest,
)
from gatehouse.config.loader import validate
from gatehouse.config.policy import PolicyConfig
from gatehouse.errors import ConfigError
from gatehouse.internal.calls import Call, CallRefused
from gatehouse.internal.client import FailoverClient, InternalCallError
from gatehouse.internal.client import Response as InternalResponse
from gatehouse.internal.config_agent import ConfigAgent
from gatehouse.internal.managed import follow_admin
from gatehouse.internal.service_tls import revocations_of
from gatehouse.metrics.service import observe_decision
from gatehouse.policy.admin_api import AdminAPI, read_token
from gatehouse.policy.assertion_keys import KEY_FILE as ASSERTION_KEY_FILE
from gatehouse.policy.assertion_keys import KeyRegistry, load_or_create_signing_key
from gatehouse.policy.bearer_tokens import BearerCache
from gatehouse.policy.calls import DecisionRequest
from gatehouse.policy.code_flow import Delivery, SendOutcome
from gatehouse.policy.csrf import CsrfGuard, load_or_create_key
from gatehouse.policy.decision import (
    Allow,
    Authenticate,
    CompiledPolicy,
    DecisionInput,
    SessionView,
    decide,
)
from gatehouse.policy.devices import DeviceCookies
from gatehouse.policy.events import EventHub, PostgresBridge
from gatehouse.policy.identity_assertion import AssertionIssuer
from gatehouse.policy.oauth_flow import OAuthFlow, SessionEndNotifier
from gatehouse.policy.otp_flow import Enrolment, EnrolmentRefused, OtpResult, OtpStatus
from gatehouse.policy.portal import (
    AuthOverloaded,
    AuthUnavailable,
    Portal,
    PortalSettings,
    Verdict,
    wait_url,
)
from gatehouse.policy.redirects import HostPatterns
from gatehouse.policy.sessions import Identity, SessionRecord, SessionStore, Timeouts
from gatehouse.storage.engine import POOL_SIZE, Database, warm_when_ready
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import start_migrations
from gatehouse.trust.identity import AUTHENTICATION, Peer
from gatehouse.trust.tls import ClientTLS, Credentials

log = logging.getLogger("gatehouse.policy")

Req = TypeVar("Req")
Ans = TypeVar("Ans")

ROLE = "policy"
PURGE_INTERVAL = 60.0
CSRF_KEY_FILE = "policy-csrf.key"
#: What the failover client probes on a down Authentication service.
AUTH_HEALTH_PATH = AUTH_HEALTH.path
#: Idle connections kept to each Authentication service (see where the client is made).
AUTH_MAX_IDLE = 32
#: How long a code send or status may take: the Authentication service calls a Distribution
#: service in turn, failing over between them within its own (shorter) timeouts, so the
#: call to it must outlast one hung Distribution service.
CODE_CALL_TIMEOUT = 8.0
#: The longest a replaced failover client waits for the requests still holding it.
RETIRE_GRACE = 30.0
#: Settings read once at start (see the module docstring).
RESTART_ONLY = (
    ("policy", "id"),
    ("policy", "listen"),
    ("policy", "session_db"),
    ("login", "portal_prefix"),
)


# --- the decision call ---------------------------------------------------------------------

#: How long a session read from the DB answers decisions without another read. Revocations
#: this instance hears (its own, and other instances' through LISTEN/NOTIFY) drop it at once.
SESSION_CACHE_TTL = 2.0


def decision_input(request: DecisionRequest, peer: Peer | None) -> DecisionInput:
    """What the rules see of a decision request. Over mutual TLS the Access Point is the one
    the caller's certificate names (only Access Points may ask: ``DECIDE``'s roles), whatever
    the body's ``ap`` says; on a plaintext listener (development) the body says it."""
    return DecisionInput(
        resource=request["resource"],
        method=request["method"],
        path=request["path"],
        client_ip=request["client_ip"],
        headers=request["headers"],
        access_point=request["ap"] if peer is None else peer.service_id,
    )


def login_url(prefix: str, original: str, step: str | None = None) -> str:
    """The portal's login page for ``original``; ``step=otp`` when the rule asks for a one-time
    password too (the portal then asks for it after the password, or alone for a step-up)."""
    url = f"{prefix}login?rd={quote(original, safe='')}"
    return f"{url}&step={step}" if step else url


#: Requests a decision may send to the wait page: a redirect replays them as they were.
_WAITABLE = frozenset({"GET", "HEAD"})


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


def verdict_of(answer: VerifyAnswer) -> Verdict:
    """A password check's answer as the portal uses it."""
    if answer.result != "ok":
        return Verdict(answer.result, retry_after=answer.retry_after)
    user = answer.user
    if user is None:
        raise ValueError("ok without a user")
    identity = Identity(
        username=user.username,
        display_name=user.display_name,
        email=user.email,
        groups=user.groups,
    )
    otp = answer.otp
    status = None if otp is None else OtpStatus(otp.active, otp.pending, otp.enrol_required)
    return Verdict("ok", identity, device=answer.device, otp=status)


class AuthServiceChecker:
    """Checks passwords with the Authentication services, through the failover client.

    Requests that may call it hold it (:meth:`in_use`), so a checker replaced by a new
    configuration closes its client only once they are done (:meth:`aclose`).

    ``db_wait``: how long an Authentication service may wait for its database through a
    failover (``database.failover_wait``). Every call here may write there (lockout counters,
    one-time password state), so each attempt's timeout is the client's plus that: a waiting
    Authentication service is not taken for a dead one, and the call is not replayed on
    another that would wait as well.
    """

    def __init__(self, client: FailoverClient, db_wait: float = 0.0) -> None:
        self.client = client
        self.db_wait = db_wait
        self._users = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        self._users += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._users -= 1
            if not self._users:
                self._idle.set()

    async def aclose(self, grace: float = 0.0) -> None:
        """Close the client once no request holds it, waiting at most ``grace`` seconds."""
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        await self.client.aclose()

    async def verify(
        self,
        username: str,
        password: str,
        client_ip: str,
        device: str | None = None,
        otp: bool = False,
    ) -> Verdict:
        request = VerifyRequest(username, password, client_ip, device, otp)
        try:
            # Retry-safe (``VERIFY``): a password check changes nothing but the shared
            # lockout counters. If an Authentication service dies after counting a failure
            # and before answering, the next one counts that attempt again: at worst one
            # extra failure (erring towards locking), while a right password resets the
            # counters. The user never sees the crash, which is what HA is for.
            answer = await VERIFY.invoke(self.client, request, timeout=self._timeout())
        except InternalCallError as exc:
            if any(_overloaded(failure.response) for failure in exc.failures):
                raise AuthOverloaded(str(exc)) from exc
            raise AuthUnavailable(str(exc)) from exc
        except CallRefused as exc:
            raise AuthUnavailable(f"authentication service answered {exc.status}") from None
        except ValueError as exc:  # an answer that does not decode
            raise AuthUnavailable(f"authentication service answer: {exc}") from None
        try:
            return verdict_of(answer)
        except ValueError as exc:
            raise AuthUnavailable(f"authentication service answer: {exc}") from None

    # One-time passwords. Every call is retry-safe by its declaration: a code is sent with
    # the attempt id of the form it came from, so the next Authentication service answers a
    # retry of an accepted code ok without accepting it twice.

    def _timeout(self, timeout: float | None = None) -> float:
        return (self.client.timeout if timeout is None else timeout) + self.db_wait

    async def _invoke(
        self, call: Call[Req, Ans], request: Req, timeout: float | None = None
    ) -> Ans:
        try:
            return await call.invoke(self.client, request, timeout=self._timeout(timeout))
        except InternalCallError as exc:
            if any(_overloaded(failure.response) for failure in exc.failures):
                raise AuthOverloaded(str(exc)) from exc
            raise AuthUnavailable(str(exc)) from exc
        except CallRefused as exc:
            if exc.status == 403 and call is OTP_ENROL:
                raise EnrolmentRefused(exc.message) from None
            raise AuthUnavailable(f"authentication service answered {exc.status}") from None
        except ValueError as exc:
            raise AuthUnavailable(f"authentication service answer: {exc}") from None

    async def otp_status(self, username: str) -> OtpStatus:
        answer = await self._invoke(OTP_STATUS, StatusRequest(username))
        return OtpStatus(answer.active, answer.pending, answer.enrol_required)

    async def otp_verify(self, username: str, code: str, client_ip: str, attempt: str) -> OtpResult:
        answer = await self._invoke(OTP_VERIFY, OtpRequest(username, code, client_ip, attempt))
        return OtpResult(answer.result, answer.retry_after)

    async def otp_enrol(self, username: str, issuer: str) -> Enrolment:
        answer = await self._invoke(OTP_ENROL, EnrolRequest(username, issuer))
        return Enrolment(answer.serial, answer.uri, answer.secret)

    async def otp_confirm(
        self, username: str, serial: str, code: str, client_ip: str, attempt: str
    ) -> OtpResult:
        answer = await self._invoke(
            OTP_CONFIRM, ConfirmRequest(username, serial, code, client_ip, attempt)
        )
        return OtpResult(answer.result, answer.retry_after)

    # Token invitations (gatehouse.policy.invitation_flow); retry-safe as the OTP calls.

    async def invitation_check(self, secret: str) -> InvitationCheck:
        return await self._invoke(INVITATION_CHECK, InvitationRequest(secret))

    async def invitation_enrol(
        self, secret: str, username: str, issuer: str
    ) -> InvitationEnrolAnswer:
        return await self._invoke(INVITATION_ENROL, InvitationEnrol(secret, username, issuer))

    async def invitation_confirm(
        self, secret: str, username: str, serial: str, code: str, client_ip: str, attempt: str
    ) -> InvitationAnswer:
        request = InvitationConfirm(secret, username, serial, code, client_ip, attempt)
        return await self._invoke(INVITATION_CONFIRM, request)

    # One-time codes by e-mail or SMS (gatehouse.policy.code_flow): a send is idempotent by
    # its key (a retry never sends a second code), a check by its attempt id.

    async def code_send(self, username: str, method: str, key: str, client_ip: str) -> SendOutcome:
        request = CodeSendRequest(username, method, key, client_ip)  # type: ignore[arg-type]
        answer = await self._invoke(CODE_SEND, request, timeout=CODE_CALL_TIMEOUT)
        return SendOutcome(
            answer.result,
            answer.id,
            answer.status,
            answer.recipient_hint,
            answer.retry_after,
            answer.message,
        )

    async def code_status(self, username: str, message_id: str) -> Delivery:
        request = CodeStatusRequest(username, message_id)
        answer = await self._invoke(CODE_STATUS, request, timeout=CODE_CALL_TIMEOUT)
        return Delivery(answer.status, answer.recipient_hint)

    async def code_verify(
        self, username: str, method: str, code: str, client_ip: str, attempt: str
    ) -> Literal["ok", "invalid", "expired", "locked"]:
        request = CodeVerifyRequest(username, method, code, client_ip, attempt)  # type: ignore[arg-type]
        return (await self._invoke(CODE_VERIFY, request)).result


def _overloaded(response: InternalResponse | None) -> bool:
    """An Authentication service's 503 ``overloaded``: up, but too busy for this check."""
    if response is None or response.status != 503:
        return False
    try:
        data = response.json()
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("error") == "overloaded"


# --- one configuration version -------------------------------------------------------------


def resolve(path: str, base: Path) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


@dataclass(frozen=True, slots=True)
class Files:
    """What a configuration's files hold, read before it is applied."""

    admin_token: str | None
    csrf_key: bytes


def read_files(config: PolicyConfig, base: Path, home: Path) -> Files:
    """Read the admin token and the CSRF key (creating the key file the first time).

    Blocking file I/O. Raises :class:`ConfigError` naming the setting at fault.
    """
    token_file = config.policy.admin_token_file
    try:
        token = read_token(resolve(token_file, base)) if token_file else None
    except ValueError as exc:
        raise ConfigError([("policy.admin_token_file", str(exc))]) from None
    key_file = config.login.csrf_key_file
    key_path = resolve(key_file, base) if key_file else home / CSRF_KEY_FILE
    try:
        key = load_or_create_key(key_path)
    except (OSError, ValueError) as exc:
        raise ConfigError([("login.csrf_key_file", f"{key_path}: {exc}")]) from None
    return Files(token, key)


def check_view(view: dict[str, Any]) -> PolicyConfig:
    """The agent's check of a published view: this service's model (pure, no I/O)."""
    return validate(PolicyConfig, view, "the published configuration")


def start_check(base: Path, home: Path) -> Callable[[dict[str, Any]], PolicyConfig]:
    """The check of the version to start from: the model and the files it names, so a
    version the service cannot be built from is never started from (the agent then waits
    for one it can use, telling Admin why)."""

    def check(view: dict[str, Any]) -> PolicyConfig:
        config = check_view(view)
        read_files(config, base, home)
        return config

    return check


def restart_only_changes(started: PolicyConfig, new: PolicyConfig) -> list[str]:
    """The settings read once at start that ``new`` sets otherwise, as ``section.field``."""
    changed = []
    for section, name in RESTART_ONLY:
        if getattr(getattr(started, section), name) != getattr(getattr(new, section), name):
            changed.append(f"{section}.{name}")
    return changed


@dataclass(frozen=True, slots=True)
class Runtime:
    """What one configuration version makes of the service. A request reads
    ``service.runtime`` once and uses only that, so a swap never shows it a mix."""

    version: int
    config: PolicyConfig
    policy: CompiledPolicy
    sessions: SessionStore
    checker: AuthServiceChecker
    portal: Portal
    admin: AdminAPI
    #: Signs identity assertions; None when no resource asks for one.
    assertions: AssertionIssuer | None = None
    #: The OAuth 2.0 / OIDC provider's pages and relays (gatehouse.policy.oauth_flow).
    oauth: OAuthFlow | None = None

    @property
    def portal_prefix(self) -> str:
        """The prefix the portal is mounted at (fixed at start)."""
        return self.portal.settings.prefix


# --- the service ---------------------------------------------------------------------------


class PolicyService:
    """Everything one Policy service process runs.

    Args:
        config: the configuration to start with.
        session_db, user_db: database URLs (read once).
        home: the installation directory (default CSRF key file).
        config_dir: what relative file paths in the configuration are relative to.
        agent: the config agent when following Admin; it runs next to the service and
            applies each new version with :meth:`apply`.
        version: the configuration version ``config`` is (0: a configuration file).

    Raises:
        ConfigError: a file named by the configuration cannot be read.
    """

    def __init__(
        self,
        config: PolicyConfig,
        *,
        session_db: str,
        user_db: str,
        home: Path,
        config_dir: Path,
        agent: ConfigAgent | None = None,
        version: int = 0,
        credentials: Credentials | None = None,
    ) -> None:
        settings = config.policy
        self.started = config
        #: Internal TLS: mutual TLS to the Authentication services (None: plaintext).
        self.credentials = credentials
        self.home = home
        self.config_dir = config_dir
        self.agent = agent
        self.session_db_url = session_db
        self.instance = f"{settings.id}-{os.getpid()}-{secrets.token_hex(3)}"
        shared = session_db.startswith("postgresql")
        # With other instances on the same DB, streams wait until their revocations are heard.
        self.hub = EventHub(self.instance, live=not shared)
        wait = config.database.failover_wait
        self.session_db = Database(session_db, failover_wait=wait)
        self.user_db = (
            self.session_db if user_db == session_db else Database(user_db, failover_wait=wait)
        )
        # Revocations heard from anywhere (this instance's stores, other instances) drop the
        # session from the running configuration's cache.
        self.hub.revoke_listeners.append(lambda hashes: self.runtime.sessions.forget(hashes))
        self.hub.reset_listeners.append(lambda: self.runtime.sessions.forget_all())
        self.bridge = PostgresBridge(session_db, self.hub) if shared else None
        #: Ended sessions' refresh tokens are revoked in the background (OAUTH_SESSION_ENDED).
        self.oauth_ends = SessionEndNotifier()
        #: Bearer tokens introspected for ``token_scopes_any`` (by hash, at most 30 s).
        self.bearer = BearerCache()
        key_path = home / ASSERTION_KEY_FILE
        try:
            # This service's own identity assertion key; its public half goes to the session DB.
            self.keys = KeyRegistry(self.session_db, load_or_create_signing_key(key_path))
        except (OSError, ValueError) as exc:
            raise ConfigError([("home", f"{key_path}: {exc}")]) from None
        self.runtime = self.build(version, config, read_files(config, config_dir, home), None)
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._retiring: set[asyncio.Task[None]] = set()

    # configuration

    def build(
        self, version: int, config: PolicyConfig, files: Files, previous: Runtime | None
    ) -> Runtime:
        """A runtime for ``config``; settings read only at start come from the start config.
        The failover client is kept when the Authentication endpoints are the same."""
        policy = CompiledPolicy.from_config(config, f"version {version}" if version else "")
        sessions_config = config.sessions
        timeouts = Timeouts(sessions_config.idle_timeout, sessions_config.absolute_timeout)
        sessions = SessionStore(
            self.session_db, timeouts, self._session_ended, cache_ttl=SESSION_CACHE_TTL
        )
        endpoints, failover = config.policy.authentication, config.policy.failover
        if previous is not None and (
            previous.config.policy.authentication,
            previous.config.policy.failover,
        ) == (endpoints, failover):
            checker = previous.checker
        else:
            tls = (
                None
                if self.credentials is None
                else ClientTLS(
                    self.credentials.client,
                    frozenset({AUTHENTICATION}),
                    (),
                    # A revoked Authentication service is refused and dropped at the publish.
                    revocations_of(self.agent),
                )
            )
            # max_idle: the OAuth2 endpoints relayed here come as many at once as the Access
            # Points send; fewer idle connections than that opens and closes one per call.
            client = FailoverClient.from_settings(
                endpoints,
                failover,
                name="authentication",
                health_path=AUTH_HEALTH_PATH,
                tls=tls,
                max_idle=AUTH_MAX_IDLE,
            )
            checker = AuthServiceChecker(client, self.started.database.failover_wait)
        login = config.login
        portal = Portal(
            PortalSettings(
                prefix=self.started.login.portal_prefix,
                title=login.title,
                cookie_name=sessions_config.cookie_name,
                cookie_domain=sessions_config.cookie_domain,
                trusted_proxies=tuple(config.policy.trusted_proxies),
                redirect_hosts=HostPatterns.of(login.allowed_redirect_hosts),
            ),
            sessions,
            checker,
            CsrfGuard(files.csrf_key),
            self.audit,
            devices=DeviceCookies(files.csrf_key),
            otp=checker,
            codes=checker,
            invitations=checker,
        )
        admin = AdminAPI(files.admin_token, sessions, self.audit)
        assertions = AssertionIssuer.from_config(config, self.keys.key)
        oauth = OAuthFlow(portal, checker.client, config.oauth)
        return Runtime(version, config, policy, sessions, checker, portal, admin, assertions, oauth)

    async def apply(self, version: int, view: dict[str, Any]) -> None:
        """Run ``view`` from now on; raises (keeping the running version) if it cannot be
        built. The swap itself is one assignment."""
        config = check_view(view)
        files = await asyncio.to_thread(read_files, config, self.config_dir, self.home)
        previous = self.runtime
        runtime = self.build(version, config, files, previous)
        self.runtime = runtime
        # Decisions cached by the Access Points were made under the old rules.
        self.hub.policy_changed(version)
        later = restart_only_changes(self.started, config)
        if later:
            log.warning(
                "version %d changes %s: applied at the next start (the service keeps the "
                "values it started with until then)",
                version,
                ", ".join(later),
            )
        previous.sessions.forget_all()
        if runtime.checker is not previous.checker:
            runtime.checker.client.start_probing()
            self._retire(previous.checker)

    def _retire(self, checker: AuthServiceChecker) -> None:
        task = asyncio.create_task(checker.aclose(RETIRE_GRACE))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # lifecycle

    async def start(self) -> None:
        migrating = await start_migrations(self.session_db_url, "session", self.ready)
        if migrating is not None:
            self._tasks.append(migrating)
        if self.bridge is not None:
            await self.bridge.start(timeout=2.0)
        self._tasks.append(asyncio.create_task(self._purge_forever()))
        self._tasks.append(asyncio.create_task(self._publish_key_forever()))
        self._tasks.append(asyncio.create_task(self._warm()))
        # Down Authentication services are probed in the background; fail-back after `rise`.
        self.runtime.checker.client.start_probing()
        if self.agent is not None:
            follow = follow_admin(self.agent, self.apply, check_view)
            self._tasks.append(asyncio.create_task(follow))

    async def _warm(self) -> None:
        """Once migrated: open the database pools and prepare the session lookup on them."""
        databases = {id(db): db for db in (self.session_db, self.user_db)}.values()
        await warm_when_ready(self.ready, *databases)
        try:
            await self.runtime.sessions.warm(POOL_SIZE)
        except DatabaseUnavailable as exc:
            log.warning("could not warm the session lookup: %s", exc)

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            if not self.ready.is_set():
                continue
            try:
                purged = await self.runtime.sessions.purge_expired(datetime.now(UTC))
            except DatabaseUnavailable as exc:
                log.warning("could not purge expired sessions: %s", exc)
            except Exception:
                log.exception("purging expired sessions failed")
            else:
                if purged:
                    log.info("purged %d expired session(s)", len(purged))

    async def _publish_key_forever(self) -> None:
        """Keep this service's assertion key in the published key set (and drop stale ones)."""
        await self.ready.wait()
        while True:
            now = datetime.now(UTC)
            try:
                await self.keys.register(now)
                await self.keys.purge(now)
            except DatabaseUnavailable as exc:
                log.warning("could not publish the identity assertion key: %s", exc)
            except Exception:
                log.exception("publishing the identity assertion key failed")
            await asyncio.sleep(PURGE_INTERVAL)

    async def stop(self) -> None:
        self.hub.shutdown()
        await self.oauth_ends.drain()
        tasks = [*self._tasks, *self._retiring]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.bridge is not None:
            await self.bridge.close()
        await self.runtime.checker.aclose()
        await self.session_db.dispose()
        if self.user_db is not self.session_db:
            await self.user_db.dispose()

    def require_ready(self) -> None:
        if not self.ready.is_set():
            raise DatabaseUnavailable("database unavailable: session DB not reachable yet")

    # calls

    async def health(self) -> dict[str, object]:
        self.require_ready()
        # While the database is waited for (a failover), this service still answers
        # decisions and holds sign-ins until it is back: it is up, not dead, and its
        # callers must not move their work to another Policy service that waits as well.
        waiting = self.session_db.waited_for
        await self.session_db.check_health()
        answer: dict[str, object] = {
            "status": "ok",
            "database": "waiting" if waiting else "ok",
            "role": ROLE,
            "instance": self.instance,
            "authentication": self.runtime.checker.client.routing(),
        }
        if self.agent is not None:
            answer["config"] = self.agent.status().to_json()
        return answer

    async def decide(self, request: DecisionRequest, peer: Peer | None = None) -> dict[str, object]:
        """The ``DECISION`` for ``request`` from ``peer`` (None: a plaintext listener),
        counted in the metrics by outcome, with its duration."""
        started = time.perf_counter()
        try:
            answer = await self._decide(request, peer)
        except Exception:
            observe_decision("error", started)
            raise
        observe_decision(str(answer.get("decision", "error")), started)
        return answer

    async def _decide(self, request: DecisionRequest, peer: Peer | None) -> dict[str, object]:
        runtime = self.runtime
        now = datetime.now(UTC)
        record = None
        session = request["session"]
        if session is not None:
            self.require_ready()
            # stale_ok: while the database is being waited for, sessions read recently are
            # answered from that read (gatehouse.policy.sessions).
            try:
                record = await runtime.sessions.lookup(
                    session, now, cached=self.hub.live, stale_ok=True
                )
            except DatabaseUnavailable:
                if request["method"] not in _WAITABLE:
                    raise  # 503: the AP asks another Policy service, or answers 503
                # A session this service has not read lately, while the database is being
                # replaced: the browser waits on the portal's wait page (which waits for the
                # database longer than an AP waits for a decision), then comes back here.
                original = request["url"] or request["path"]
                return {
                    "decision": "authenticate",
                    "methods": [],
                    "step_up": False,
                    "login_url": wait_url(runtime.portal_prefix, original),
                }
        token = None
        if request["resource"] in runtime.policy.token_resources and request["headers"].get(
            "authorization"
        ):
            with runtime.checker.in_use():
                token = await self.bearer.lookup(
                    runtime.checker.client, request["headers"]["authorization"], now
                )
        decision = decide(
            runtime.policy,
            decision_input(request, peer),
            session_view(record) if record is not None else None,
            now,
            *(token or (None, None)),
        )
        if isinstance(decision, Authenticate):
            original = request["url"] or request["path"]
            return decision.to_json(login_url(runtime.portal_prefix, original, decision.step))
        if isinstance(decision, Allow) and runtime.assertions is not None:
            decision = runtime.assertions.stamp(decision, record, request["resource"], now)
        return decision.to_json()

    async def jwks(self) -> dict[str, object]:
        """The published key set of every Policy service's identity assertion key."""
        self.require_ready()
        return await self.keys.jwks(datetime.now(UTC))

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
        # The refresh tokens bound to a session that ended die with it.
        self.oauth_ends.ended(self.runtime.checker, records, reason)

"""The config agent: how a service follows the Administration service.

A service enrols once with a join token (:meth:`ConfigAgent.register`): the token names the
service and carries the fingerprint of the installation's internal CA, so the agent fetches
Admin's CA certificate (``GET /api/v1/ca``, the one unverified exchange), checks it against
the token, and from then on speaks to Admin only over TLS verified against that CA (the
server must be an ``administration`` certificate). It makes its key pair here and sends a CSR
with the token; Admin answers its certificate (role and id from the token), the CA and the
config-signing public key. Every later call (poll, ack, renewal) is authenticated by that
certificate, which the agent renews at about two thirds of its life (:meth:`ConfigAgent.run`)
and reloads into the same TLS contexts (:attr:`ConfigAgent.credentials`), so new handshakes
use it at once. Each applied envelope's list of revoked certificates goes to
:attr:`ConfigAgent.revocations`, which closes the connections they made.

A service starts from its
last-known-good snapshot when it has one, else from Admin's first version
(:meth:`ConfigAgent.initial`), then runs :meth:`ConfigAgent.run` as a background task: one long poll
``GET /api/v1/config/{id}?after=N&wait=30`` is always open, so Admin answers it the moment it
publishes (Admin never connects to a service). Each new signed envelope is verified, validated
by the service's own model, applied, saved as last-known-good and acknowledged; anything
refused leaves the running version in place and is acknowledged with a one-line error. While
Admin is unreachable (no answer: connection refused, reset, timed out) the service keeps
serving; the agent retries with back-off and catches up by pulling when Admin answers again.
An Admin that answers with an error status (``404 not_found``, ``401 unauthorized``) is
reachable: the agent logs the answer as what it is and backs off likewise. Contract:
docs/internal-api.md, "Administration".

Every version this module logs, reports and acknowledges is the number the Administration
service published (never a count of the service's own reloads).

What to do with an envelope (:func:`judge`) and the back-off schedule (:class:`Backoff`) are
pure; the I/O (HTTP through the failover client, files through :mod:`.lkg`) is around them.

Exceptions::

    GatehouseError
     ├── StateError                (lkg) the state directory or a file in it is unusable
     │    ├── NotRegistered        no admin.json: register first
     │    └── LastKnownGoodInvalid lkg.json is damaged or not signed by Admin for this service
     └── RegistrationFailed        Admin unreachable, or it refused the registration
          └── AdminUnavailable     not reached or 503: tried again for ``registration_wait``
          ├── JoinTokenRefused     the join token is malformed, unknown, expired, used or for
          │                        another service
          ├── CaMismatch           Admin shows another CA than the join token names
          └── SigningKeyChanged    Admin's config-signing key is not the one registered with
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from gatehouse.administration.errors import AdminError, SignatureInvalid
from gatehouse.administration.signing import (
    Ed25519PublicKey,
    load_public_key,
    timestamp,
    verify,
)
from gatehouse.errors import GatehouseError
from gatehouse.internal.client import (
    AllEndpointsFailed,
    FailoverClient,
    InternalCallError,
    Response,
)
from gatehouse.internal.lkg import (
    ROLES,
    AdminState,
    LastKnownGoodInvalid,
    NotRegistered,
    Snapshot,
    StateDir,
    StateError,
    check_service_id,
)
from gatehouse.trust.ca import fingerprint, key_pem, make_csr, make_key, renew_at
from gatehouse.trust.identity import ADMINISTRATION, Identity, IdentityError, identity_of
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import CERT_FILE, ClientTLS, Credentials, write_credentials

__all__ = [
    "Accepted",
    "AdminUnavailable",
    "AgentStatus",
    "Apply",
    "Backoff",
    "CaMismatch",
    "ConfigAgent",
    "JoinTokenRefused",
    "Judgement",
    "LastKnownGoodInvalid",
    "NotRegistered",
    "Refused",
    "RegistrationFailed",
    "SigningKeyChanged",
    "Snapshot",
    "StateError",
    "Validate",
    "agent_credentials",
    "config_fields",
    "describe",
    "judge",
    "one_line",
]

log = logging.getLogger("gatehouse.config_agent")

#: The service's own model check: raises (a ``ConfigError``) when the view is refused.
Validate = Callable[[dict[str, Any]], object]
#: The service's config swap: ``apply(version, view)``, plain or async. Raising means the
#: service kept its running configuration.
Apply = Callable[[int, dict[str, Any]], Awaitable[None] | None]

ERROR_LIMIT = 500
#: ``ghj1.<43 base64url characters of the CA's SHA-256>.<secret>``
_JOIN_TOKEN = re.compile(r"ghj1\.(?P<ca>[A-Za-z0-9_-]{43})\.(?P<secret>[A-Za-z0-9_-]{16,})\Z")
#: Renewal: at this fraction of a certificate's life, give or take the jitter.
RENEW_FRACTION = 2 / 3
RENEW_JITTER = 0.04
#: Seconds between tries of a renewal that failed (at most; less for short lifetimes).
RENEW_RETRY = 30.0


#: The credentials each agent of this process keeps (and reloads when it renews), by
#: directory: what the service's own listener and clients must use too.
_CREDENTIALS: dict[Path, Credentials] = {}


def agent_credentials(directory: str | Path) -> Credentials | None:
    """The :class:`Credentials` a config agent of this process keeps in ``directory``
    (``STATE_DIR/tls``), None if none does. The agent reloads them in place when it renews
    the certificate, so a listener built on them serves the new one with no restart."""
    return _CREDENTIALS.get(Path(directory).resolve())


def _keep(credentials: Credentials) -> Credentials:
    _CREDENTIALS[credentials.directory.resolve()] = credentials
    return credentials


class RegistrationFailed(GatehouseError):
    """Registration did not happen: Admin was unreachable or refused it."""


class AdminUnavailable(RegistrationFailed):
    """Registration did not happen and may be tried again: Admin could not be reached (no
    request was sent) or answered 503 (it took no action: busy, its database unavailable)."""


class JoinTokenRefused(RegistrationFailed):
    """Admin refused the join token: unknown, expired, already used or for another service
    (or the token is not one at all)."""


class CaMismatch(RegistrationFailed):
    """The Administration service shows another CA than the one the join token pins."""


class SigningKeyChanged(RegistrationFailed):
    """Admin's config-signing key differs from the one this service registered with."""


def pinned_fingerprint(token: str) -> str:
    """The CA fingerprint (``sha256:...``) a join token pins.

    Raises:
        JoinTokenRefused: not a join token of this Gatehouse (``ghj1.<CA>.<secret>``).
    """
    match = _JOIN_TOKEN.match(token.strip())
    if match is None:
        raise JoinTokenRefused(
            "not a join token: it is ghj1.<CA fingerprint>.<secret>, as 'gatehouse nodes "
            "token --role ROLE --id ID' prints it (a token made before internal TLS no longer "
            "works: make a new one)"
        )
    return "sha256:" + match["ca"]


# pure logic ------------------------------------------------------------------------------------


#: How long a service that registers keeps trying while Admin cannot be reached or answers
#: 503, seconds: a whole installation started at once (Admin among the others, or a hundred
#: services registering together) must not lose the services that asked first.
REGISTRATION_WAIT = 60.0
#: How long the registration call may take once sent, seconds. Its answer cannot be asked for
#: again (the join token works once), so it gets longer than other calls: an Admin enrolling
#: a hundred services at once answers the last of them after several seconds.
REGISTER_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds to wait after the n-th failure in a row: ``first``, doubling, at most ``cap``
    (0.5, 1, 2, 4, 8, 10, 10 ...)."""

    first: float = 0.5
    cap: float = 10.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        # The exponent is bounded so a long outage cannot overflow the float.
        return float(min(self.cap, self.first * self.factor ** min(failures - 1, 64)))


@dataclass(frozen=True, slots=True)
class Accepted:
    """Apply this view: Admin signed it for this service, newer than the running version.
    ``revoked``: the serials of the revoked internal certificates it lists."""

    version: int
    view: dict[str, Any]
    revoked: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Refused:
    """Keep the running version; acknowledge ``version`` (as claimed, ``None`` when the
    envelope names none) with ``error``.

    The number of a refused envelope is never trusted: polling does not move past it, so a
    forged envelope claiming a huge version cannot make the service skip Admin's real ones.
    """

    version: int | None
    error: str


Judgement = Accepted | Refused


def judge(
    body: bytes | str, public_key: Ed25519PublicKey, service_id: str, running: int
) -> Judgement:
    """Accept an envelope only when Admin signed it, for this service, with a version newer
    than the ``running`` one (0: none yet)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Refused(running or None, f"envelope is not JSON: {exc}")
    claimed = data.get("version") if isinstance(data, dict) else None
    if not isinstance(claimed, int) or isinstance(claimed, bool) or claimed < 1:
        claimed = running or None
    try:
        verified = verify(public_key, data, service=service_id)
    except SignatureInvalid as exc:
        return Refused(claimed, f"envelope refused: {exc}")
    if verified.version <= running:
        return Refused(
            verified.version,
            f"version {verified.version} is not newer than the running version {running}",
        )
    return Accepted(verified.version, verified.view, verified.revoked)


def one_line(text: str, limit: int = ERROR_LIMIT) -> str:
    """Several lines (a ``ConfigError`` has one per problem) joined with ``; ``, cut to
    ``limit`` characters: what goes into an ack and Admin's services table."""
    line = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def describe(exc: BaseException) -> str:
    """An exception as one line; ours speak for themselves, others are named."""
    text = str(exc) if isinstance(exc, GatehouseError) else f"{type(exc).__name__}: {exc}"
    return one_line(text)


def poll_path(service_id: str, after: int, wait: float) -> str:
    return f"/api/v1/config/{service_id}?after={after}&wait={wait:g}"


def _answer_of(response: Response) -> str:
    """``404 not_found: message`` (or ``HTTP 404``): an Admin error answer, for a log line."""
    text = _error_of(response)
    return text if text.startswith("HTTP ") else f"{response.status} {text}"


def _error_of(response: Response) -> str:
    """``code: message`` from an Admin error answer, or the status."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return one_line(f"{data.get('error', 'error')}: {data['message']}")
    return f"HTTP {response.status}"


# the agent -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """For a service's health answer and metrics."""

    #: The version the service runs, as Admin published it (0: none yet).
    version: int
    #: Whether Admin answered the latest exchange, even with an error status (False until
    #: the first answer, and while Admin is unreachable).
    connected: bool
    #: Why Admin cannot be followed right now (``""`` while it can): "Admin unreachable, …"
    #: (then ``connected`` is False) or "Admin answered the poll with 404 not_found: …".
    admin_error: str
    #: Why the latest version received was refused (``""`` once a newer one is applied).
    refused: str

    def to_json(self) -> dict[str, object]:
        """The ``"config"`` object of a service's health answer."""
        return {
            "version": self.version,
            "connected": self.connected,
            "admin_error": self.admin_error,
            "refused": self.refused,
        }


def config_fields(agent: ConfigAgent | None) -> dict[str, object]:
    """The fields every service's health answer carries about its configuration:
    ``"config_version"``, the version the Administration service published and the service
    runs (``null`` for a service started from a configuration file), and ``"config_source"``,
    ``"admin"`` or ``"file"``. The Access Point's workers say the same
    (:func:`gatehouse.access_point.runtime.health_answer`)."""
    if agent is None:
        return {"config_version": None, "config_source": "file"}
    return {"config_version": agent.version or None, "config_source": "admin"}


class ConfigAgent:
    """Follows Admin for one service, keeping its state in ``state_dir``.

    Args:
        state_dir: the service's state directory (created on registration).
        wait: seconds Admin may hold a poll open before answering 204.
        backoff: the retry schedule while Admin is unreachable or refuses.
        connect_timeout: seconds to connect to an Admin endpoint.

    Raises:
        StateError: ``admin.json`` exists but cannot be used.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        wait: float = 30.0,
        backoff: Backoff | None = None,
        connect_timeout: float = 1.0,
        registration_wait: float = REGISTRATION_WAIT,
    ) -> None:
        self.state_dir = StateDir(state_dir)
        self.wait = wait
        #: How long :meth:`register` keeps trying while Admin is unavailable (seconds).
        self.registration_wait = registration_wait
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self._state = self.state_dir.load_admin()
        self._key = None if self._state is None else load_public_key(self._state.public_key)
        #: This service's internal TLS credentials (``STATE_DIR/tls``), None before it
        #: enrolled. The agent renews the certificate and reloads it into these contexts.
        self.credentials: Credentials | None = None
        if (self.state_dir.tls_path / CERT_FILE).exists():
            self.credentials = _keep(Credentials(self.state_dir.tls_path))
        #: The revoked certificates Admin publishes, as of the newest envelope applied.
        #: Updated on the loop :meth:`run` runs on (the service's).
        self.revocations = Revocations()
        #: Called (on the agent's loop) after a renewed certificate is loaded.
        self.renewal_listeners: list[Callable[[], None]] = []
        #: The version the service runs (0: none).
        self.version = 0
        #: For metrics (UNIX time, 0: not yet): when the running version was taken (at
        #: start: when it was loaded) and when Admin accepted its acknowledgement.
        self.applied_at = 0.0
        self.acknowledged_at = 0.0
        # Poll for versions after this one: the running version, or a newer one Admin signed
        # that the service refused (it is not asked for again).
        self._after = 0
        self._pending_ack: tuple[int | None, str | None] | None = None
        self._connected = False
        self._admin_error = ""
        self._refused = ""
        self._running = False

    @property
    def state(self) -> AdminState | None:
        """The registration, ``None`` before :meth:`register`."""
        return self._state

    def status(self) -> AgentStatus:
        return AgentStatus(self.version, self._connected, self._admin_error, self._refused)

    # registration -------------------------------------------------------------------------
    async def register(
        self,
        admin_urls: Sequence[str],
        join_token: str,
        service_id: str,
        role: str,
        node: str,
        endpoint: str,
    ) -> AdminState:
        """Enrol with Admin: pin its CA by the join token's fingerprint, send a CSR for a key
        made here, store the certificate (``STATE_DIR/tls``) and Admin's public key.

        Registering again (a state directory that has a registration) keeps the
        last-known-good snapshot, but never a new config-signing key: that is refused.

        Raises:
            JoinTokenRefused: the token is malformed, unknown, expired, already used or made
                for another service.
            CaMismatch: Admin shows another CA than the token names.
            SigningKeyChanged: Admin's public key is not the one this service registered with.
            AdminUnavailable: Admin was unreachable or answered 503 for ``registration_wait``
                seconds (tried again meanwhile, backing off).
            RegistrationFailed: Admin refused otherwise, or answered nonsense, or the answer
                to the registration was lost (it may have used the token: not resent).
            StateError: the state cannot be written.
            ValueError: a malformed id, role or URL list.
        """
        check_service_id(service_id)
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        urls = tuple(admin_urls)
        pinned = pinned_fingerprint(join_token)
        deadline = time.monotonic() + self.registration_wait
        failures = 0
        while True:
            try:
                return await self._register_once(
                    urls, pinned, join_token, service_id, role, node, endpoint
                )
            except AdminUnavailable as exc:
                failures += 1
                delay = self.backoff.delay(failures)
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("%s; trying again in %.1f s", exc, delay)
                await asyncio.sleep(delay)

    async def _register_once(
        self,
        urls: tuple[str, ...],
        pinned: str,
        join_token: str,
        service_id: str,
        role: str,
        node: str,
        endpoint: str,
    ) -> AdminState:
        ca_pem = await self._fetch_ca(urls, pinned, service_id)
        key = make_key()
        body = {
            "token": join_token.strip(),
            "service_id": service_id,
            "role": role,
            "node": node,
            "endpoint": endpoint,
            "csr": make_csr(key).decode("ascii"),
        }
        tls = ClientTLS(_verifying_context(ca_pem), frozenset({ADMINISTRATION}))
        async with FailoverClient(
            urls, connect_timeout=self.connect_timeout, timeout=REGISTER_TIMEOUT, tls=tls
        ) as client:
            try:
                # A token works once: resend only what was never sent, or what Admin
                # answered 503 (it did nothing: a busy database rolls the transaction back).
                response = await client.call("POST", "/api/v1/register", body, retry_safe=False)
            except InternalCallError as exc:
                transient = isinstance(exc, AllEndpointsFailed) or _answered_503(exc)
                raise (AdminUnavailable if transient else RegistrationFailed)(
                    f"cannot register {service_id!r}: Admin unreachable ({exc})"
                ) from exc
        if response.status == 401:
            raise JoinTokenRefused(
                f"Admin refused the join token for {service_id!r} ({_error_of(response)}): a "
                "join token works once, for the service it names, and expires; make a new "
                f"one (gatehouse nodes token --role {role} --id {service_id})"
            )
        if response.status != 200:
            raise RegistrationFailed(
                f"Admin refused to register {service_id!r} as {role}: {_error_of(response)}"
            )
        public_key, cert_pem = _registration_answer(
            response, ca_pem, Identity(role, service_id), key
        )
        previous = self._state
        if previous is not None and previous.public_key != public_key:
            raise SigningKeyChanged(
                f"Admin's configuration-signing key is not the one {service_id!r} registered "
                f"with ({self.state_dir.admin_path}): this service does not trust a new key "
                "silently. If the installation's signing key was replaced on purpose, move "
                f"{self.state_dir.path} aside and start the service with a new join token "
                "(--replace); otherwise this is not the Administration service it registered "
                "with"
            )
        state = AdminState(
            admin_urls=urls,
            service_id=service_id,
            role=role,
            node=node,
            endpoint=endpoint,
            public_key=public_key,
            registered_at=timestamp(),
        )
        await asyncio.to_thread(self._save_registration, state, previous, ca_pem, cert_pem, key)
        if previous is None or previous.service_id != service_id:
            self.version = self._after = 0
        self._state, self._key = state, load_public_key(public_key)
        log.info(
            "registered %s %r with Admin at %s (certificate valid until %s)",
            role,
            service_id,
            ", ".join(urls),
            self._require_credentials().info.not_after.isoformat(timespec="seconds"),
        )
        return state

    async def _fetch_ca(self, urls: tuple[str, ...], pinned: str, service_id: str) -> bytes:
        """Admin's CA certificate, once it is the one the join token pins."""
        tls = ClientTLS(_unverified_context(), frozenset({ADMINISTRATION}))
        async with FailoverClient(
            urls, connect_timeout=self.connect_timeout, timeout=10.0, tls=tls
        ) as client:
            try:
                response = await client.call("GET", "/api/v1/ca", retry_safe=True)
            except InternalCallError as exc:
                raise AdminUnavailable(
                    f"cannot register {service_id!r}: Admin unreachable ({exc})"
                ) from exc
        if response.status != 200:
            raise RegistrationFailed(
                f"cannot register {service_id!r}: Admin answered GET /api/v1/ca with "
                f"{_answer_of(response)}"
            )
        try:
            shown = fingerprint(x509.load_pem_x509_certificate(response.body))
        except ValueError:
            raise RegistrationFailed(
                f"cannot register {service_id!r}: Admin's CA certificate cannot be read"
            ) from None
        if shown != pinned:
            raise CaMismatch(
                f"refusing to register {service_id!r}: the Administration service at "
                f"{', '.join(urls)} shows the CA {shown}, but the join token names {pinned}. "
                "It is not this installation's Administration service (or the token is "
                "another installation's): check --join and the token"
            )
        return response.body

    def _save_registration(
        self,
        state: AdminState,
        previous: AdminState | None,
        ca_pem: bytes,
        cert_pem: bytes,
        key: Any,
    ) -> None:
        if previous is None or previous.service_id != state.service_id:
            self.state_dir.remove_lkg()
        self.state_dir.create()
        try:
            write_credentials(self.state_dir.tls_path, ca_pem, cert_pem, key_pem(key))
        except OSError as exc:
            raise StateError(
                f"cannot write {self.state_dir.tls_path}: {exc.strerror or exc}"
            ) from None
        if self.credentials is None:
            self.credentials = _keep(Credentials(self.state_dir.tls_path))
        else:
            self.credentials.reload()
        self.state_dir.save_admin(state)

    def _require_credentials(self) -> Credentials:
        if self.credentials is None:
            state = self._state
            who = f" of {state.service_id!r}" if state else ""
            raise NotRegistered(
                f"{self.state_dir.tls_path} holds no certificate{who}: the service registered "
                "before internal TLS, or the directory was removed. Make a join token with "
                "--replace (gatehouse nodes token --role ROLE --id ID --replace) and start the "
                "service once with --join ADMIN_URL --token TOKEN"
            )
        return self.credentials

    # renewal -------------------------------------------------------------------------------
    async def renew(self, client: FailoverClient | None = None) -> datetime:
        """Renew the certificate now: a new key, a CSR authenticated by the current
        certificate; the files written, then loaded into the same contexts. Returns the new
        certificate's expiry.

        Raises:
            RegistrationFailed: Admin unreachable, refused, or answered nonsense.
            StateError: the files cannot be written.
        """
        state = self._require_state()
        credentials = self._require_credentials()
        key = make_key()
        own = client is None
        if client is None:
            client = self._client(state, credentials, timeout=10.0)
        try:
            response = await client.call(
                "POST",
                "/api/v1/certificates/renew",
                {"csr": make_csr(key).decode("ascii")},
                retry_safe=True,  # a certificate more, for a key only we hold: harmless
            )
        except InternalCallError as exc:
            raise RegistrationFailed(
                f"cannot renew the certificate: Admin unreachable ({exc})"
            ) from exc
        finally:
            if own:
                await client.aclose()
        if response.status != 200:
            raise RegistrationFailed(
                f"Admin refused to renew the certificate: {_error_of(response)}"
            )
        ca_pem = credentials.ca_path.read_bytes()
        cert_pem = _certificate_answer(response, ca_pem, credentials.identity, key)
        try:
            await asyncio.to_thread(
                write_credentials, credentials.directory, ca_pem, cert_pem, key_pem(key)
            )
        except OSError as exc:
            raise StateError(
                f"cannot write {credentials.directory}: {exc.strerror or exc}"
            ) from None
        info = credentials.reload()
        for listener in list(self.renewal_listeners):
            try:
                listener()
            except Exception:
                log.exception("a listener of the certificate renewal failed")
        return info.not_after

    async def _keep_renewed(self, state: AdminState) -> None:
        """Renew at about two thirds of the certificate's life (with jitter, so services
        issued together do not all come at once); retry until it works."""
        credentials = self._require_credentials()
        client = self._client(state, credentials, timeout=10.0)
        try:
            while True:
                info = credentials.info
                fraction = RENEW_FRACTION + random.uniform(-RENEW_JITTER, RENEW_JITTER)
                due = renew_at(info.not_before, info.not_after, fraction)
                await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
                failures = 0
                while True:
                    try:
                        not_after = await self.renew(client)
                    except GatehouseError as exc:
                        failures += 1
                        left = (credentials.info.not_after - datetime.now(UTC)).total_seconds()
                        retry = min(RENEW_RETRY, max(0.2, left / 10), self.backoff.delay(failures))
                        if left <= 0:
                            retry = RENEW_RETRY
                            log.error(
                                "the internal certificate of %r expired at %s: the other "
                                "services refuse it and it cannot be renewed with it; enrol "
                                "the service again (gatehouse nodes token --role %s --id %s "
                                "--replace, then start it once with --join and --token)",
                                state.service_id,
                                credentials.info.not_after.isoformat(timespec="seconds"),
                                state.role,
                                state.service_id,
                            )
                            await asyncio.sleep(retry)
                            continue
                        log.warning(
                            "certificate renewal failed (valid until %s), trying again in "
                            "%.3g s: %s",
                            credentials.info.not_after.isoformat(timespec="seconds"),
                            retry,
                            describe(exc),
                        )
                        await asyncio.sleep(retry)
                    else:
                        log.info(
                            "renewed the internal certificate (valid until %s)",
                            not_after.isoformat(timespec="seconds"),
                        )
                        break
        finally:
            await client.aclose()

    def _client(
        self, state: AdminState, credentials: Credentials, timeout: float
    ) -> FailoverClient:
        """A client of Admin over mutual TLS: Admin must show an ``administration``
        certificate of the pinned CA; this service shows its own."""
        return FailoverClient(
            state.admin_urls,
            connect_timeout=self.connect_timeout,
            timeout=timeout,
            tls=ClientTLS(credentials.client, frozenset({ADMINISTRATION})),
        )

    def _revoke(self, serials: frozenset[int]) -> None:
        if serials != self.revocations.serials:
            closed = self.revocations.update(serials)
            log.info(
                "revoked certificates: %d listed (%d connection%s closed)",
                len(serials),
                closed,
                "" if closed == 1 else "s",
            )

    # start-up ------------------------------------------------------------------------------
    def load_last_known_good(self) -> Snapshot | None:
        """The verified last-known-good ``(version, view)``, ``None`` when there is none. The
        agent then counts that version as running: call this only to start from it.

        Blocking file I/O: call it at start-up, before serving.

        Raises:
            NotRegistered: the service never registered.
            LastKnownGoodInvalid: the file is damaged or not Admin's: do not start.
        """
        state = self._require_state()
        verified = self.state_dir.load_verified(state)
        snapshot = None if verified is None else Snapshot(verified.version, verified.view)
        if verified is not None and snapshot is not None:
            self._revoke(verified.revoked)
            self.version = snapshot.version
            self._after = max(self._after, snapshot.version)
            log.info(
                "starting from last-known-good configuration version %d (published by the "
                "Administration service)",
                snapshot.version,
            )
        return snapshot

    async def initial(self, validate: Validate) -> Snapshot:
        """What the service starts from: its last-known-good snapshot if ``validate`` accepts
        it, else the first version from Admin that it accepts, waited for as long as it takes
        (bound it with a timeout if need be). That version is saved as last-known-good;
        :meth:`run`, started next, acknowledges it.

        A snapshot today's model refuses (the service was upgraded) is logged and replaced by
        Admin's current version; a snapshot that fails verification stops the start.

        Raises:
            NotRegistered: the service never registered.
            LastKnownGoodInvalid: the file is damaged or not Admin's: do not start.
        """
        snapshot = await asyncio.to_thread(self.load_last_known_good)
        if snapshot is not None:
            try:
                validate(snapshot.view)
            except Exception as exc:
                log.error(
                    "last-known-good version %d is refused by this service, waiting for "
                    "Admin's current version: %s",
                    snapshot.version,
                    describe(exc),
                )
                self.version = self._after = 0
            else:
                self.applied_at = time.time()
                return snapshot
        received: list[Snapshot] = []

        def keep(version: int, view: dict[str, Any]) -> None:
            received.append(Snapshot(version, view))

        await self._follow(keep, validate, until=lambda: bool(received))
        return received[-1]

    # following Admin -----------------------------------------------------------------------
    async def run(self, apply: Apply, validate: Validate) -> None:
        """Follow Admin until cancelled: run this as a task next to the service.

        Also renews the certificate at about two thirds of its life.

        Never raises because of Admin, the network or a bad version: those are logged,
        acknowledged and retried. Raises :class:`NotRegistered` at once without a
        registration (or without a certificate).
        """
        state = self._require_state()
        self._require_credentials()
        renewer = asyncio.create_task(self._keep_renewed(state))
        try:
            await self._follow(apply, validate)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _follow(
        self, apply: Apply, validate: Validate, until: Callable[[], bool] | None = None
    ) -> None:
        state = self._require_state()
        credentials = self._require_credentials()
        if self._running:
            raise RuntimeError("ConfigAgent is already following Admin")
        self._running = True
        if self.version and self._pending_ack is None:
            self._pending_ack = (self.version, None)  # tell Admin what runs after a restart
        failures = 0
        client = self._client(state, credentials, timeout=self.wait + 5.0)
        try:
            while until is None or not until():
                if await self._exchange(client, state, apply, validate):
                    failures = 0
                else:
                    failures += 1
                    await asyncio.sleep(self.backoff.delay(failures))
        finally:
            self._running = False
            self._connected = False
            await client.aclose()

    async def _exchange(
        self, client: FailoverClient, state: AdminState, apply: Apply, validate: Validate
    ) -> bool:
        """Send a pending ack, then one poll and what it brings. False: back off."""
        # Until Admin has answered, ask without waiting, so the service knows at once whether
        # Admin is reachable (its status); from then on, hold a long poll open.
        wait = self.wait if self._connected else 0.0
        path = poll_path(state.service_id, self._after, wait)
        try:
            if self._pending_ack is not None:
                await self._send_ack(client, state)
            response = await client.call("GET", path, retry_safe=True)
        except InternalCallError as exc:
            self._unreachable(f"Admin unreachable, keeping version {self.version}: {exc}")
            return False
        if response.status == 204:
            self._reachable()
            return True
        if response.status != 200:
            # Admin is there and said no (the service unknown to it, a certificate it refuses, an
            # error of its own): say so; back off as for an outage, but it is not one.
            self._reachable(f"Admin answered the poll with {_answer_of(response)}")
            return False
        self._reachable()
        return await self._receive(response.body, state, apply, validate)

    async def _receive(
        self, body: bytes, state: AdminState, apply: Apply, validate: Validate
    ) -> bool:
        assert self._key is not None
        verdict = judge(body, self._key, state.service_id, self.version)
        if isinstance(verdict, Refused):
            # Admin keeps answering such an envelope at once: back off between tries.
            self._refuse(verdict.version, verdict.error)
            return False
        version, view = verdict.version, verdict.view
        # Admin signed this list: it holds whatever becomes of the view.
        self._revoke(verdict.revoked)
        try:
            validate(view)
        except Exception as exc:
            self._refuse(version, f"version {version} is invalid: {describe(exc)}")
            self._after = max(self._after, version)
            return True
        try:
            result = apply(version, view)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            log.debug("apply of version %d failed", version, exc_info=True)
            self._refuse(version, f"version {version} could not be applied: {describe(exc)}")
            self._after = max(self._after, version)
            return True
        self.version = version
        self.applied_at = time.time()
        self._after = max(self._after, version)
        error = None
        try:
            await asyncio.to_thread(self.state_dir.write_lkg, body)
        except StateError as exc:
            error = one_line(f"version {version} runs but is not saved as last-known-good: {exc}")
            log.error("%s", error)
        else:
            log.info(
                "applied configuration version %d (published by the Administration service)",
                version,
            )
        self._refused = ""
        self._pending_ack = (version, error)
        return True

    def _refuse(self, version: int | None, error: str) -> None:
        error = one_line(error)
        log.error(
            "configuration refused, keeping version %d (published by the Administration "
            "service): %s",
            self.version,
            error,
        )
        self._refused = error
        self._pending_ack = (version, error)

    async def _send_ack(self, client: FailoverClient, state: AdminState) -> None:
        assert self._pending_ack is not None
        version, error = self._pending_ack
        response = await client.call(
            "POST",
            f"/api/v1/config/{state.service_id}/ack",
            {"version": version, "error": error},
            retry_safe=True,  # an ack states a fact: saying it twice changes nothing
        )
        if response.status != 200:
            # Retrying would get the same answer; the next ack says it again anyway.
            log.warning("Admin refused the ack of version %s: %s", version, _error_of(response))
        elif error is None and version == self.version:
            self.acknowledged_at = time.time()
        self._pending_ack = None

    def _unreachable(self, message: str) -> None:
        """No answer from Admin (connection refused or reset, timed out)."""
        message = one_line(message)
        if self._connected or message != self._admin_error:
            log.warning("%s", message)
        self._connected = False
        self._admin_error = message

    def _reachable(self, error: str = "") -> None:
        """Admin answered; ``error``: with an error status, which is not an outage.

        Logged: "reachable again" only after a failure to reach Admin; an error answer when it
        starts or changes (not on every retry); and when Admin accepts the poll again.
        """
        error = one_line(error)
        if not self._connected and self._admin_error:
            log.info(
                "Admin reachable again, running version %d (published by the Administration "
                "service)",
                self.version,
            )
        elif self._admin_error and not error:
            log.info(
                "Admin accepts the poll again, running version %d (published by the "
                "Administration service)",
                self.version,
            )
        if error and error != self._admin_error:
            log.warning("%s; keeping version %d", error, self.version)
        self._connected = True
        self._admin_error = error

    def _require_state(self) -> AdminState:
        if self._state is None:
            self._state = self.state_dir.require_admin()
            self._key = load_public_key(self._state.public_key)
        return self._state


def _unverified_context() -> ssl.SSLContext:
    """For ``GET /api/v1/ca`` only: the CA is checked against the join token afterwards."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _verifying_context(ca_pem: bytes) -> ssl.SSLContext:
    """Admin verified against the pinned CA; no client certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the identity is checked instead (ClientTLS)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    return context


def _json_object(response: Response, what: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise RegistrationFailed(f"Admin's {what} answer is not a JSON object")
    return data


def _certificate_answer(response: Response, ca_pem: bytes, identity: Identity, key: Any) -> bytes:
    """The certificate from a registration or renewal answer, once it is the pinned CA's,
    names ``identity`` and is for ``key``."""
    data = _json_object(response, "certificate")
    cert_pem, ca = data.get("certificate"), data.get("ca")
    if not isinstance(cert_pem, str) or not isinstance(ca, str):
        raise RegistrationFailed("Admin's answer has no certificate and ca")
    try:
        pinned = x509.load_pem_x509_certificate(ca_pem)
        answered = x509.load_pem_x509_certificate(ca.encode("ascii"))
        certificate = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
        named = identity_of(certificate)
    except (ValueError, IdentityError) as exc:
        raise RegistrationFailed(f"Admin's certificate cannot be used: {exc}") from None
    if fingerprint(answered) != fingerprint(pinned):
        raise CaMismatch(
            f"Admin answered with the CA {fingerprint(answered)}, not the pinned "
            f"{fingerprint(pinned)}"
        )
    try:
        certificate.verify_directly_issued_by(pinned)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise RegistrationFailed(f"Admin's certificate is not issued by the CA: {exc}") from None
    if named != identity:
        raise RegistrationFailed(f"Admin's certificate names {named}, not {identity}")
    if certificate.public_key() != key.public_key():
        raise RegistrationFailed("Admin's certificate is not for the key this service made")
    return cert_pem.encode("ascii")


def _registration_answer(
    response: Response, ca_pem: bytes, identity: Identity, key: Any
) -> tuple[str, bytes]:
    """The public key and the certificate from Admin's registration answer, checked."""
    data = _json_object(response, "registration")
    public_key = data.get("public_key")
    if not isinstance(public_key, str):
        raise RegistrationFailed("Admin's registration answer has no public_key")
    try:
        load_public_key(public_key)
    except AdminError as exc:
        raise RegistrationFailed(f"Admin's public key is unusable: {exc}") from None
    return public_key, _certificate_answer(response, ca_pem, identity, key)


def _answered_503(exc: InternalCallError) -> bool:
    """Admin's last answer was 503: it took no action (see :class:`AdminUnavailable`)."""
    last = exc.failures[-1] if exc.failures else None
    return last is not None and last.response is not None and last.response.status == 503

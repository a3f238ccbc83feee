"""The Authentication service's configuration file (``gatehouse authentication --config``).

::

    authentication:
      id: auth1
      listen: 127.0.0.1:8201
      user_db: postgresql+asyncpg://...   # optional: else the installation's (--home)
      lockout: {account_max_failures: 5, account_window: 15m, account_lock: 15m,
                account_lock_max: 1h, ip_max_failures: 50, ip_window: 15m, ip_lock: 15m,
                ip_lock_max: 1h}
      password_hash: {memory_kib: 47104, time_cost: 1, parallelism: 1}
      verify_queue: 64        # checks that may wait for an argon2 slot; more answer 503
      oath_db: postgresql+asyncpg://...   # optional: else the installation's (HOME/oath.db)
      oath_keyring: /etc/gatehouse/oath-seeds.key   # optional: else HOME/oath-seeds.key;
                                                    # a relative path is relative to HOME
      otp: {self_enrolment: true, totp_window: 1, hotp_look_ahead: 10, max_failures: 10,
            lock_seconds: 300}   # lock_seconds 0: locked until an administrator unlocks
      distribution: [https://10.0.0.1:8301, https://10.0.0.2:8301]  # preferred first
      codes: {length: 6, lifetime: 5m, max_attempts: 5, resend_interval: 30s,
              resend_max: 5, resend_window: 15m}   # one-time codes by e-mail / SMS
      invitations: {base_url: "https://gate.example.org", portal_prefix: /_gatehouse/}
                    # where e-mailed token invitation links point
      oauth2_db: postgresql+asyncpg://...   # optional: else the installation's (HOME/oauth2.db)
      oauth: {issuer: ..., clients: [...]}  # the OAuth 2.0 / OIDC provider
                                            # (gatehouse.config.oauth.OAuthSettings)
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from gatehouse.config.access_point import parse_listen
from gatehouse.config.base import Strict
from gatehouse.config.database import DatabaseSettings
from gatehouse.config.oauth import AuthenticationOAuth
from gatehouse.config.units import Seconds
from gatehouse.metrics.settings import MetricsSettings
from gatehouse.storage.home import DatabaseURL

#: OWASP / ASVS 5 minimum argon2id settings: 46 MiB, 1 iteration, 1 lane.
MIN_MEMORY_KIB = 47104
#: ASVS 5: no more than 100 failed attempts per hour on one account.
MAX_ACCOUNT_FAILURES_PER_HOUR = 100

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def failures_per_hour(
    max_failures: int, window: float, lock: float, lock_max: float | None = None
) -> float:
    """The most failed attempts one key can make in an hour under these rules
    (:mod:`gatehouse.authentication.lockout`: a lock from ``max_failures`` on that doubles
    with each further attempt up to ``lock_max``; a count starts over ``window`` after its
    last attempt, or ``window`` after the end of the lock that attempt set).

    An attacker bursts up to the limit, makes some attempts more as each lock ends, then
    waits for the count to start over; every number of extra attempts is tried.
    """
    cap = 4 * lock if lock_max is None else max(lock, lock_max)

    def delay(count: int) -> float:
        if count < max_failures:
            return 0.0
        return float(min(cap, lock * 2 ** min(count - max_failures, 40)))

    best = 0
    for extra in range(64):
        t, count, attempts, expires = 0.0, 0, 0, 0.0
        while t < 3600:
            if count and t >= expires:
                count = 0
            count += 1
            attempts += 1
            expires = t + delay(count) + window
            t = expires if count >= max_failures + extra else t + delay(count)
        best = max(best, attempts)
    return float(best)


class Lockout(Strict):
    """Brute-force limits per account (``user:NAME``) and per client IP (``ip:ADDRESS``)."""

    #: Tests only: lift the ASVS cap so lockouts can expire within seconds. Declared first so
    #: the cap check below sees it.
    insecure_no_rate_cap: bool = False
    account_max_failures: int = Field(default=5, ge=1, le=1000)
    account_window: Seconds = Field(default=900.0, gt=0)
    #: The longest lock the doubling reaches (default: four times ``account_lock``).
    account_lock_max: Seconds | None = Field(default=None, gt=0)
    #: The first lock; each further attempt once it ends doubles it.
    account_lock: Seconds = Field(default=900.0, gt=0, validate_default=True)
    ip_max_failures: int = Field(default=50, ge=1, le=100_000)
    ip_window: Seconds = Field(default=900.0, gt=0)
    ip_lock: Seconds = Field(default=900.0, gt=0)
    ip_lock_max: Seconds | None = Field(default=None, gt=0)

    @field_validator("account_lock")
    @classmethod
    def _asvs_cap(cls, lock: float, info: ValidationInfo) -> float:
        # Declared after max_failures and window, so both are in info.data when valid, and
        # validated even when left at its default (validate_default).
        failures = info.data.get("account_max_failures")
        window = info.data.get("account_window")
        if failures is None or window is None or info.data.get("insecure_no_rate_cap"):
            return lock
        rate = failures_per_hour(failures, window, lock, info.data.get("account_lock_max"))
        if rate > MAX_ACCOUNT_FAILURES_PER_HOUR:
            raise ValueError(
                f"{failures} failures per {window:g}s window with a {lock:g}s lock allow "
                f"{rate:.0f} failed attempts per hour on one account; ASVS allows at most "
                f"{MAX_ACCOUNT_FAILURES_PER_HOUR} (lengthen account_lock and account_window "
                "or lower account_max_failures)"
            )
        return lock


class PasswordHash(Strict):
    """argon2id parameters for new hashes; stored hashes with others are upgraded on login."""

    memory_kib: int = Field(default=MIN_MEMORY_KIB, le=4 * 1024 * 1024)
    time_cost: int = Field(default=1, ge=1, le=20)
    parallelism: int = 1

    @field_validator("memory_kib")
    @classmethod
    def _memory(cls, value: int) -> int:
        if value < MIN_MEMORY_KIB:
            raise ValueError(
                f"at least {MIN_MEMORY_KIB} KiB (46 MiB), the OWASP/ASVS minimum for argon2id"
            )
        return value

    @field_validator("parallelism")
    @classmethod
    def _parallelism(cls, value: int) -> int:
        if value != 1:
            raise ValueError("must be 1 (the OWASP/ASVS argon2id setting)")
        return value


class OtpSettings(Strict):
    """One-time passwords (:mod:`gatehouse.authentication.otp`); applied live."""

    #: May a signed-in user enrol a TOTP token in the portal?
    self_enrolment: bool = True
    #: TOTP steps accepted either side of now (at most 3: each one more is a guess more).
    totp_window: int = Field(default=1, ge=0, le=3)
    #: HOTP counters tried past the next one expected.
    hotp_look_ahead: int = Field(default=10, ge=0, le=100)
    #: Consecutive wrong codes that lock a token.
    max_failures: int = Field(default=10, ge=1, le=1000)
    #: How long a token stays locked; 0: until an administrator unlocks it.
    lock_seconds: Seconds = Field(default=300.0, ge=0)


class CodeSettings(Strict):
    """One-time codes sent out of band (``email_otp``, ``sms_otp``:
    :mod:`gatehouse.authentication.codes`); applied live."""

    #: Digits of a code (6-8).
    length: int = Field(default=6, ge=6, le=8)
    #: How long a code is accepted (and its message delivered); at most 10 minutes.
    lifetime: Seconds = Field(default=300.0, ge=30.0, le=600.0)
    #: Wrong codes typed while a code is live; then it is dead (a new one must be sent).
    max_attempts: int = Field(default=5, ge=1, le=20)
    #: The least time between two codes sent to one user.
    resend_interval: Seconds = Field(default=30.0, ge=0.0, le=3600.0)
    #: At most this many codes sent to one user per ``resend_window``.
    resend_max: int = Field(default=5, ge=1, le=100)
    resend_window: Seconds = Field(default=900.0, gt=0.0, le=86400.0)


def _distribution_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+/?$", value):
        raise ValueError(f"not a service URL (http(s)://HOST:PORT): {value[:80]!r}")
    return value


def _base_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s?#]+/?$", value):
        raise ValueError(f"not a base URL (http(s)://HOST[:PORT], no path): {value[:80]!r}")
    return value.rstrip("/")


def _portal_prefix(value: str) -> str:
    if not re.match(r"^/([A-Za-z0-9._~-]+/)*$", value):
        raise ValueError(f"a path that starts and ends with '/' (e.g. /_gatehouse/): {value!r}")
    return value


class InvitationSettings(Strict):
    """Token invitations (:mod:`gatehouse.authentication.invitations`): where the e-mailed
    link points, ``{base_url}{portal_prefix}enrol/invite?t=...``; applied live."""

    #: How users reach the Access Points (scheme, host and port, no path).
    base_url: Annotated[str, AfterValidator(_base_url)] = "http://127.0.0.1:8080"
    #: The Policy portal's prefix (``login.portal_prefix``).
    portal_prefix: Annotated[str, AfterValidator(_portal_prefix)] = "/_gatehouse/"


class AuthenticationSettings(Strict):
    id: str = "auth1"
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:8201"
    #: The metrics listener (``GET /metrics``); read at start.
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    user_db: DatabaseURL | None = None
    lockout: Lockout = Field(default_factory=Lockout)
    password_hash: PasswordHash = Field(default_factory=PasswordHash)
    #: Password checks that may wait for an argon2 slot (one per CPU); past that a check is
    #: answered 503 ``overloaded`` at once instead of queueing without bound.
    verify_queue: int = Field(default=64, ge=0, le=100_000)
    #: The OATH DB (tokens); None: the installation's (``HOME/oath.db`` or databases.yaml).
    oath_db: DatabaseURL | None = None
    #: The seed key file (relative: to HOME); None: ``HOME/oath-seeds.key``. Created 0600 at
    #: start if missing; every Authentication service sharing an OATH DB needs the same one.
    oath_keyring: str | None = None
    otp: OtpSettings = Field(default_factory=OtpSettings)
    #: The Distribution services' URLs, preferred first: where one-time codes are handed over
    #: for delivery. Empty: ``email_otp`` / ``sms_otp`` are unavailable (their calls answer 503).
    distribution: list[Annotated[str, AfterValidator(_distribution_url)]] = Field(
        default_factory=list
    )
    codes: CodeSettings = Field(default_factory=CodeSettings)
    invitations: InvitationSettings = Field(default_factory=InvitationSettings)
    #: The OAuth2 DB (codes, tokens, consents); None: the installation's (``HOME/oauth2.db``
    #: or databases.yaml). Read once at start.
    oauth2_db: DatabaseURL | None = None
    #: The signing key set (relative: to HOME); None: ``HOME/oauth-signing-keys.json``, made
    #: 0600 at first start if missing (gatehouse.authentication.oauth_service).
    oauth_keys_file: str | None = None
    #: The OAuth 2.0 / OpenID Connect provider: issuer, lifetimes, clients (with their secret
    #: hashes; never private keys). Applied live.
    oauth: AuthenticationOAuth = Field(default_factory=AuthenticationOAuth)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("use lowercase letters, digits, '.', '_' or '-' (max 63)")
        return value


class AuthenticationConfig(Strict):
    """A whole Authentication service configuration file."""

    authentication: AuthenticationSettings = Field(default_factory=AuthenticationSettings)
    #: How long work on the user DB waits for it through a failover (read at start).
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)

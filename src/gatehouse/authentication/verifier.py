"""Password verification with brute-force limits and audit: the service's logic, without HTTP.

``invalid`` is the outcome for an unknown user, a disabled user and a wrong password alike,
and each of those costs one argon2 verification, so neither the answer nor its timing tells
which usernames exist.

The password-hash parameters and the lockout limits are one :class:`Rules` value: a new
configuration replaces it in one assignment (:meth:`Verifier.use`), and an attempt reads it
once, so it is checked and counted under the old rules or the new ones, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update

from gatehouse.authentication import audit, lockout
from gatehouse.authentication.config import Lockout
from gatehouse.authentication.lockout import Rule
from gatehouse.authentication.passwords import Passwords
from gatehouse.storage.directory import UserInfo, find_user, valid_username
from gatehouse.storage.engine import Database
from gatehouse.storage.models import User
from gatehouse.storage.types import utcnow


@dataclass(frozen=True, slots=True)
class Ok:
    user: UserInfo


@dataclass(frozen=True, slots=True)
class Invalid:
    pass


@dataclass(frozen=True, slots=True)
class Locked:
    retry_after: int


Outcome = Ok | Invalid | Locked


@dataclass(frozen=True, slots=True)
class Limits:
    account: Rule
    ip: Rule

    @classmethod
    def of(cls, config: Lockout) -> Limits:
        return cls(
            account=Rule.of(
                config.account_max_failures, config.account_window, config.account_lock
            ),
            ip=Rule.of(config.ip_max_failures, config.ip_window, config.ip_lock),
        )


@dataclass(frozen=True, slots=True)
class Rules:
    """How passwords are hashed and failures limited, as one configuration sets them."""

    passwords: Passwords
    limits: Limits


@dataclass(frozen=True, slots=True)
class _Candidate:
    """What a login attempt needs from the user row, read before the slow hash check."""

    user_id: int
    info: UserInfo
    password_hash: str | None


class Verifier:
    def __init__(
        self,
        db: Database,
        passwords: Passwords,
        limits: Limits,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.rules = Rules(passwords, limits)
        self.clock = clock

    @property
    def passwords(self) -> Passwords:
        return self.rules.passwords

    @property
    def limits(self) -> Limits:
        return self.rules.limits

    def use(self, rules: Rules) -> None:
        """Check attempts under ``rules`` from now on (attempts under way keep theirs)."""
        self.rules = rules

    async def user(self, username: str) -> UserInfo | None:
        async with self.db.session() as session:
            user = await find_user(session, username)
            return UserInfo.of(user) if user is not None else None

    async def verify(self, username: str, password: str, client_ip: str) -> Outcome:
        """Check a password; ``client_ip`` must be a valid IP address."""
        rules = self.rules
        ip_key = lockout.ip_key(client_ip)
        # Names that cannot exist are only counted against the IP: no row per garbage name.
        account_key = lockout.account_key(username) if valid_username(username) else None
        keys = [k for k in (account_key, ip_key) if k is not None]

        now = self.clock()
        async with self.db.connect() as conn:
            verdict = await lockout.check_keys(conn, keys, now)
            if verdict.locked:
                await audit.write(
                    conn,
                    audit.LOGIN_LOCKED,
                    username,
                    client_ip,
                    {"retry_after": verdict.retry_after},
                    at=now,
                )
        if verdict.locked:
            return Locked(verdict.retry_after)

        candidate = await self._candidate(username)
        new_hash: str | None = None
        if candidate is None or not candidate.info.enabled or candidate.password_hash is None:
            await rules.passwords.verify_dummy(password)
            ok = False
            reason = (
                "unknown_user"
                if candidate is None
                else "disabled"
                if not candidate.info.enabled
                else "no_password"
            )
        else:
            ok, new_hash = await rules.passwords.verify(candidate.password_hash, password)
            reason = "bad_password"

        now = self.clock()
        if ok:
            assert candidate is not None
            assert account_key is not None
            await self._succeeded(candidate, account_key, new_hash, client_ip, now)
            return Ok(candidate.info)
        await self._failed(rules.limits, username, account_key, ip_key, client_ip, reason, now)
        return Invalid()

    async def _candidate(self, username: str) -> _Candidate | None:
        async with self.db.session() as session:
            user = await find_user(session, username)
            if user is None:
                return None
            return _Candidate(user.id, UserInfo.of(user), user.password_hash)

    async def _succeeded(
        self,
        candidate: _Candidate,
        account_key: str,
        new_hash: str | None,
        client_ip: str,
        now: datetime,
    ) -> None:
        async with self.db.connect() as conn:
            await lockout.reset(conn, account_key)
            if new_hash is not None:
                # Only replace the hash we verified: a password changed meanwhile wins.
                await conn.execute(
                    update(User)
                    .where(User.id == candidate.user_id)
                    .where(User.password_hash == candidate.password_hash)
                    .values(password_hash=new_hash, updated_at=now)
                )
            detail = {"rehashed": True} if new_hash is not None else {}
            await audit.write(
                conn, audit.LOGIN_OK, candidate.info.username, client_ip, detail, at=now
            )

    async def _failed(
        self,
        limits: Limits,
        username: str,
        account_key: str | None,
        ip_key: str,
        client_ip: str,
        reason: str,
        now: datetime,
    ) -> None:
        detail: dict[str, object] = {"reason": reason}
        async with self.db.connect() as conn:
            # Always the account key before the IP key, so concurrent transactions take row
            # locks in the same order and cannot deadlock.
            if account_key is not None:
                account = await lockout.record_failure(conn, account_key, now, limits.account)
                detail["account_failures"] = account.count
                if lockout.check(account, now).locked:
                    detail["account_locked"] = True
            ip = await lockout.record_failure(conn, ip_key, now, limits.ip)
            detail["ip_failures"] = ip.count
            if lockout.check(ip, now).locked:
                detail["ip_locked"] = True
            await audit.write(conn, audit.LOGIN_FAILED, username, client_ip, detail, at=now)

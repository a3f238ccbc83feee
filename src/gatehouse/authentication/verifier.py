"""Password verification with brute-force limits and audit: the service's logic, without HTTP.

``invalid`` is the outcome for an unknown user, a disabled user and a wrong password alike,
and each of those costs one transaction (the user read and the reservation) and one argon2
verification, so neither the answer nor its timing tells which usernames exist.

An attempt is counted before its password is checked (:func:`lockout.reserve`): the
address's counter first, then the account's (``user:NAME``; a name that is no account counts
in one of a bounded set of ``unknown:N`` buckets). A successful sign-in issues (or renews) a
trusted-device id for that account; a client that presents one this service issued for the
account (its browser signed in to it before) is counted on that device's own counter only, so
failures from elsewhere never lock it out. An id that was not issued for that account counts
for nothing, whoever sends it.

The password-hash parameters and the lockout limits are one :class:`Rules` value: a new
configuration replaces it in one assignment (:meth:`Verifier.use`), and an attempt reads it
once, so it is checked and counted under the old rules or the new ones, never a mix.

Through a database failover each transaction waits for the new primary
(:meth:`~gatehouse.storage.engine.Database.run_core`) and is never counted twice: the
reservation carries an attempt id chosen before it is written (the counters' ``attempt``
column), and the success's marks its trusted-device row with its own time, so a commit that
was cut off is resolved by reading those back. The audit rows of a failure are written at
least once (a lost commit may leave one twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from gatehouse.authentication import audit, lockout
from gatehouse.authentication.config import Lockout
from gatehouse.authentication.lockout import Rule
from gatehouse.authentication.passwords import Passwords
from gatehouse.storage.directory import (
    Credentials,
    UserInfo,
    find_credentials,
    valid_username,
)
from gatehouse.storage.engine import Database
from gatehouse.storage.models import User
from gatehouse.storage.types import utcnow


@dataclass(frozen=True, slots=True)
class Ok:
    user: UserInfo
    #: The trusted-device id of the client that signed in (new, or the one it presented).
    device: str | None = None


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
                config.account_max_failures,
                config.account_window,
                config.account_lock,
                config.account_lock_max,
            ),
            ip=Rule.of(
                config.ip_max_failures, config.ip_window, config.ip_lock, config.ip_lock_max
            ),
        )


@dataclass(frozen=True, slots=True)
class Rules:
    """How passwords are hashed and failures limited, as one configuration sets them."""

    passwords: Passwords
    limits: Limits


@dataclass(frozen=True, slots=True)
class _Reserved:
    """A reservation: the user row it was made for (None: no such account), the keys
    counted (``kind, key, rule``), their counts, or the lock."""

    candidate: Credentials | None
    keys: list[tuple[str, str, Rule]]
    counts: dict[str, int]
    locked: Locked | None = None


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
        async def read(conn: AsyncConnection) -> UserInfo | None:
            found = await find_credentials(conn, username)
            return found.info if found is not None else None

        return await self.db.run_core(read)

    async def verify(
        self, username: str, password: str, client_ip: str, device: str | None = None
    ) -> Outcome:
        """Check a password; ``client_ip`` must be a valid IP address, ``device`` the
        trusted-device id the client presents (honoured only if issued for ``username``).

        Raises :class:`~gatehouse.authentication.passwords.Overloaded` when too many checks
        are under way already (nothing is counted then).
        """
        rules = self.rules
        with rules.passwords.admission():
            reserved = await self._reserve(username, client_ip, device)
            if reserved.locked is not None:
                return reserved.locked
            candidate, keys, counts = reserved.candidate, reserved.keys, reserved.counts
            device = device if keys[0][0] == "device" else None
            if candidate is None or not candidate.info.enabled or candidate.password_hash is None:
                await rules.passwords.verify_dummy(password)
                ok, new_hash = False, None
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
                device = device or lockout.new_device_id()
                await self._succeeded(candidate, keys, new_hash, client_ip, device, now)
                return Ok(candidate.info, device)
            await self._failed(username, keys, counts, client_ip, reason, now)
            return Invalid()

    def _keys(
        self, username: str, client_ip: str, device: str | None, candidate: Credentials | None
    ) -> list[tuple[str, str, Rule]]:
        """``(kind, key, rule)`` to count an attempt on, always in the order ip, account:
        concurrent transactions lock rows in one order and cannot deadlock."""
        limits = self.rules.limits
        if candidate is not None and device is not None:
            return [("device", lockout.device_key(username, device), limits.account)]
        keys = [("ip", lockout.ip_key(client_ip), limits.ip)]
        if candidate is not None:
            keys.append(("account", lockout.account_key(username), limits.account))
        elif valid_username(username):
            keys.append(("account", lockout.unknown_key(username), limits.account))
        return keys

    async def _reserve(self, username: str, client_ip: str, device: str | None) -> _Reserved:
        """Read the user row and count the attempt on its keys (one transaction), or find
        the key that is locked. Names that cannot exist are counted like unknown ones."""
        now = self.clock()
        token = lockout.new_attempt()
        planned: list[tuple[str, str, Rule]] = []

        async def write(conn: AsyncConnection) -> _Reserved:
            candidate = await find_credentials(conn, username)
            trusted_device = device
            if trusted_device is not None and (
                candidate is None or not await lockout.trusted(conn, username, trusted_device, now)
            ):
                trusted_device = None
            keys = self._keys(username, client_ip, trusted_device, candidate)
            planned[:] = keys
            counts: dict[str, int] = {}
            for kind, key, rule in keys:
                counter, counted = await lockout.reserve(conn, key, now, rule, token)
                if not counted:
                    retry_after = lockout.check(counter, now).retry_after
                    detail = {"retry_after": retry_after, "key": kind}
                    await audit.write(conn, audit.LOGIN_LOCKED, username, client_ip, detail, at=now)
                    return _Reserved(candidate, keys, counts, Locked(retry_after))
                counts[kind] = counter.count
            return _Reserved(candidate, keys, counts)

        async def resolve(conn: AsyncConnection) -> _Reserved | None:
            # The commit was cut off: did it count this attempt (its id on the counters)?
            attempts = await lockout.attempts(conn, [key for _, key, _ in planned])
            mine = [kind for kind, key, _ in planned if attempts.get(key, (0, ""))[1] == token]
            if not mine:
                return None  # not committed: reserve again
            counts = {kind: attempts[key][0] for kind, key, _ in planned if kind in mine}
            candidate = await find_credentials(conn, username)
            if len(mine) == len(planned):
                return _Reserved(candidate, list(planned), counts)
            verdict = await lockout.check_keys(conn, [key for _, key, _ in planned], now)
            return _Reserved(candidate, list(planned), counts, Locked(verdict.retry_after))

        return await self.db.run_core(write, resolve=resolve)

    async def _succeeded(
        self,
        candidate: Credentials,
        keys: list[tuple[str, str, Rule]],
        new_hash: str | None,
        client_ip: str,
        device: str,
        now: datetime,
    ) -> None:
        async def write(conn: AsyncConnection) -> bool:
            for kind, key, rule in keys:
                if kind == "ip":
                    await lockout.release(conn, key, rule)
                else:  # the account's or the device's counter starts over
                    await lockout.forget(conn, key)
            await lockout.trust(conn, candidate.info.username, device, now)
            if new_hash is not None:
                # Only replace the hash we verified: a password changed meanwhile wins.
                await conn.execute(
                    update(User)
                    .where(User.id == candidate.user_id)
                    .where(User.password_hash == candidate.password_hash)
                    .values(password_hash=new_hash, updated_at=now)
                )
            detail: dict[str, object] = {"rehashed": True} if new_hash is not None else {}
            if any(kind == "device" for kind, _, _ in keys):
                detail["device"] = True
            await audit.write(
                conn, audit.LOGIN_OK, candidate.info.username, client_ip, detail, at=now
            )
            return True

        async def resolve(conn: AsyncConnection) -> bool | None:
            # Releasing the address's reservation twice would be wrong: the trusted-device row
            # this success renewed carries its time, so it tells whether the commit happened.
            renewed = await lockout.trusted_until(conn, candidate.info.username, device)
            return True if renewed == now + lockout.DEVICE_LIFETIME else None

        await self.db.run_core(write, resolve=resolve)

    async def _failed(
        self,
        username: str,
        keys: list[tuple[str, str, Rule]],
        counts: dict[str, int],
        client_ip: str,
        reason: str,
        now: datetime,
    ) -> None:
        # The attempt was counted when it was reserved; only the audit row is left.
        detail: dict[str, object] = {"reason": reason}
        for kind, _, rule in keys:
            detail[f"{kind}_failures"] = counts[kind]
            if counts[kind] >= rule.max_failures:
                detail[f"{kind}_locked"] = True

        async def write(conn: AsyncConnection) -> None:
            await audit.write(conn, audit.LOGIN_FAILED, username, client_ip, detail, at=now)

        await self.db.run_core(write)

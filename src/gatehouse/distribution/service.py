"""The Distribution service built from its settings: the outbox (migrated on start, branch
``outbox``), the body key file, the channels and the delivery workers.

The service starts even while the outbox DB cannot be reached: submissions answer 503
``unavailable`` (the caller fails over to another Distribution service) and delivery waits;
both begin once the migrations ran. Likewise while the outbox key file cannot be used.

Following the Administration service (``--state``), :meth:`Service.apply` applies each
version: ``channels`` and ``delivery`` live (the credential files are read again; deliveries
under way finish on the channels they started with). ``id``, ``listen``, ``outbox_db`` and
``outbox_keyring`` are read once at start: a version changing them is applied, acknowledged
and saved, takes effect at the next start, and a warning names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from gatehouse.config.loader import validate
from gatehouse.distribution.bodies import Body, BodyKeys, KeyringError
from gatehouse.distribution.calls import (
    MessageStatus,
    SubmitAnswer,
    SubmitRequest,
    recipient_hint,
)
from gatehouse.distribution.channels import ChannelFailure, Sender
from gatehouse.distribution.config import (
    DistributionConfig,
    DistributionSettings,
    HttpSmsChannel,
    SmtpChannel,
)
from gatehouse.distribution.delivery import Deliverer, lease_owner
from gatehouse.distribution.outbox import MessageRow, NewMessage, Outbox, new_message_id
from gatehouse.distribution.secrets import SecretFileError
from gatehouse.distribution.sms import HttpSmsSender
from gatehouse.distribution.smtp import SmtpSender
from gatehouse.internal.config_agent import ConfigAgent
from gatehouse.internal.errors import Code, ServiceError
from gatehouse.internal.managed import follow_admin
from gatehouse.storage.engine import Database, warm_when_ready
from gatehouse.storage.errors import DatabaseUnavailable
from gatehouse.storage.migrate import start_migrations
from gatehouse.storage.types import utcnow

__all__ = ["ROLE", "Service", "build_senders", "check_view", "message_status"]

log = logging.getLogger("gatehouse.distribution")

ROLE = "distribution"
RESTART_ONLY = ("id", "listen", "outbox_db", "outbox_keyring", "database")


def check_view(view: dict[str, Any]) -> DistributionConfig:
    """The agent's check of a published view: this service's model."""
    return validate(DistributionConfig, view, "the published configuration")


def build_senders(
    settings: DistributionSettings, home: Path
) -> tuple[list[Sender], dict[str, str]]:
    """The channels that can be used, in order, and why the others cannot (a credential file
    missing, say): ``{channel name: reason}``. A channel that cannot be built is left out, so
    messages go over the others."""
    senders: list[Sender] = []
    problems: dict[str, str] = {}
    idle = settings.delivery.workers
    for channel in settings.channels:
        try:
            if isinstance(channel, SmtpChannel):
                senders.append(SmtpSender(channel, home, max_idle=idle))
            elif isinstance(channel, HttpSmsChannel):
                senders.append(HttpSmsSender(channel, home))
        except (SecretFileError, ChannelFailure, ValueError, OSError) as error:
            problems[channel.name] = str(error)
            log.error("channel %s cannot be used: %s", channel.name, error)
    return senders, problems


def message_status(row: MessageRow) -> MessageStatus:
    return MessageStatus(
        id=row.id,
        status=row.status,
        channel=row.sent_channel,
        attempts=row.attempts,
        recipient_hint=recipient_hint(row.email, row.phone),
        error=row.last_error if row.status in ("failed", "expired") else None,
    )


class Service:
    """The running service's parts; ``ready`` once the outbox DB is migrated.

    Args:
        settings: the settings to start with.
        outbox_db: the outbox DB URL (read once).
        keyring: the body key file (created 0600 if missing).
        home: where relative credential and CA files are.
        agent: the config agent when following Admin.
    """

    def __init__(
        self,
        settings: DistributionSettings,
        outbox_db: str,
        keyring: Path,
        home: Path,
        agent: ConfigAgent | None = None,
    ) -> None:
        self.started = settings
        self.settings = settings
        self.outbox_url = outbox_db
        self.keyring = keyring
        self.home = home
        self.agent = agent
        # Messages accepted, claimed and marked wait for the outbox DB through a failover.
        self.db = Database(outbox_db, failover_wait=settings.database.failover_wait)
        self.outbox = Outbox(self.db.engine, self.db.waiting)
        self.ready = asyncio.Event()
        self.keys: BodyKeys | None = None
        self.keys_error: str | None = None
        self.owner = lease_owner(settings.id)
        senders, self.channel_problems = build_senders(settings, home)
        self.deliverer = Deliverer(self.outbox, None, self.owner, settings.delivery, senders)
        self._tasks: list[asyncio.Task[None]] = []

    def load_keys(self) -> BodyKeys | None:
        try:
            self.keys = BodyKeys.load_or_create(self.keyring)
        except KeyringError as error:
            if str(error) != self.keys_error:
                log.error("the outbox key file cannot be used: %s", error)
            self.keys_error = str(error)
            return None
        self.keys_error = None
        self.deliverer.keys = self.keys
        return self.keys

    async def start(self) -> None:
        self.load_keys()
        migrating = await start_migrations(self.outbox_url, "outbox", self.ready)
        if migrating is not None:
            self._tasks.append(migrating)
        self._tasks.append(asyncio.create_task(warm_when_ready(self.ready, self.db)))
        self._tasks.append(asyncio.create_task(self._deliver_when_ready()))
        if self.agent is not None:
            follow = follow_admin(self.agent, self.apply, check_view)
            self._tasks.append(asyncio.create_task(follow))

    async def _deliver_when_ready(self) -> None:
        await self.ready.wait()
        while self.keys is None:
            await asyncio.sleep(5.0)
            self.load_keys()
        log.info(
            "delivering with %d worker(s) over %s",
            self.settings.delivery.workers,
            ", ".join(s.name for s in self.deliverer.senders) or "no channel",
        )
        await self.deliverer.run()

    def apply(self, version: int, view: dict[str, Any]) -> None:
        """Deliver under ``view``'s channels and delivery settings from now on."""
        settings = check_view(view).distribution
        senders, problems = build_senders(settings, self.home)
        self.deliverer.configure(settings.delivery, senders)
        self.channel_problems = problems
        self.settings = settings
        later = [
            f"distribution.{name}"
            for name in RESTART_ONLY
            if getattr(self.started, name) != getattr(settings, name)
        ]
        if later:
            log.warning(
                "version %d changes %s: applied at the next start (the service keeps the "
                "values it started with until then)",
                version,
                ", ".join(later),
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.deliverer.stop()
        await self.db.dispose()

    # -- the calls --------------------------------------------------------------------------

    def require_ready(self) -> BodyKeys:
        if not self.ready.is_set():
            raise DatabaseUnavailable("database unavailable: outbox DB not reachable yet")
        keys = self.keys or self.load_keys()
        if keys is None:
            raise ServiceError(
                Code.UNAVAILABLE, f"the outbox key file cannot be used: {self.keys_error}", 503
            )
        return keys

    async def submit(self, request: SubmitRequest) -> SubmitAnswer:
        """Accept ``request``: answered once its row is committed (or the key's earlier
        message is found)."""
        keys = self.require_ready()
        message_id = new_message_id()
        key_id, blob = keys.seal(message_id, Body(request.subject, request.text))
        now = utcnow()
        message = NewMessage(
            id=message_id,
            key=request.key,
            purpose=request.purpose,
            username=request.username,
            email=request.email,
            phone=request.phone,
            body_key_id=key_id,
            body_ciphertext=blob,
            channels=tuple(request.channels) if request.channels is not None else None,
            created_at=now,
            expires_at=now + timedelta(seconds=request.ttl),
        )
        # A worker free here takes the message as it is stored (no claim needed).
        lease = self.deliverer.reserve()
        try:
            row, new = await self.outbox.submit(message, lease)
        except BaseException:
            if lease is not None:
                self.deliverer.unreserve()
            raise
        if lease is not None:
            if new:
                self.deliverer.take(row)
            else:
                self.deliverer.unreserve()
        if new:
            if lease is None:
                self.deliverer.wake()
            log.info(
                "accepted message %s (%s%s) for %s, expires in %d s",
                row.id,
                row.purpose,
                f" for {row.username}" if row.username else "",
                recipient_hint(row.email, row.phone),
                request.ttl,
            )
        return SubmitAnswer(row.id, row.status)

    async def status(self, message_id: str) -> MessageStatus:
        self.require_ready()
        row = await self.outbox.get(message_id)
        if row is None:
            raise ServiceError(Code.NOT_FOUND, f"no message {message_id}", 404)
        return message_status(row)

"""The Administration service's store: the draft, published versions, services, join tokens
and the audit log, in SQLite or PostgreSQL (tables in :mod:`.tables`, Alembic branch
``admin``).

Every write is audited in the same transaction as the write itself. Publishing validates
the draft, cuts it into every service's view, signs each as the next version number and
stores the lot; a version is never changed afterwards. A rollback publishes an earlier
version's text as a new version (and makes it the draft), so version numbers only grow.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import exc, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.administration.canonical import timestamp
from gatehouse.administration.diff import (
    diff_configs,
    diff_documents,
    mask_url_passwords,
    unified_diff,
)
from gatehouse.administration.document import config_document, parse_config
from gatehouse.administration.errors import (
    JoinTokenInvalid,
    NoDraft,
    NothingChanged,
    RemovalRefused,
    UnknownService,
    VersionNotFound,
)
from gatehouse.administration.guard import Registered, Removals, check_removals
from gatehouse.administration.model import ROLE_NAMES, InstallationConfig, Role
from gatehouse.administration.signing import Ed25519PrivateKey, sign_version
from gatehouse.administration.tables import (
    AuditRow,
    DraftRow,
    JoinTokenRow,
    ServiceRow,
    VersionRow,
)
from gatehouse.administration.views import all_views
from gatehouse.config.loader import validate
from gatehouse.errors import ConfigError
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.types import utcnow

DRAFT_ID = 1
#: Attempts at taking the next version number when another writer took it first.
PUBLISH_ATTEMPTS = 3
JOIN_TOKEN_BYTES = 32
#: Join tokens start with this, so a token never starts with "-" (a command-line option to
#: argparse) and a secret scanner can recognise one.
JOIN_TOKEN_PREFIX = "ghj_"


@dataclass(frozen=True, slots=True)
class Draft:
    source: str
    saved_by: str
    saved_at: datetime
    #: Ids whose removal the operator allowed with this draft (see :mod:`.guard`).
    allow_removal: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A published version without its content (for listings)."""

    number: int
    created_at: datetime
    created_by: str
    comment: str
    rollback_of: int | None


@dataclass(frozen=True, slots=True)
class Version:
    """A published version. ``envelopes`` maps service ids to their signed envelopes."""

    info: VersionInfo
    content: dict[str, Any]
    source: str
    envelopes: dict[str, dict[str, Any]]
    public_key: str

    @property
    def number(self) -> int:
        return self.info.number

    def config(self) -> InstallationConfig:
        return validate(InstallationConfig, self.content, f"version {self.number}")


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    id: str
    role: str
    node: str
    endpoint: str
    registered_at: datetime
    last_seen_at: datetime | None
    running_version: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    who: str
    action: str
    what: str
    diff: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AdminStore:
    """All of Admin's persistent state, behind one :class:`~gatehouse.storage.engine.Database`."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        self._publishing = asyncio.Lock()

    @classmethod
    async def open(cls, url: str, clock: Callable[[], datetime] = utcnow) -> AdminStore:
        """Migrate the ``admin`` tables of the database at ``url`` and open the store."""
        await upgrade(url, "admin")
        return cls(Database(url), clock)

    async def close(self) -> None:
        await self.db.dispose()

    # Audit

    async def record_audit(self, who: str, action: str, what: str, diff: str = "") -> None:
        """Audit an event that wrote nothing here (e.g. a sign-in to the admin API)."""
        async with self.db.session() as session:
            self._audit(session, who, action, what, diff)

    def _audit(self, session: AsyncSession, who: str, action: str, what: str, diff: str) -> None:
        session.add(AuditRow(at=self.clock(), who=who, action=action, what=what, diff=diff))

    async def audit_log(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """Newest first; ``before``: only entries with a smaller id (the next page)."""
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if before is not None:
            query = query.where(AuditRow.id < before)
        async with self.db.session() as session:
            rows = (await session.execute(query)).scalars().all()
        return [AuditEntry(r.id, r.at, r.who, r.action, r.what, r.diff) for r in rows]

    # The draft

    async def get_draft(self) -> Draft | None:
        async with self.db.session() as session:
            row = await session.get(DraftRow, DRAFT_ID)
            if row is None:
                return None
            return Draft(row.source, row.saved_by, row.saved_at, tuple(row.allow_removal or ()))

    async def save_draft(self, source: str, who: str, allow_removal: Collection[str] = ()) -> Draft:
        """Replace the draft with ``source``.

        A valid draft that would remove what runs (:mod:`.guard`) is refused unless
        ``allow_removal`` names it; an invalid one is saved as a work in progress (it is
        checked again when published).

        Raises:
            RemovalRefused: what would be removed, each with its path.
        """
        try:
            content: dict[str, Any] | None = config_document(parse_config(source))
        except ConfigError:
            content = None
        async with self.db.session() as session:
            what = "saved the draft"
            if content is not None:
                removals = await self._removals(session, content, allow_removal)
                what += _allowed_removals(removals)
            old, draft = await self._put_draft(session, source, who, allow_removal)
            change = unified_diff(
                mask_url_passwords(old), mask_url_passwords(source), "draft (before)", "draft"
            )
            self._audit(session, who, "draft.save", what, change)
        return draft

    async def _put_draft(
        self, session: AsyncSession, source: str, who: str, allow_removal: Collection[str] = ()
    ) -> tuple[str, Draft]:
        """Write the draft; return the text it replaced (empty when there was none)."""
        now = self.clock()
        allowed = sorted(set(allow_removal))
        row = await session.get(DraftRow, DRAFT_ID, with_for_update=True)
        draft = Draft(source, who, now, tuple(allowed))
        if row is None:
            session.add(
                DraftRow(
                    id=DRAFT_ID, source=source, saved_by=who, saved_at=now, allow_removal=allowed
                )
            )
            return "", draft
        old = row.source
        row.source, row.saved_by, row.saved_at = source, who, now
        row.allow_removal = allowed
        return old, draft

    async def _removals(
        self, session: AsyncSession, content: dict[str, Any], allow_removal: Collection[str]
    ) -> Removals:
        """What ``content`` removes from the newest version; refused unless allowed.

        Raises:
            RemovalRefused: a guarded removal that ``allow_removal`` does not name.
        """
        latest = await self._latest_row(session)
        rows = (await session.execute(select(ServiceRow))).scalars()
        registered = {row.id: Registered(row.id, row.role, row.last_seen_at) for row in rows}
        removals = check_removals(
            latest.content if latest else None, content, registered, allow_removal, self.clock()
        )
        if removals.problems:
            raise RemovalRefused(removals.problems)
        return removals

    # Versions

    async def publish(self, who: str, private_key: Ed25519PrivateKey, comment: str = "") -> Version:
        """Validate the draft and publish it as the next version.

        Raises:
            NoDraft: nothing was saved yet.
            ConfigError: the draft is invalid (every problem with its field path).
            NothingChanged: the draft says what the newest version says.
        """
        draft = await self.get_draft()
        if draft is None:
            raise NoDraft("there is no draft to publish; save one first")
        return await self._publish(
            draft.source, who, private_key, comment, None, draft.allow_removal
        )

    async def rollback(
        self,
        number: int,
        who: str,
        private_key: Ed25519PrivateKey,
        comment: str = "",
        allow_removal: Collection[str] = (),
    ) -> Version:
        """Publish version ``number``'s text as a new version; it becomes the draft too.

        Raises:
            VersionNotFound: no such version.
            NothingChanged: the newest version already says the same.
            ConfigError: the old text is no longer valid (e.g. a service id it names is gone).
            RemovalRefused: it would remove what runs, and ``allow_removal`` does not say so.
        """
        old = await self.get_version(number)
        comment = comment or f"rollback to version {number}"
        return await self._publish(old.source, who, private_key, comment, number, allow_removal)

    async def _publish(
        self,
        source: str,
        who: str,
        private_key: Ed25519PrivateKey,
        comment: str,
        rollback_of: int | None,
        allow_removal: Collection[str] = (),
    ) -> Version:
        config = parse_config(source)
        content = config_document(config)
        views = all_views(config)
        async with self._publishing:
            for attempt in range(PUBLISH_ATTEMPTS):
                try:
                    return await self._insert_version(
                        source,
                        config,
                        content,
                        views,
                        who,
                        private_key,
                        comment,
                        rollback_of,
                        allow_removal,
                    )
                except exc.IntegrityError:
                    # Another writer took the number between our read and our insert.
                    if attempt == PUBLISH_ATTEMPTS - 1:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _insert_version(
        self,
        source: str,
        config: InstallationConfig,
        content: dict[str, Any],
        views: dict[str, dict[str, Any]],
        who: str,
        private_key: Ed25519PrivateKey,
        comment: str,
        rollback_of: int | None,
        allow_removal: Collection[str],
    ) -> Version:
        async with self.db.session() as session:
            latest = await self._latest_row(session)
            if latest is not None and latest.content == content:
                raise NothingChanged(
                    f"version {latest.number} already says this; nothing to publish"
                )
            # Checked again here, in the transaction that takes the number: the newest version
            # (or the registered services) may have changed since the draft was saved.
            allowed = _allowed_removals(await self._removals(session, content, allow_removal))
            number = latest.number + 1 if latest else 1
            now = self.clock()
            signed = sign_version(private_key, number, timestamp(now), views)
            row = VersionRow(
                number=number,
                content=content,
                source=source,
                created_at=now,
                created_by=who,
                comment=comment,
                rollback_of=rollback_of,
                envelopes=dict(signed.envelopes),
                public_key=signed.public_key,
            )
            session.add(row)
            change = _diff_from(latest, config, f"version {number}")
            if rollback_of is not None:
                await self._put_draft(session, source, who)
                what = f"published version {number}: rollback to version {rollback_of}"
                self._audit(session, who, "version.rollback", what + allowed, change)
            else:
                what = f"published version {number}" + (f": {comment}" if comment else "")
                self._audit(session, who, "version.publish", what + allowed, change)
            await session.flush()
            return _version(row)

    async def _latest_row(self, session: AsyncSession) -> VersionRow | None:
        query = select(VersionRow).order_by(VersionRow.number.desc()).limit(1)
        return (await session.execute(query)).scalar_one_or_none()

    async def latest_version(self) -> Version | None:
        async with self.db.session() as session:
            row = await self._latest_row(session)
            return _version(row) if row else None

    async def latest_number(self) -> int:
        """The newest version's number; 0 before the first publish."""
        async with self.db.session() as session:
            value = (await session.execute(select(func.max(VersionRow.number)))).scalar_one()
            return int(value or 0)

    async def get_version(self, number: int) -> Version:
        async with self.db.session() as session:
            row = await session.get(VersionRow, number)
            if row is None:
                raise VersionNotFound(f"there is no version {number}")
            return _version(row)

    async def list_versions(self, limit: int = 100) -> list[VersionInfo]:
        """Newest first."""
        query = (
            select(
                VersionRow.number,
                VersionRow.created_at,
                VersionRow.created_by,
                VersionRow.comment,
                VersionRow.rollback_of,
            )
            .order_by(VersionRow.number.desc())
            .limit(limit)
        )
        async with self.db.session() as session:
            rows = (await session.execute(query)).all()
        return [VersionInfo(*row) for row in rows]

    async def signed_view(self, service_id: str, number: int | None = None) -> dict[str, Any]:
        """The signed envelope of one service in version ``number`` (default: the newest).

        Raises:
            VersionNotFound: no such version (or none published yet).
            UnknownService: the service is not in that version.
        """
        if number is None:
            version = await self.latest_version()
            if version is None:
                raise VersionNotFound("no version has been published yet")
        else:
            version = await self.get_version(number)
        envelope = version.envelopes.get(service_id)
        if envelope is None:
            raise UnknownService(f"service {service_id!r} is not in version {version.number}")
        return envelope

    # Services

    async def register_service(
        self, service_id: str, role: Role, node: str, endpoint: str, who: str
    ) -> ServiceStatus:
        """Record a service that joined (again: its role, node and endpoint are updated)."""
        async with self.db.session() as session:
            row = await session.get(ServiceRow, service_id, with_for_update=True)
            if row is None:
                row = ServiceRow(
                    id=service_id,
                    role=role,
                    node=node,
                    endpoint=endpoint,
                    registered_at=self.clock(),
                )
                session.add(row)
            else:
                row.role, row.node, row.endpoint = role, node, endpoint
            what = f"registered {role} {service_id!r} on node {node!r} at {endpoint}"
            self._audit(session, who, "service.register", what, "")
            await session.flush()
            return _service(row)

    async def record_ack(
        self, service_id: str, version: int | None, error: str | None = None
    ) -> None:
        """A service reports in: it runs ``version``, or failed to apply one (``error``).

        With an error, ``running_version`` is left as it was (the service kept its
        last-known-good version) and the error is kept until a report without one.

        Raises:
            UnknownService: the service never registered.
        """
        values: dict[str, Any] = {"last_seen_at": self.clock(), "last_error": error}
        if error is None and version is not None:
            values["running_version"] = version
        async with self.db.session() as session:
            result = await session.execute(
                update(ServiceRow).where(ServiceRow.id == service_id).values(**values)
            )
            if _rowcount(result) != 1:
                raise UnknownService(f"service {service_id!r} has not registered")

    async def list_services(self) -> list[ServiceStatus]:
        async with self.db.session() as session:
            rows = (await session.execute(select(ServiceRow).order_by(ServiceRow.id))).scalars()
            return [_service(row) for row in rows]

    # Join tokens

    async def create_join_token(self, role: Role, who: str, ttl: timedelta) -> str:
        """A new one-time token for a node joining as ``role``; only its hash is stored,
        so this is the only time it is seen."""
        token = JOIN_TOKEN_PREFIX + secrets.token_urlsafe(JOIN_TOKEN_BYTES)
        digest = token_hash(token)
        now = self.clock()
        async with self.db.session() as session:
            session.add(
                JoinTokenRow(
                    hash=digest, role=role, created_at=now, created_by=who, expires_at=now + ttl
                )
            )
            what = (
                f"created a join token for a {role} ({digest[:12]}), expires {timestamp(now + ttl)}"
            )
            self._audit(session, who, "join_token.create", what, "")
        return token

    async def redeem_join_token(self, token: str, service_id: str) -> Role:
        """Use a token once; return the role it was issued for.

        Raises:
            JoinTokenInvalid: unknown, expired or already used (the same answer for each).
        """
        digest = token_hash(token)
        now = self.clock()
        async with self.db.session() as session:
            result = await session.execute(
                update(JoinTokenRow)
                .where(
                    JoinTokenRow.hash == digest,
                    JoinTokenRow.used_at.is_(None),
                    JoinTokenRow.expires_at > now,
                )
                .values(used_at=now, used_by=service_id)
                .returning(JoinTokenRow.role)
            )
            role = result.scalar_one_or_none()
            if role not in ROLE_NAMES:
                raise JoinTokenInvalid("join token unknown, expired or already used")
            what = f"join token {digest[:12]} used by {service_id!r} ({role})"
            self._audit(session, service_id, "join_token.use", what, "")
        return cast(Role, role)


def _diff_from(latest: VersionRow | None, config: InstallationConfig, label: str) -> str:
    """What changed since ``latest``. A version this Gatehouse no longer accepts (its checks
    grew stricter) is diffed as stored rather than blocking every later publish."""
    if latest is None:
        return diff_configs(None, config, "(nothing published)", label)
    old_label = f"version {latest.number}"
    try:
        previous = validate(InstallationConfig, latest.content, old_label)
    except ConfigError:
        return diff_documents(latest.content, config_document(config), old_label, label)
    return diff_configs(previous, config, old_label, label)


def _allowed_removals(removals: Removals) -> str:
    """How the audit says that removals were allowed on purpose ("" when there were none)."""
    if not removals.removed:
        return ""
    return f" (removal allowed: {', '.join(removals.removed)})"


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0))


def _version(row: VersionRow) -> Version:
    info = VersionInfo(row.number, row.created_at, row.created_by, row.comment, row.rollback_of)
    return Version(info, row.content, row.source, row.envelopes, row.public_key)


def _service(row: ServiceRow) -> ServiceStatus:
    return ServiceStatus(
        row.id,
        row.role,
        row.node,
        row.endpoint,
        row.registered_at,
        row.last_seen_at,
        row.running_version,
        row.last_error,
    )

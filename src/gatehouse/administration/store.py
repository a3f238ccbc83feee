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
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exc, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.administration.canonical import timestamp
from gatehouse.administration.diff import (
    SectionCache,
    diff_documents,
    effective_yaml,
    mask_url_passwords,
    unified_diff,
)
from gatehouse.administration.document import config_document, parse_config
from gatehouse.administration.errors import (
    AlreadyEnrolled,
    JoinTokenInvalid,
    NoDraft,
    NothingChanged,
    RemovalRefused,
    UnknownService,
    VersionNotFound,
)
from gatehouse.administration.guard import Registered, Removals, check_removals
from gatehouse.administration.model import ROLE_NAMES, InstallationConfig, Role
from gatehouse.administration.oauth_keys import KeyRecord, SealedKey, Timeline, key_view
from gatehouse.administration.signing import Ed25519PrivateKey, sign_version
from gatehouse.administration.tables import (
    AuditRow,
    CertificateRow,
    DraftRow,
    JoinTokenRow,
    OAuthKeyRow,
    ServiceRow,
    VersionRow,
)
from gatehouse.administration.views import all_views
from gatehouse.config.loader import validate
from gatehouse.config.oauth import SigningKeyView
from gatehouse.errors import ConfigError
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import upgrade
from gatehouse.storage.types import utcnow

DRAFT_ID = 1
#: Attempts at taking the next version number when another writer took it first.
PUBLISH_ATTEMPTS = 3
JOIN_TOKEN_BYTES = 32
#: Join tokens are ``ghj1.<CA fingerprint>.<secret>``: the prefix keeps a token from starting
#: with "-" (a command-line option to argparse) and lets a secret scanner recognise one; the
#: fingerprint (the 43 base64url characters after ``sha256:``) is the CA the joining service
#: pins.
JOIN_TOKEN_PREFIX = "ghj1."


@dataclass(frozen=True, slots=True)
class Ack:
    """A service's report: it runs ``version``, or failed to apply one (``error``)."""

    service_id: str
    version: int | None
    error: str | None = None
    audit: str | None = None


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
    #: ``(keys,)``: the signing-key view its views were cut with, when this process published
    #: it (None: read from the database, not known).
    keys_of_views: tuple[SigningKeyView | None] | None = field(default=None, compare=False)

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
class IssuedCertificate:
    """A certificate the CA issued to a service, as Admin records it."""

    serial: int
    service_id: str
    role: str
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JoinToken:
    """What a join token allows (its row, once redeemed)."""

    role: Role
    service_id: str
    replace: bool


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A service enrolled: its status, and the certificates a ``replace`` revoked."""

    service: ServiceStatus
    replaced: bool
    revoked: tuple[int, ...]


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
        #: Every write transaction of this store takes it: writers queue here, in order,
        #: instead of on SQLite's write lock, whose busy handler polls and whose deferred
        #: transactions fail at once ("database is locked") when two try to start writing
        #: (a hundred services registering together did). One Admin process owns this DB.
        self._writing = asyncio.Lock()
        #: The newest version's number, content and what it means as canonical YAML, the
        #: old side of the next publish's audit diff (rendering it is the diff's main cost:
        #: 20 ms at 100 services). Set once that version is committed; used while the row
        #: still holds that content.
        self._effective: tuple[int, dict[str, Any], str] | None = None
        #: Renders the new side, section by section, reusing the sections that stayed equal.
        self._sections = SectionCache()

    @classmethod
    async def open(cls, url: str, clock: Callable[[], datetime] = utcnow) -> AdminStore:
        """Migrate the ``admin`` tables of the database at ``url`` and open the store."""
        await upgrade(url, "admin")
        return cls(Database(url), clock)

    async def close(self) -> None:
        await self.db.dispose()

    # Audit

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        """A write transaction, after the writers before it."""
        async with self._writing, self.db.session() as session:
            yield session

    async def record_audit(self, who: str, action: str, what: str, diff: str = "") -> None:
        """Audit an event that wrote nothing here (e.g. a sign-in to the admin API)."""
        async with self._write() as session:
            self._audit(session, who, action, what, diff)

    def _audit(
        self,
        session: AsyncSession,
        who: str,
        action: str,
        what: str,
        diff: str,
        at: datetime | None = None,
    ) -> None:
        at = at or self.clock()
        session.add(AuditRow(at=at, who=who, action=action, what=what, diff=diff))

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
        async with self._write() as session:
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
        republish: str | None = None,
    ) -> Version:
        config = parse_config(source)
        content = config_document(config)
        records = await self.oauth_keys()
        keys = key_view(records, self.clock(), Timeline.of(config.oauth)) if records else None
        views = all_views(config, keys)
        async with self._publishing:
            for attempt in range(PUBLISH_ATTEMPTS):
                try:
                    version = await self._insert_version(
                        source,
                        config,
                        content,
                        views,
                        who,
                        private_key,
                        comment,
                        rollback_of,
                        allow_removal,
                        republish,
                    )
                    return replace(version, keys_of_views=(keys,))
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
        republish: str | None = None,
    ) -> Version:
        async with self._write() as session:
            latest = await self._latest_row(session)
            if republish is not None:
                allowed = ""
            else:
                if latest is not None and latest.content == content:
                    raise NothingChanged(
                        f"version {latest.number} already says this; nothing to publish"
                    )
                # Checked again here, in the transaction that takes the number: the newest
                # version (or the registered services) may have changed since the draft was
                # saved.
                allowed = _allowed_removals(await self._removals(session, content, allow_removal))
            number = latest.number + 1 if latest else 1
            now = self.clock()
            revoked = await self._revoked_serials(session, now)
            signed = sign_version(private_key, number, timestamp(now), views, revoked)
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
            effective = self._sections.effective(config)
            change = self._diff_from(latest, config, effective, f"version {number}")
            if republish is not None:
                what = f"published version {number}: {republish}"
                self._audit(session, who, "version.republish", what, change)
            elif rollback_of is not None:
                await self._put_draft(session, source, who)
                what = f"published version {number}: rollback to version {rollback_of}"
                self._audit(session, who, "version.rollback", what + allowed, change)
            else:
                what = f"published version {number}" + (f": {comment}" if comment else "")
                self._audit(session, who, "version.publish", what + allowed, change)
            await session.flush()
            version = _version(row)
        self._effective = (number, content, effective)
        return version

    def _diff_from(
        self, latest: VersionRow | None, config: InstallationConfig, effective: str, label: str
    ) -> str:
        """What changed since ``latest``; ``effective``: what ``config`` means
        (:func:`effective_yaml`). A version this Gatehouse no longer accepts (its checks grew
        stricter) is diffed as stored rather than blocking every later publish."""
        if latest is None:
            return unified_diff("", effective, "(nothing published)", label)
        old_label = f"version {latest.number}"
        kept = self._effective
        if kept is not None and kept[0] == latest.number and kept[1] == latest.content:
            return unified_diff(kept[2], effective, old_label, label)
        try:
            previous = validate(InstallationConfig, latest.content, old_label)
        except ConfigError:
            return diff_documents(latest.content, config_document(config), old_label, label)
        return unified_diff(effective_yaml(previous), effective, old_label, label)

    async def publish_text(
        self, source: str, who: str, private_key: Ed25519PrivateKey, comment: str
    ) -> Version:
        """Publish ``source`` (made by an API call, e.g. an OAuth client added) as the next
        version; the caller keeps the draft in step.

        Raises:
            ConfigError: ``source`` is invalid. NothingChanged: it says what the newest says.
        """
        return await self._publish(source, who, private_key, comment, None)

    async def republish(
        self, who: str, private_key: Ed25519PrivateKey, reason: str
    ) -> Version | None:
        """Publish the newest version's configuration again as the next version, signed with
        today's revocations (``reason`` goes into its comment and the audit log); None when
        nothing is published yet (the first version will carry them)."""
        latest = await self.latest_version()
        if latest is None:
            return None
        return await self._publish(
            latest.source, who, private_key, reason, None, (), republish=reason
        )

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

    # OAuth signing keys (gatehouse.administration.oauth_keys)

    async def oauth_keys(self) -> list[KeyRecord]:
        async with self.db.session() as session:
            rows = (await session.execute(select(OAuthKeyRow))).scalars().all()
        return [
            KeyRecord(r.kid, r.alg, dict(r.public_jwk), r.created_at, r.signs_from) for r in rows
        ]

    async def add_oauth_keys(
        self, keys: Sequence[SealedKey], who: str, what: str | None = None
    ) -> None:
        """Store new keys; ``what``: audit it (an operator's rotation; the scheduled ones
        are logged only)."""
        async with self._write() as session:
            for key in keys:
                record = key.record
                session.add(
                    OAuthKeyRow(
                        kid=record.kid,
                        alg=record.alg,
                        public_jwk=record.public,
                        keyring_id=key.keyring_id,
                        sealed=key.ciphertext,
                        created_at=record.created_at,
                        signs_from=record.signs_from,
                    )
                )
            if what is not None:
                self._audit(session, who, "oauth.keys.rotate", what, "")

    async def delete_oauth_keys(self, kids: Collection[str]) -> None:
        if not kids:
            return
        async with self._write() as session:
            await session.execute(delete(OAuthKeyRow).where(OAuthKeyRow.kid.in_(list(kids))))

    async def sealed_oauth_keys(self, kids: Collection[str]) -> dict[str, tuple[str, bytes]]:
        """kid -> (keyring id, ciphertext) of the keys among ``kids`` that exist."""
        query = select(OAuthKeyRow).where(OAuthKeyRow.kid.in_(list(kids)))
        async with self.db.session() as session:
            rows = (await session.execute(query)).scalars().all()
        return {r.kid: (r.keyring_id, bytes(r.sealed)) for r in rows}

    # Services

    async def register_service(
        self, service_id: str, role: Role, node: str, endpoint: str, who: str
    ) -> ServiceStatus:
        """Record a service that joined (again: its role, node and endpoint are updated)."""
        async with self._write() as session:
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
        self,
        service_id: str,
        version: int | None,
        error: str | None = None,
        audit: str | None = None,
    ) -> None:
        """A service reports in: it runs ``version``, or failed to apply one (``error``).

        With an error, ``running_version`` is left as it was (the service kept its
        last-known-good version) and the error is kept until a report without one.
        ``audit``: the audit log's line for it, written in the same transaction.

        Raises:
            UnknownService: the service never registered.
        """
        (outcome,) = await self.record_acks([Ack(service_id, version, error, audit)])
        if outcome is not None:
            raise outcome

    async def record_acks(self, acks: Sequence[Ack]) -> list[UnknownService | None]:
        """Several reports in one transaction (one commit for all: a publish to N services
        that answer together is not N commits queued on the database's write lock).

        The transaction waits for an unavailable database (``failover_wait``: a primary
        being replaced), run again whole: the rows it updates get the same values again,
        and a commit cut off is resolved by reading its audit lines (their time is this
        call's), so a report is recorded and audited once.

        Returns, per report, ``None`` or the :class:`UnknownService` it met; the others are
        recorded all the same."""
        now = self.clock()
        ids = {ack.service_id for ack in acks}
        audited = {ack.service_id for ack in acks if ack.audit is not None}

        async def registered(session: AsyncSession) -> set[str]:
            query = select(ServiceRow.id).where(ServiceRow.id.in_(ids))
            return set((await session.execute(query)).scalars().all())

        async def write(session: AsyncSession) -> set[str]:
            known = await registered(session)
            # The last report of a service wins (they are in arrival order).
            rows: dict[str, dict[str, Any]] = {}
            for ack in acks:
                if ack.service_id not in known:
                    continue
                row = rows.setdefault(ack.service_id, {"id": ack.service_id})
                row.update(last_seen_at=now, last_error=ack.error)
                if ack.error is None and ack.version is not None:
                    row["running_version"] = ack.version
            if rows:
                # One executemany per shape (with or without running_version).
                await session.execute(update(ServiceRow), list(rows.values()))
            for ack in acks:
                if ack.service_id in known and ack.audit is not None:
                    self._audit(session, ack.service_id, "service.ack", ack.audit, "", now)
            return known

        async def resolve(session: AsyncSession) -> set[str] | None:
            # Without audit lines, running the updates again is harmless: do.
            if not audited:
                return None
            written = await session.scalar(
                select(func.count())
                .select_from(AuditRow)
                .where(
                    AuditRow.at == now,
                    AuditRow.action == "service.ack",
                    AuditRow.who.in_(audited),
                )
            )
            return await registered(session) if written else None

        known = await self.db.waiting.run(self._write, write, resolve)
        return [
            None
            if ack.service_id in known
            else UnknownService(f"service {ack.service_id!r} has not registered")
            for ack in acks
        ]

    async def list_services(self) -> list[ServiceStatus]:
        async with self.db.session() as session:
            rows = (await session.execute(select(ServiceRow).order_by(ServiceRow.id))).scalars()
            return [_service(row) for row in rows]

    # Join tokens and certificates

    async def create_join_token(
        self,
        role: Role,
        service_id: str,
        who: str,
        ttl: timedelta,
        ca_fingerprint: str,
        replace: bool = False,
    ) -> str:
        """A new one-time token for the service ``service_id`` to join as ``role``; only its
        hash is stored, so this is the only time it is seen. ``ca_fingerprint``
        (``sha256:...``) goes into the token: the service pins that CA."""
        pinned = ca_fingerprint.removeprefix("sha256:")
        token = f"{JOIN_TOKEN_PREFIX}{pinned}.{secrets.token_urlsafe(JOIN_TOKEN_BYTES)}"
        digest = token_hash(token)
        now = self.clock()
        async with self._write() as session:
            session.add(
                JoinTokenRow(
                    hash=digest,
                    role=role,
                    service_id=service_id,
                    replace=replace,
                    created_at=now,
                    created_by=who,
                    expires_at=now + ttl,
                )
            )
            what = (
                f"created a join token for {role} {service_id!r} ({digest[:12]}), expires "
                f"{timestamp(now + ttl)}" + (", replacing its enrolment" if replace else "")
            )
            self._audit(session, who, "join_token.create", what, "")
        return token

    async def enrol(
        self,
        token: str,
        service_id: str,
        role: Role,
        node: str,
        endpoint: str,
        certificate: IssuedCertificate,
    ) -> Enrolment:
        """Use a join token once and record the service and its first certificate, in one
        transaction. A service that is enrolled (it registered and is not revoked) needs a
        token made with ``replace``: its old certificates are then revoked.

        Raises:
            JoinTokenInvalid: unknown, expired or used (the same answer for each), or made
                for another service or role (the token stays unused).
            AlreadyEnrolled: enrolled, and the token was not made with ``replace`` (the
                token stays unused).
        """
        digest = token_hash(token)
        now = self.clock()
        async with self._write() as session:
            row = await session.get(JoinTokenRow, digest, with_for_update=True)
            if row is None or row.used_at is not None or row.expires_at <= now:
                raise JoinTokenInvalid("join token unknown, expired or already used")
            if (row.service_id, row.role) != (service_id, role):
                made_for = (
                    f"{_a(ROLE_NAMES[row.role])} {row.service_id!r}"
                    if row.service_id and row.role in ROLE_NAMES
                    else "no service (an old token)"
                )
                raise JoinTokenInvalid(
                    f"the join token was made for {made_for}, not {_a(ROLE_NAMES[role])} "
                    f"{service_id!r}"
                )
            service = await session.get(ServiceRow, service_id, with_for_update=True)
            current = await self._unrevoked_certificates(session, service_id)
            # Registered and not revoked (a service registered before certificates has none).
            enrolled = service is not None and (
                bool(current) or not await self._has_certificates(session, service_id)
            )
            if enrolled and not row.replace:
                raise AlreadyEnrolled(
                    f"{service_id!r} is enrolled already; to enrol it again (a new machine, a "
                    f"lost state directory) make a join token with --replace: 'gatehouse nodes "
                    f"token --role {role} --id {service_id} --replace' (its certificates in "
                    "use are then revoked)"
                )
            row.used_at, row.used_by = now, service_id
            revoked: list[int] = []
            if enrolled:
                for old in current:
                    old.revoked_at = now
                    revoked.append(int(old.serial, 16))
            if service is None:
                service = ServiceRow(
                    id=service_id, role=role, node=node, endpoint=endpoint, registered_at=now
                )
                session.add(service)
            else:
                service.role, service.node, service.endpoint = role, node, endpoint
                service.registered_at = now
            session.add(_certificate_row(certificate, now))
            serial = f"{certificate.serial:x}"
            what = (
                f"enrolled {role} {service_id!r} on node {node!r} at {endpoint} with join token "
                f"{digest[:12]} (certificate {serial}, valid until "
                f"{timestamp(certificate.not_after)})"
            )
            if enrolled:
                listed = ", ".join(f"{s:x}" for s in revoked) or "none in use"
                what += f", replacing its enrolment (revoked: {listed})"
                self._audit(session, service_id, "service.replace", what, "")
            else:
                self._audit(session, service_id, "service.register", what, "")
            await session.flush()
            return Enrolment(_service(service), enrolled, tuple(revoked))

    async def record_certificate(self, certificate: IssuedCertificate) -> None:
        """A renewed certificate of a service."""
        now = self.clock()
        async with self._write() as session:
            session.add(_certificate_row(certificate, now))
            what = (
                f"renewed the certificate of {certificate.role} {certificate.service_id!r} "
                f"(certificate {certificate.serial:x}, valid until "
                f"{timestamp(certificate.not_after)})"
            )
            self._audit(session, certificate.service_id, "certificate.renew", what, "")

    async def revoke_service(self, service_id: str, who: str, reason: str = "") -> list[int]:
        """Revoke every certificate of ``service_id`` not yet revoked; their serials.

        Raises:
            UnknownService: no certificate was ever issued to it.
        """
        now = self.clock()
        async with self._write() as session:
            if not await self._has_certificates(session, service_id):
                raise UnknownService(f"no certificate was issued to {service_id!r}")
            rows = await self._unrevoked_certificates(session, service_id)
            for row in rows:
                row.revoked_at = now
            serials = sorted(int(row.serial, 16) for row in rows)
            listed = ", ".join(f"{s:x}" for s in serials) or "none left to revoke"
            what = f"revoked the certificates of {service_id!r}: {listed}"
            if reason:
                what += f" ({reason})"
            self._audit(session, who, "certificate.revoke", what, "")
        return serials

    async def revoked_serials(self) -> set[int]:
        """Serials of every revoked certificate that has not expired."""
        async with self.db.session() as session:
            return await self._revoked_serials(session, self.clock())

    async def certificates(self) -> dict[str, IssuedCertificate]:
        """The newest certificate issued to each service."""
        query = select(CertificateRow).order_by(CertificateRow.issued_at)
        async with self.db.session() as session:
            rows = (await session.execute(query)).scalars().all()
        return {row.service_id: _issued(row) for row in rows}

    async def _revoked_serials(self, session: AsyncSession, now: datetime) -> set[int]:
        query = select(CertificateRow.serial).where(
            CertificateRow.revoked_at.is_not(None), CertificateRow.not_after > now
        )
        return {int(serial, 16) for serial in (await session.execute(query)).scalars()}

    async def _unrevoked_certificates(
        self, session: AsyncSession, service_id: str
    ) -> list[CertificateRow]:
        query = select(CertificateRow).where(
            CertificateRow.service_id == service_id, CertificateRow.revoked_at.is_(None)
        )
        return list((await session.execute(query)).scalars())

    async def _has_certificates(self, session: AsyncSession, service_id: str) -> bool:
        query = select(func.count()).where(CertificateRow.service_id == service_id)
        return bool((await session.execute(query)).scalar_one())


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _certificate_row(certificate: IssuedCertificate, now: datetime) -> CertificateRow:
    return CertificateRow(
        serial=f"{certificate.serial:x}",
        service_id=certificate.service_id,
        role=certificate.role,
        not_before=certificate.not_before,
        not_after=certificate.not_after,
        issued_at=now,
    )


def _issued(row: CertificateRow) -> IssuedCertificate:
    return IssuedCertificate(
        int(row.serial, 16),
        row.service_id,
        row.role,
        row.not_before,
        row.not_after,
        row.revoked_at,
    )


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

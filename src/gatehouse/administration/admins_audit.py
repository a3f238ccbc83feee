"""Reading the audit log with filters: the person who acted (``who``), a user the event
names, the event (its action, or an action prefix such as ``token.``), a time window, and
paging by id (newest first)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from gatehouse.administration.store import AuditEntry
from gatehouse.administration.tables import AuditRow
from gatehouse.storage.engine import Database

MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class AuditFilter:
    who: str = ""
    user: str = ""
    action: str = ""
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None

    def query(self, before: bool = True) -> dict[str, str]:
        """The filter as query values (what the page's links carry)."""
        values = {
            "who": self.who,
            "user": self.user,
            "action": self.action,
            "since": _show(self.since),
            "until": _show(self.until),
        }
        if before and self.before is not None:
            values["before"] = str(self.before)
        return {k: v for k, v in values.items() if v}


def _show(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M") if moment else ""


def parse_time(name: str, raw: str) -> datetime | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]`` (UTC); empty: none."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "T"))
    except ValueError:
        raise ValueError(
            f"{name}: not a time: {raw[:40]!r} (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_filter(params: Mapping[str, str]) -> AuditFilter:
    """The filter from query values; ``ValueError`` naming the field at fault."""
    text = {}
    for name in ("who", "user", "action"):
        value = params.get(name, "").strip()
        if len(value) > MAX_TEXT:
            raise ValueError(f"{name}: at most {MAX_TEXT} characters")
        text[name] = value
    before_raw = params.get("before", "").strip()
    if before_raw and not before_raw.isdigit():
        raise ValueError(f"before: not an entry id: {before_raw[:20]!r}")
    since = parse_time("since", params.get("since", ""))
    until = parse_time("until", params.get("until", ""))
    if until is not None and len(params.get("until", "").strip()) == 10:
        until = until.replace(hour=23, minute=59, second=59)  # a day: all of it
    return AuditFilter(
        text["who"],
        text["user"],
        text["action"],
        since,
        until,
        int(before_raw) if before_raw else None,
    )


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def query_audit(db: Database, chosen: AuditFilter, limit: int) -> list[AuditEntry]:
    """The entries ``chosen`` selects, newest first, at most ``limit``."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if chosen.who:
        query = query.where(AuditRow.who == chosen.who)
    if chosen.user:
        query = query.where(AuditRow.what.like(f"%{_like(chosen.user)}%", escape="\\"))
    if chosen.action:
        if chosen.action.endswith("."):
            query = query.where(AuditRow.action.like(f"{_like(chosen.action)}%", escape="\\"))
        else:
            query = query.where(AuditRow.action == chosen.action)
    if chosen.since is not None:
        query = query.where(AuditRow.at >= chosen.since)
    if chosen.until is not None:
        query = query.where(AuditRow.at <= chosen.until)
    if chosen.before is not None:
        query = query.where(AuditRow.id < chosen.before)
    async with db.session() as session:
        rows = (await session.execute(query)).scalars().all()
    return [AuditEntry(r.id, r.at, r.who, r.action, r.what, r.diff) for r in rows]

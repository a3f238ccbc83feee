"""The console's audit log: filter by person (who), user (named in the event), event (its
action) and time; page through newest first; export what the filter selects as CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from starlette.responses import Response

from gatehouse.administration.admins import BREAK_GLASS
from gatehouse.administration.admins_audit import AuditFilter, parse_filter, query_audit
from gatehouse.administration.console.app import ConsoleRoute
from gatehouse.administration.console.context import ConsoleError, ConsolePage

PAGE_SIZE = 50
MAX_EXPORT = 100_000


def _filter(page: ConsolePage) -> AuditFilter:
    try:
        return parse_filter(page.request.query_params)
    except ValueError as exc:
        raise ConsoleError(400, "Bad filter", str(exc)) from None


async def audit(page: ConsolePage) -> Response:
    chosen = _filter(page)
    entries = await query_audit(page.service.store.db, chosen, PAGE_SIZE + 1)
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    older = page.url("/audit", **chosen.query(), before=entries[-1].id) if more else None
    newer = page.url("/audit", **chosen.query()) if chosen.before else None
    export = page.url("/audit.csv", **chosen.query(before=False))
    return page.render(
        "audit.html",
        entries=entries,
        chosen=chosen,
        older=older,
        newer=newer,
        export=export,
        break_glass=BREAK_GLASS,
    )


async def audit_csv(page: ConsolePage) -> Response:
    chosen = _filter(page)
    entries = await query_audit(page.service.store.db, chosen, MAX_EXPORT)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["id", "at", "who", "action", "what", "diff"])
    for entry in entries:
        writer.writerow(
            [
                entry.id,
                entry.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                entry.who,
                entry.action,
                _cell(entry.what),
                _cell(entry.diff),
            ]
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="gatehouse-audit-{stamp}.csv"'},
    )


def _cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return f"'{value}" if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


ROUTES = [
    ConsoleRoute("/audit", audit, ("GET",), "audit.read", nav="Audit log"),
    ConsoleRoute("/audit.csv", audit_csv, ("GET",), "audit.read"),
]

"""The console's overview: every service of the installation, its role and node, whether it
is healthy, the configuration version it runs against the newest published, its last
acknowledgement, its certificate's expiry and, for an Access Point, the Policy service it
uses now (from its status listener)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from starlette.responses import Response

from gatehouse.administration.console.app import ConsoleRoute
from gatehouse.administration.console.context import ConsolePage
from gatehouse.administration.console.overview_data import ServiceRow, overview_rows


@dataclass(frozen=True, slots=True)
class Summary:
    services: int
    healthy: int
    behind: int
    newest: int | None
    published_at: datetime | None
    published_by: str


async def overview(page: ConsolePage) -> Response:
    service = page.service
    rows: list[ServiceRow] = await overview_rows(service)
    versions = await service.store.list_versions(1)
    newest = versions[0] if versions else None
    summary = Summary(
        services=len(rows),
        healthy=sum(1 for r in rows if r.healthy),
        behind=sum(1 for r in rows if r.behind),
        newest=newest.number if newest else None,
        published_at=newest.created_at if newest else None,
        published_by=newest.created_by if newest else "",
    )
    return page.render("overview.html", rows=rows, summary=summary)


ROUTES = [ConsoleRoute("/", overview, ("GET",), "config.read", nav="Overview")]

"""Which service has acknowledged a published version: the rows of the console's publish
page and of its JSON status (polled by console.js), from the Administration service's own
view of the services (:meth:`~gatehouse.administration.service.AdministrationService.services`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from gatehouse.administration.api_models import ServiceOut

State = Literal["applied", "failed", "waiting", "not_enrolled"]

LABELS: dict[State, str] = {
    "applied": "applied",
    "failed": "failed",
    "waiting": "waiting",
    "not_enrolled": "not enrolled",
}


@dataclass(frozen=True, slots=True)
class AckRow:
    id: str
    role: str
    node: str
    state: State
    label: str
    detail: str
    at: str | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def ack_rows(version: int, listed: Sequence[str], services: Sequence[ServiceOut]) -> list[AckRow]:
    """One row per service ``version`` configures (``listed``), in that order: applied once
    it runs ``version`` or a newer one, failed when its last report says it could not apply
    ``version``, else waiting; a listed service that never enrolled cannot acknowledge."""
    known = {s.id: s for s in services}
    rows = []
    for service_id in listed:
        status = known.get(service_id)
        if status is None:
            rows.append(
                AckRow(service_id, "", "", "not_enrolled", LABELS["not_enrolled"], "", None)
            )
            continue
        report = status.last_report
        state: State = "waiting"
        detail = f"runs version {status.running_version}" if status.running_version else ""
        at = report.at if report else status.last_seen_at
        if status.running_version is not None and status.running_version >= version:
            state, detail = "applied", f"runs version {status.running_version}"
        elif report is not None and report.version == version and report.error:
            state, detail = "failed", report.error
        rows.append(AckRow(status.id, status.role, status.node, state, LABELS[state], detail, at))
    return rows


def finished(rows: Sequence[AckRow]) -> bool:
    """Every enrolled service has applied the version or said why it could not."""
    return all(row.state != "waiting" for row in rows)


def summary(rows: Sequence[AckRow]) -> str:
    applied = sum(row.state == "applied" for row in rows)
    failed = sum(row.state == "failed" for row in rows)
    waiting = sum(row.state == "waiting" for row in rows)
    parts = [f"{applied} of {len(rows)} applied"]
    if failed:
        parts.append(f"{failed} failed")
    if waiting:
        parts.append(f"{waiting} waiting")
    return ", ".join(parts)

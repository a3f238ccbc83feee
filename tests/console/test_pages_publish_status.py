"""Which services acknowledged a published version (pure)."""

from __future__ import annotations

from gatehouse.administration.api_models import Report, ServiceOut
from gatehouse.administration.console.publish_status import ack_rows, finished, summary


def service(sid: str, running: int | None, report: Report | None = None) -> ServiceOut:
    return ServiceOut(
        id=sid,
        role="policy",
        node="n1",
        endpoint="http://127.0.0.1:1",
        running_version=running,
        last_seen_at="2026-12-06T09:00:00Z",
        last_error=report.error if report else None,
        healthy=True,
        last_report=report,
    )


def test_rows_follow_the_versions_services_and_their_acknowledgements() -> None:
    failed = Report(version=7, error="cannot bind 127.0.0.1:1", at="2026-12-06T09:00:01Z")
    old_failure = Report(version=6, error="old", at="2026-12-06T08:00:00Z")
    services = [
        service("ps1", 7),
        service("ap1", 8),
        service("auth1", 6, failed),
        service("dist1", 6, old_failure),
    ]
    rows = ack_rows(7, ["ap1", "ps1", "auth1", "dist1", "ap9"], services)
    assert [(r.id, r.state) for r in rows] == [
        ("ap1", "applied"),
        ("ps1", "applied"),
        ("auth1", "failed"),
        ("dist1", "waiting"),
        ("ap9", "not_enrolled"),
    ]
    assert rows[2].detail == "cannot bind 127.0.0.1:1"
    assert rows[3].detail == "runs version 6"
    assert not finished(rows)
    assert summary(rows) == "2 of 5 applied, 1 failed, 1 waiting"
    assert rows[0].to_json()["label"] == "applied"
    done = ack_rows(7, ["ps1", "ap9"], services)
    assert finished(done)
    assert summary(done) == "1 of 2 applied"

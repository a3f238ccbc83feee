"""Two Distribution services on one PostgreSQL outbox: they share the work without losing or
doubling a message (leases taken ``FOR UPDATE SKIP LOCKED``), and the messages a killed one
had claimed are delivered by the other once its lease has run out."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gatehouse.distribution.outbox import MessageRow, Outbox
from gatehouse.storage.engine import create_engine
from tests.distribution.support import (
    MailSink,
    call,
    smtp_channel,
    start_distribution,
    submit,
    wait_until,
)
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.processes import Service

__all__ = ["postgres_cluster", "postgres_url"]

pytestmark = pytest.mark.slow

EMAIL = "jane@example.org"


@pytest.fixture
def cleanup() -> Iterator[list[Service | MailSink]]:
    things: list[Service | MailSink] = []
    yield things
    for thing in reversed(things):
        thing.stop()


def rows(url: str) -> list[MessageRow]:
    async def go() -> list[MessageRow]:
        engine = create_engine(url)
        try:
            return await Outbox(engine).list_messages(limit=100_000)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_two_services_share_a_thousand_messages(
    tmp_path: Path, postgres_url: str, cleanup: list[Service | MailSink]
) -> None:
    sink = MailSink().start()
    cleanup.append(sink)
    home = tmp_path / "home"
    services = [
        start_distribution(
            tmp_path,
            name,
            # A send that times out after the sink stored the mail is a failed round, and the
            # message is rightly sent again (at least once): on a loaded host 2 s is too short.
            [smtp_channel(sink.port, timeout=15)],
            home=home,
            outbox_db=postgres_url,
            delivery={"workers": 8},
        )
        for name in ("dist1", "dist2")
    ]
    cleanup.extend(services)

    def one(n: int) -> str:
        base = services[n % 2].url
        return str(submit(base, email=EMAIL, text=f"Code {n:06d}")["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(one, range(1000)))
    assert len(ids) == 1000
    wait_until(lambda: len(sink.mails()) >= 1000, 120, what="1,000 mails")
    time.sleep(1)  # anything delivered twice would arrive now
    received = Counter(mail.message_id for mail in sink.mails())
    assert set(received) == {f"<{i}@gatehouse>" for i in ids}  # none lost
    stored = rows(postgres_url)
    retried = sum(1 for row in stored if row.attempts != 1)
    doubled = sorted(key for key, count in received.items() if count > 1)
    # None doubled (no failure, so no redelivery); the count of retried rows says which.
    assert not doubled, f"{len(doubled)} delivered twice, {retried} rows with retries"
    assert retried == 0
    assert {row.status for row in stored} == {"sent"}
    assert all(row.body_ciphertext is None for row in stored)
    sent = [call(svc.url, "GET", "/internal/v1/health")[1]["sent"] for svc in services]
    assert sum(sent) == 1000
    assert min(sent) > 0, sent  # both delivered


def test_a_killed_services_claims_are_delivered_by_the_other(
    tmp_path: Path, postgres_url: str, cleanup: list[Service | MailSink]
) -> None:
    sink = MailSink().start()
    sink.delay = 3.0  # the server takes 3 s per message: claims are held meanwhile
    cleanup.append(sink)
    home = tmp_path / "home"
    delivery = {"workers": 20, "lease": 12, "poll_interval": 0.5}
    channels = [smtp_channel(sink.port, timeout=5)]
    first = start_distribution(
        tmp_path, "dist1", channels, home=home, outbox_db=postgres_url, delivery=delivery
    )
    second = start_distribution(
        tmp_path, "dist2", channels, home=home, outbox_db=postgres_url, delivery=delivery
    )
    cleanup += [first, second]
    ids = {str(submit(first.url, email=EMAIL, text="Code 999331")["id"]) for _ in range(20)}
    wait_until(
        lambda: (
            sum(1 for r in rows(postgres_url) if (r.lease_owner or "").startswith("dist1:")) > 0
        ),
        what="messages claimed by dist1",
    )
    claimed = {r.id for r in rows(postgres_url) if (r.lease_owner or "").startswith("dist1:")}
    first.proc.kill()  # kill -9, in the middle of its SMTP transactions
    first.proc.wait()
    killed_at = time.time()
    sink.delay = 0.0
    wait_until(
        lambda: {m.message_id for m in sink.mails()} >= {f"<{i}@gatehouse>" for i in ids},
        60,
        what="every message delivered",
    )
    by_id = {m.message_id: m for m in sink.mails()}
    for message_id in claimed:
        mail = by_id[f"<{message_id}@gatehouse>"]
        # The dead service's claims waited for its lease (12 s from the claim).
        assert mail.at > killed_at + 5
    wait_until(
        lambda: {r.status for r in rows(postgres_url) if r.id in ids} == {"sent"},
        what="every message marked sent",
    )
    assert "999331" not in first.log_path.read_text() + second.output()

"""AdminStore on SQLite and PostgreSQL: drafts, publish, rollback, services, join tokens, audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from sqlalchemy import text

from gatehouse.administration.document import parse_config
from gatehouse.administration.errors import (
    AlreadyEnrolled,
    JoinTokenInvalid,
    NoDraft,
    NothingChanged,
    UnknownService,
    VersionNotFound,
)
from gatehouse.administration.signing import (
    Ed25519PrivateKey,
    generate_private_key,
    public_key_pem,
    verify,
)
from gatehouse.administration.store import Ack, AdminStore, IssuedCertificate, token_hash
from gatehouse.administration.tables import AuditRow
from gatehouse.administration.views import view_for
from gatehouse.errors import ConfigError
from gatehouse.storage import engine
from tests.administration.samples import ha, minimal

T = TypeVar("T")
KEY: Ed25519PrivateKey = generate_private_key()
PEM = public_key_pem(KEY)
START = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class Harness:
    """One store, one event loop for the whole test (asyncpg connections belong to a loop)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.store = self.run(AdminStore.open(url, self.clock))

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture
def harness(db_url: str) -> Iterator[Harness]:
    h = Harness(db_url)
    try:
        yield h
    finally:
        h.close()


def dump(doc: dict[str, Any]) -> str:
    return "# the installation\n" + yaml.safe_dump(doc, sort_keys=False)


def test_nothing_to_publish_before_a_draft(harness: Harness) -> None:
    with pytest.raises(NoDraft):
        harness.run(harness.store.publish("ann", KEY))
    assert harness.run(harness.store.get_draft()) is None
    assert harness.run(harness.store.latest_version()) is None
    assert harness.run(harness.store.latest_number()) == 0
    with pytest.raises(VersionNotFound, match="no version has been published yet"):
        harness.run(harness.store.signed_view("ap1"))


def test_an_invalid_draft_is_kept_but_not_published(harness: Harness) -> None:
    store = harness.store
    doc = minimal()
    doc["access_points"][0]["policy_services"] = ["ps9"]
    draft = harness.run(store.save_draft(dump(doc), "ann"))
    assert (draft.saved_by, draft.saved_at) == ("ann", START)
    with pytest.raises(ConfigError) as info:
        harness.run(store.publish("ann", KEY))
    assert str(info.value) == (
        "draft: access_points[0].policy_services[0]: unknown policy service 'ps9'"
    )
    harness.run(store.save_draft("services: [\n", "ann"))
    with pytest.raises(ConfigError, match="draft: line 2, column 1: invalid YAML"):
        harness.run(store.publish("ann", KEY))
    assert harness.run(store.list_versions()) == []
    assert harness.run(store.get_draft()).source == "services: [\n"  # type: ignore[union-attr]


def test_publish_signs_every_services_view(harness: Harness) -> None:
    store = harness.store
    source = dump(ha())
    harness.run(store.save_draft(source, "ann"))
    version = harness.run(store.publish("ann", KEY, "first"))
    config = parse_config(source)
    assert version.number == 1
    assert (version.info.created_by, version.info.comment) == ("ann", "first")
    assert version.info.created_at == START
    assert version.source == source
    assert version.config() == config
    assert version.public_key == PEM
    assert set(version.envelopes) == {s.id for s in config.services}
    for service in config.services:
        envelope = harness.run(store.signed_view(service.id))
        checked = verify(PEM, envelope, service=service.id)
        assert checked.version == 1
        assert checked.created_at == "2030-01-02T03:04:05Z"
        assert checked.view == view_for(config, service.id)
    with pytest.raises(UnknownService, match="'ap9' is not in version 1"):
        harness.run(store.signed_view("ap9"))
    stored = harness.run(store.get_version(1))
    assert stored == version


def test_versions_are_numbered_in_order_and_rollback_publishes_anew(harness: Harness) -> None:
    store = harness.store
    first = dump(minimal())
    harness.run(store.save_draft(first, "ann"))
    harness.run(store.publish("ann", KEY))
    with pytest.raises(NothingChanged, match="version 1 already says this"):
        harness.run(store.publish("ann", KEY))

    doc = minimal()
    doc["access_points"][0]["workers"] = 8
    harness.clock.now = START + timedelta(minutes=5)
    harness.run(store.save_draft(dump(doc), "bob"))
    second = harness.run(store.publish("bob", KEY, "more workers"))
    assert second.number == 2
    assert second.content["access_points"][0]["workers"] == 8

    harness.clock.now = START + timedelta(minutes=10)
    third = harness.run(store.rollback(1, "carol", KEY))
    assert third.number == 3
    assert third.info.rollback_of == 1
    assert third.info.comment == "rollback to version 1"
    assert third.content == harness.run(store.get_version(1)).content
    assert third.source == first
    assert harness.run(store.get_draft()).source == first  # type: ignore[union-attr]
    envelope = harness.run(store.signed_view("ap1"))
    assert verify(PEM, envelope).version == 3
    assert (
        verify(PEM, harness.run(store.signed_view("ap1", 2))).view["access_point"]["workers"] == 8
    )

    with pytest.raises(NothingChanged):
        harness.run(store.rollback(1, "carol", KEY))
    with pytest.raises(VersionNotFound, match="there is no version 9"):
        harness.run(store.rollback(9, "carol", KEY))
    infos = harness.run(store.list_versions())
    assert [(v.number, v.created_by, v.rollback_of) for v in infos] == [
        (3, "carol", 1),
        (2, "bob", None),
        (1, "ann", None),
    ]
    assert [v.number for v in harness.run(store.list_versions(limit=1))] == [3]
    assert harness.run(store.latest_number()) == 3


def test_every_write_is_audited_with_its_diff(harness: Harness) -> None:
    store = harness.store
    doc = minimal()
    doc["databases"] = {"user_db": "postgresql+asyncpg://gh:hunter2@db/gatehouse"}
    harness.run(store.save_draft(dump(doc), "ann"))
    harness.run(store.publish("ann", KEY, "initial"))
    doc["access_points"][0]["workers"] = 3
    harness.run(store.save_draft(dump(doc), "bob"))
    harness.run(store.publish("bob", KEY))
    harness.run(store.rollback(1, "carol", KEY))
    harness.run(store.record_audit("dave", "admin.login", "signed in"))
    log = harness.run(store.audit_log())
    assert [(e.who, e.action, e.what) for e in log] == [
        ("dave", "admin.login", "signed in"),
        ("carol", "version.rollback", "published version 3: rollback to version 1"),
        ("bob", "version.publish", "published version 2"),
        ("bob", "draft.save", "saved the draft"),
        ("ann", "version.publish", "published version 1: initial"),
        ("ann", "draft.save", "saved the draft"),
    ]
    assert all(e.at == START for e in log)
    rollback, publish2, save2 = log[1], log[2], log[3]
    assert "-  workers: 3\n+  workers: 1\n" in rollback.diff
    assert rollback.diff.startswith("--- version 2\n+++ version 3\n")
    assert "-  workers: 1\n+  workers: 3\n" in publish2.diff
    assert save2.diff.startswith("--- draft (before)\n+++ draft\n")
    assert [line for line in save2.diff.splitlines() if line[:1] in "+-"][2:] == ["+  workers: 3"]
    assert log[4].diff.startswith("--- (nothing published)\n+++ version 1\n")
    assert all("hunter2" not in e.diff for e in log)
    assert "gh:***@db" in log[5].diff
    page = harness.run(store.audit_log(limit=2, before=log[1].id))
    assert [e.action for e in page] == ["version.publish", "draft.save"]


def test_services_report_what_they_run(harness: Harness) -> None:
    store = harness.store
    status = harness.run(
        store.register_service("ap1", "access_point", "dmz1", "http://10.0.0.11:8080", "admin")
    )
    assert (status.id, status.registered_at, status.running_version) == ("ap1", START, None)
    harness.run(store.register_service("ps1", "policy", "int1", "http://10.0.1.11:8101", "admin"))
    harness.clock.now = START + timedelta(seconds=30)
    harness.run(store.record_ack("ap1", 4))
    harness.run(store.record_ack("ps1", 4))
    harness.clock.now = START + timedelta(seconds=60)
    harness.run(store.record_ack("ap1", 5, "signature does not verify"))
    ap1, ps1 = harness.run(store.list_services())
    assert (ap1.running_version, ap1.last_error, ap1.last_seen_at) == (
        4,
        "signature does not verify",
        START + timedelta(seconds=60),
    )
    assert (ps1.running_version, ps1.last_error) == (4, None)
    harness.run(store.record_ack("ap1", 5))
    ap1 = harness.run(store.list_services())[0]
    assert (ap1.running_version, ap1.last_error) == (5, None)
    # Registering again moves the service, keeping what it reported.
    moved = harness.run(
        store.register_service("ap1", "access_point", "dmz9", "http://10.0.0.99:8080", "admin")
    )
    assert (moved.node, moved.endpoint, moved.running_version) == (
        "dmz9",
        "http://10.0.0.99:8080",
        5,
    )
    with pytest.raises(UnknownService, match="'ap7' has not registered"):
        harness.run(store.record_ack("ap7", 1))


def test_acks_written_together_are_one_transaction_each_with_its_own_outcome(
    harness: Harness,
) -> None:
    store = harness.store
    for n in range(1, 4):
        harness.run(
            store.register_service(f"ap{n}", "access_point", "dmz", f"http://10.0.0.{n}:80", "a")
        )
    batch = [
        Ack("ap1", 3, None, "ap1 runs version 3"),
        Ack("ap7", 3, None, "ap7 runs version 3"),
        Ack("ap2", 3, "bad view", "ap2 failed"),
        Ack("ap3", 3),
    ]
    outcomes = harness.run(store.record_acks(batch))
    assert [type(o).__name__ if o else None for o in outcomes] == [
        None,
        "UnknownService",
        None,
        None,
    ]
    services = {s.id: s for s in harness.run(store.list_services())}
    assert (services["ap1"].running_version, services["ap1"].last_error) == (3, None)
    assert (services["ap2"].running_version, services["ap2"].last_error) == (None, "bad view")
    assert services["ap3"].running_version == 3
    acks = [e for e in harness.run(store.audit_log(limit=20)) if e.action == "service.ack"]
    assert sorted(e.what for e in acks) == ["ap1 runs version 3", "ap2 failed"]


FINGERPRINT = "sha256:" + "A" * 43


def issued(service_id: str, role: str, serial: int) -> IssuedCertificate:
    return IssuedCertificate(serial, service_id, role, START, START + timedelta(days=7))


def test_join_tokens_work_once_for_their_service_and_expire(harness: Harness) -> None:
    store = harness.store
    minutes = timedelta(minutes=10)
    token = harness.run(store.create_join_token("policy", "ps3", "admin", minutes, FINGERPRINT))
    assert token.startswith(f"ghj1.{'A' * 43}.")  # never "-": it must survive `--token TOKEN`
    assert len(token) >= 90
    enrol = store.enrol
    with pytest.raises(JoinTokenInvalid, match="made for a policy service 'ps3', not"):
        harness.run(enrol(token, "ps4", "policy", "n", "http://x:1", issued("ps4", "policy", 1)))
    enrolment = harness.run(
        enrol(token, "ps3", "policy", "n", "http://x:1", issued("ps3", "policy", 2))
    )
    assert (enrolment.service.id, enrolment.replaced, enrolment.revoked) == ("ps3", False, ())
    with pytest.raises(JoinTokenInvalid, match="unknown, expired or already used"):
        harness.run(enrol(token, "ps3", "policy", "n", "http://x:1", issued("ps3", "policy", 3)))
    with pytest.raises(JoinTokenInvalid):
        harness.run(enrol("made-up", "ps4", "policy", "n", "x", issued("ps4", "policy", 4)))
    late = harness.run(
        store.create_join_token("access_point", "ap4", "admin", minutes, FINGERPRINT)
    )
    harness.clock.now = START + minutes
    with pytest.raises(JoinTokenInvalid):
        harness.run(enrol(late, "ap4", "access_point", "n", "x", issued("ap4", "access_point", 5)))

    async def stored() -> list[str]:
        async with store.db.connect() as conn:
            rows = await conn.execute(text("SELECT * FROM admin_join_tokens"))
            return [str(tuple(row)) for row in rows]

    rows = harness.run(stored())
    assert len(rows) == 2
    assert token_hash(token) in rows[0] + rows[1]
    assert all(token not in row and late not in row for row in rows)  # hashed at rest
    assert all(token.rsplit(".", 1)[1] not in row for row in rows)
    log = harness.run(store.audit_log())
    assert [e.action for e in log] == [
        "join_token.create",
        "service.register",
        "join_token.create",
    ]
    assert all(token not in e.what and late not in e.what for e in log)


def test_enrolling_again_needs_replace_and_revokes(harness: Harness) -> None:
    store = harness.store
    minutes = timedelta(minutes=10)

    def token(replace: bool = False) -> str:
        return harness.run(
            store.create_join_token("policy", "ps1", "admin", minutes, FINGERPRINT, replace)
        )

    harness.run(store.enrol(token(), "ps1", "policy", "n", "x", issued("ps1", "policy", 0xA1)))
    plain = token()
    with pytest.raises(AlreadyEnrolled, match="--replace"):
        harness.run(store.enrol(plain, "ps1", "policy", "n", "x", issued("ps1", "policy", 0xA2)))
    again = harness.run(
        store.enrol(token(True), "ps1", "policy", "n2", "x", issued("ps1", "policy", 0xA3))
    )
    assert (again.replaced, again.revoked, again.service.node) == (True, (0xA1,), "n2")
    assert harness.run(store.revoked_serials()) == {0xA1}
    assert harness.run(store.revoke_service("ps1", "admin", "stolen")) == [0xA3]
    assert harness.run(store.revoked_serials()) == {0xA1, 0xA3}
    # Revoked, it enrols with the token refused before (it was kept unused).
    harness.run(store.enrol(plain, "ps1", "policy", "n", "x", issued("ps1", "policy", 0xA4)))
    assert harness.run(store.certificates())["ps1"].serial == 0xA4
    # Expired revocations are no longer listed.
    harness.clock.now = START + timedelta(days=8)
    assert harness.run(store.revoked_serials()) == set()
    actions = [e.action for e in harness.run(store.audit_log())]
    assert actions.count("service.replace") == 1
    assert "certificate.revoke" in actions


def test_two_stores_publishing_at_once_make_one_version(postgres_url: str) -> None:
    """With one Admin this cannot happen, but the version number is safe even so."""

    async def go() -> list[object]:
        clock = Clock()
        one = await AdminStore.open(postgres_url, clock)
        two = await AdminStore.open(postgres_url, clock)
        try:
            await one.save_draft(dump(ha()), "ann")
            results = await asyncio.gather(
                one.publish("ann", KEY), two.publish("bob", KEY), return_exceptions=True
            )
            return [*results, await one.list_versions()]
        finally:
            await one.close()
            await two.close()

    first, second, versions = asyncio.run(go())
    kinds = sorted(type(r).__name__ for r in (first, second))
    assert kinds == ["NothingChanged", "Version"]
    assert [v.number for v in versions] == [1]  # type: ignore[attr-defined]


def test_a_stored_version_that_no_longer_validates_does_not_block_publishing(
    harness: Harness,
) -> None:
    """Checks may grow stricter in a later Gatehouse; the next publish still works."""
    store = harness.store
    harness.run(store.save_draft(dump(minimal()), "ann"))
    harness.run(store.publish("ann", KEY))

    async def corrupt() -> None:
        async with store.db.connect() as conn:
            content = dict(minimal(), retired_field=True)
            await conn.execute(
                text("UPDATE admin_versions SET content = :c WHERE number = 1"),
                {"c": json.dumps(content)},
            )

    harness.run(corrupt())
    doc = minimal()
    doc["access_points"][0]["workers"] = 2
    harness.run(store.save_draft(dump(doc), "ann"))
    assert harness.run(store.publish("ann", KEY)).number == 2
    diff = harness.run(store.audit_log(limit=1))[0].diff
    assert "-retired_field: true\n" in diff
    assert "+  workers: 2\n" in diff


def test_a_write_waits_for_a_slow_one_instead_of_failing_on_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers queue in the store, not on SQLite's write lock: there a writer that finds the
    lock held longer than the busy timeout fails ("database is locked"), which lost services
    registering together while Admin's event loop was busy with the rest of them."""
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 100)

    async def scenario() -> None:
        store = await AdminStore.open(f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}")
        try:
            minutes = timedelta(minutes=10)

            async def slow_writer() -> None:
                async with store._write() as session:
                    session.add(AuditRow(at=START, who="slow", action="test", what="held", diff=""))
                    await session.flush()
                    await asyncio.sleep(0.5)  # the loop is busy elsewhere; the lock is held

            slow = asyncio.create_task(slow_writer())
            await asyncio.sleep(0.1)
            token = await store.create_join_token("policy", "ps1", "a", minutes, FINGERPRINT)
            await slow
            assert token
            assert [e.who for e in await store.audit_log()][:2] == ["a", "slow"]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_hundred_services_enrolling_at_once_all_succeed(harness: Harness) -> None:
    """Writers queue in the store, not on the database's write lock: on SQLite, two deferred
    transactions that both start writing fail at once ("database is locked")."""
    store = harness.store
    minutes = timedelta(minutes=10)

    async def one(n: int) -> str:
        service = f"ap{n}"
        token = await store.create_join_token(
            "access_point", service, "admin", minutes, FINGERPRINT
        )
        enrolment = await store.enrol(
            token, service, "access_point", "n", f"http://x:{n}", issued(service, "access_point", n)
        )
        return enrolment.service.id

    async def all_at_once() -> list[str]:
        return await asyncio.gather(*(one(n) for n in range(1, 101)))

    assert sorted(harness.run(all_at_once())) == sorted(f"ap{n}" for n in range(1, 101))
    assert len(harness.run(store.list_services())) == 100

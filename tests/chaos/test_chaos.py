"""Chaos: the example HA topology (``gatehouse cluster``) under steady load while its parts are
killed with SIGKILL one at a time, every user request's outcome recorded.

Load: 50 signed-in sessions through HAProxy, 250 requests/s in total, each a protected page
(any answer but 200 is a failure: a 5xx, or a 303 to the login page — a forced re-login; a
303 to the portal's wait page, during a database failover, is followed as a browser does).
In turn: the primary Policy service of ap1, the Access Point ap1, an Authentication service
during sign-ins, the Distribution services during sign-ins (one, then both: a password
sign-in never needs them), the Administration service, and the PostgreSQL primary during
sign-ins (Patroni promotes its synchronous standby; no request and no sign-in fails). Each
killed service is started again and traffic must fail back to it. Bounded: about two
minutes; everything on loopback, stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from gatehouse.cluster import db_access
from gatehouse.cluster.haproxy import find_haproxy, read_stats
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.status import ClusterStatus
from gatehouse.cluster.upgrade import Step as UpgradeStep
from gatehouse.cluster.upgrade import migrate_databases, rolling_upgrade
from gatehouse.storage.engine import Database
from gatehouse.storage.migrate import TEST_MIGRATIONS_ENV
from gatehouse.storage.migration_rules import check_revision, steps
from tests.support.cluster import free_topology
from tests.support.gateway import add_user
from tests.support.load import Record, login, login_loop, steady_load
from tests.support.postgres import missing, require_bindir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]

USER, PASSWORD = "chaos", "a long chaos passphrase"
SESSIONS = 50
RATE = 250.0  # requests per second, all sessions together
#: A sign-in may wait this long: a password check and a session write that each wait for a
#: new database primary (database.failover_wait, 20 s), as the Access Point's portal relay does.
SIGN_IN_TIMEOUT = 60.0


@dataclass
class Lab:
    cluster: Cluster
    host: str
    port: int
    cookies: list[str]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if find_haproxy() is None:
        missing("HAProxy is not installed (apt-get install haproxy)")
    require_bindir()
    root = Path(tempfile.mkdtemp(prefix="gh-chaos-"))
    root.chmod(0o755)  # the postgres user traverses it
    home = root / "home"
    cluster = Cluster.prepare(home, free_topology(root / "topology.yaml"), fsync=False)
    try:
        cluster.up()
        add_user(home, USER, PASSWORD)
        host, _, port = cluster.url.removeprefix("http://").rstrip("/").rpartition(":")

        async def sign_in_all() -> list[str]:
            limit = asyncio.Semaphore(4)

            async def one() -> str:
                async with limit:
                    return await login(host, int(port), USER, PASSWORD)

            return await asyncio.gather(*(one() for _ in range(SESSIONS)))

        cookies = asyncio.run(sign_in_all())
        assert len(set(cookies)) == SESSIONS
        yield Lab(cluster, host, int(port), cookies)
    finally:
        cluster.down()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def load(
    lab: Lab,
    seconds: float,
    logins: Record | None = None,
    login_timeout: float = 10.0,
    stop: threading.Event | None = None,
) -> Iterator[Record]:
    """Steady load (and sign-ins when ``logins`` is given) on a thread for ``seconds``, or
    until ``stop`` is set."""
    record = Record()

    async def main() -> None:
        jobs = [steady_load(lab.host, lab.port, lab.cookies, RATE, seconds, record, stop=stop)]
        if logins is not None:
            jobs.append(
                login_loop(
                    lab.host,
                    lab.port,
                    USER,
                    PASSWORD,
                    seconds,
                    logins,
                    timeout=login_timeout,
                    stop=stop,
                )
            )
        await asyncio.gather(*jobs)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        yield record
    finally:
        thread.join(seconds + 30 + login_timeout)
        assert not thread.is_alive(), "the load did not stop"


def at(start: float, offset: float) -> None:
    """Sleep until ``offset`` seconds after ``start``."""
    time.sleep(max(0.0, start + offset - time.monotonic()))


def wait_status(lab: Lab, check: Callable[[ClusterStatus], bool], what: str) -> ClusterStatus:
    deadline = time.monotonic() + 30
    while True:
        status = lab.cluster.status()
        if check(status):
            return status
        assert time.monotonic() < deadline, f"not within 30s: {what}\n{status}"
        time.sleep(0.25)


def enough(record: Record, seconds: float) -> None:
    """The load really was steady: at least 200 requests/s on average."""
    assert len(record.outcomes) >= 200 * seconds * 0.9, record.summary()


def test_killing_the_primary_policy_service_fails_no_request(lab: Lab) -> None:
    start = time.monotonic()
    with load(lab, 10) as record:
        at(start, 2)
        lab.cluster.kill("ps1")  # ap1's primary Policy service
        at(start, 5)
        lab.cluster.start("ps1")
    assert record.failures() == [], record.summary()
    enough(record, 10)
    # Fail-back: ap1's decisions go to ps1 again once it passed its probes.
    wait_status(lab, lambda s: s.healthy and s["ap1"].prefers == "ps1", "ap1 back on ps1")


def test_killing_an_access_point_fails_no_request(lab: Lab) -> None:
    def served_by_ap1() -> int:
        stats = read_stats(lab.cluster.stats_socket)
        return next(int(row["stot"]) for (_, server), row in stats.items() if server == "ap1")

    done = threading.Event()  # the load ends once ap1 has served again (at most 40 s)
    start = time.monotonic()
    with load(lab, 40, stop=done) as record:
        at(start, 2)
        lab.cluster.kill("ap1")  # HAProxy retries its requests on ap2 (redispatch)
        at(start, 5)
        lab.cluster.start("ap1")
        wait_status(lab, lambda s: "UP" in s["ap1"].detail, "HAProxy sees ap1 up")
        before = served_by_ap1()
        # Under the same load, HAProxy gives ap1 requests again: on a slow machine its
        # restart and health checks may have taken most of the seconds there were.
        deadline = time.monotonic() + 15
        while served_by_ap1() <= before and time.monotonic() < deadline:
            time.sleep(0.25)
        came_back = served_by_ap1() - before
        at(start, 10)
        done.set()
    assert came_back > 0, "traffic came back to ap1"
    assert record.failures() == [], record.summary()
    enough(record, 10)


def test_killing_an_authentication_service_during_sign_ins_fails_none(lab: Lab) -> None:
    logins = Record()
    start = time.monotonic()
    with load(lab, 10, logins) as record:
        at(start, 2)
        lab.cluster.kill("auth1")  # ps1's preferred Authentication service
        at(start, 5)
        lab.cluster.start("auth1")
    assert logins.failures() == [], logins.summary()
    assert len(logins.outcomes) >= 10, logins.summary()
    assert record.failures() == [], record.summary()
    wait_status(lab, lambda s: s.healthy and s["ps1"].prefers == "auth1", "ps1 back on auth1")


def test_killing_the_distribution_services_during_sign_ins_fails_none(lab: Lab) -> None:
    logins = Record()
    start = time.monotonic()
    with load(lab, 10, logins) as record:
        at(start, 2)
        lab.cluster.kill("dist1")  # auth1's preferred Distribution service
        status = lab.cluster.status()
        assert not status["dist1"].healthy
        assert status["auth1"].prefers == "dist2", status["auth1"]
        at(start, 3.5)
        lab.cluster.kill("dist2")  # no Distribution service at all
        at(start, 6)
        lab.cluster.start("dist1", wait=False)
        lab.cluster.start("dist2")
    assert logins.failures() == [], logins.summary()
    assert len(logins.outcomes) >= 10, logins.summary()
    assert record.failures() == [], record.summary()
    status = wait_status(lab, lambda s: s.healthy, "both Distribution services back")
    assert status["auth1"].prefers == "dist1", status["auth1"]


def test_killing_the_administration_service_fails_no_request(lab: Lab) -> None:
    start = time.monotonic()
    with load(lab, 8) as record:
        at(start, 2)
        lab.cluster.kill("admin")
        at(start, 5)
        lab.cluster.start("admin")
    assert record.failures() == [], record.summary()
    status = wait_status(lab, lambda s: s.healthy, "every service healthy with Admin back")
    assert len(set(status.versions().values())) == 1, status


def test_losing_the_database_primary_fails_no_request_and_no_sign_in(lab: Lab) -> None:
    """SIGKILL of the PostgreSQL primary under load and sign-ins: the standby is promoted and
    nothing fails. Decisions on the signed-in sessions are answered from the Policy services'
    last reads while the database is away; sign-ins wait for the new primary (up to
    ``database.failover_wait``) instead of failing."""
    # Sessions acknowledged just before the crash must survive it (synchronous replication).
    fresh = asyncio.run(login(lab.host, lab.port, USER, PASSWORD))
    logins = Record()
    start = time.monotonic()
    with load(lab, 25, logins, login_timeout=SIGN_IN_TIMEOUT) as record:
        at(start, 3)
        killed = time.monotonic()
        lab.cluster.failover_db(kill=True)
        promoted = time.monotonic() - killed
    during = [o for o in logins.outcomes if o.at + o.latency >= killed]
    longest = max((o.latency for o in during), default=0.0)
    print(
        f"database failover: new primary takes writes {promoted:.1f}s after the kill; "
        f"{len(record.outcomes)} requests, {len(record.failures())} failed, "
        f"{sum(o.waited for o in record.outcomes)} via the portal's wait page; "
        f"{len(logins.outcomes)} sign-ins, {len(logins.failures())} failed, "
        f"the longest {longest:.1f}s"
    )
    assert record.failures() == [], record.summary(killed)
    assert logins.failures() == [], logins.summary(killed)
    enough(record, 25)
    # Sign-ins went on through the switch: some were under way or started while it lasted.
    assert any(killed <= o.at + o.latency and o.at <= killed + promoted for o in logins.outcomes)
    # The services did lose their database and came back to the promoted standby.
    for ps in ("ps1", "ps2"):
        log = lab.cluster.log_path(ps).read_text(errors="replace")
        assert "listening for revocations again" in log, f"{ps} never noticed the crash"
    # Every session, the fresh one included, is still valid: nobody is logged out.
    lab.cookies.append(fresh)
    with load(lab, 3) as after:
        pass
    assert after.failures() == [], after.summary()
    assert {o.user for o in after.outcomes} == set(range(len(lab.cookies)))
    # Admin's one-Admin lock went with the old primary's session: it took the lock again on
    # the new primary and kept running. Then the old primary comes back as the new standby.
    admin_log = lab.cluster.log_path("admin")
    deadline = time.monotonic() + 30
    while "took the Administration lock again" not in admin_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "Admin did not take its lock again"
        time.sleep(0.2)
    assert lab.cluster.status()["admin"].state == "running"
    assert lab.cluster.rejoin_db() in ("rewound", "rebuilt")
    wait_status(lab, lambda s: s.healthy, "every member healthy after the rejoin")


NEXT_RELEASE_MIGRATION = '''"""The next release's migration (expand): a column the code ignores.

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("upgrade_note", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("sessions", "upgrade_note")
'''


def next_release(directory: Path) -> tuple[Path, str]:
    """A directory with one Alembic revision on top of the session branch's head."""
    known = steps()
    head = next(
        s.revision
        for s in known
        if s.revision.startswith("session_")
        and not any(o.down_revision == s.revision for o in known)
    )
    directory.mkdir()
    revision = "session_9101"
    text = NEXT_RELEASE_MIGRATION.format(revision=revision, down=head)
    (directory / "9101_next_release.py").write_text(text)
    step = next(s for s in steps((directory,)) if s.revision == revision)
    assert check_revision(step, (directory,)) == []  # an online migration
    return directory, revision


def test_a_rolling_upgrade_fails_nothing_and_logs_nobody_out(lab: Lab, tmp_path: Path) -> None:
    """Every service replaced in turn under load and sign-ins (APs drained in HAProxy
    first), with an expand migration in the middle: the previous release's Policy and
    Authentication services run on the new schema until they are replaced."""
    migrations, revision = next_release(tmp_path / "next-release")
    cluster = lab.cluster
    # From now on every service starts as the "new release": the same code plus the migration.
    cluster.environment[TEST_MIGRATIONS_ENV] = str(migrations)

    def migrate() -> None:
        previous = os.environ.get(TEST_MIGRATIONS_ENV)
        os.environ[TEST_MIGRATIONS_ENV] = str(migrations)
        try:
            migrate_databases(cluster)
        finally:
            if previous is None:
                del os.environ[TEST_MIGRATIONS_ENV]
            else:
                os.environ[TEST_MIGRATIONS_ENV] = previous

    logins = Record()
    steps_done: list[UpgradeStep] = []
    done = threading.Event()  # the load ends with the upgrade
    # The load runs until the upgrade is over (at most 10 minutes).
    with load(lab, 600, logins, login_timeout=SIGN_IN_TIMEOUT, stop=done) as record:
        started = time.monotonic()
        try:
            steps_done = rolling_upgrade(cluster, migrate=migrate)
        finally:
            took = time.monotonic() - started
            time.sleep(1)  # requests to the last replaced service
            done.set()
    summary = ", ".join(f"{s.member} {s.seconds:.1f}s" for s in steps_done)
    print(
        f"rolling upgrade in {took:.0f}s ({summary}); {len(record.outcomes)} requests, "
        f"{len(record.failures())} failed; {len(logins.outcomes)} sign-ins, "
        f"{len(logins.failures())} failed"
    )
    assert record.failures() == [], f"{record.summary()}; {during_steps(record, steps_done)}"
    assert logins.failures() == [], f"{logins.summary()}; {during_steps(logins, steps_done)}"
    enough(record, took)
    replaced = {s.member for s in steps_done}
    assert replaced >= {"ap1", "ap2", "ps1", "ps2", "auth1", "auth2", "admin", "database"}
    # The migration is there and the new release runs on it.
    local = cluster.topology.databases.local
    assert local is not None
    policy_url = db_access.role_url(cluster.home, local, db_access.POLICY_ROLE)
    assert asyncio.run(session_revision(policy_url)) == revision
    # Nobody was logged out: every session still opens the protected page.
    with load(lab, 3) as after:
        pass
    assert after.failures() == [], after.summary()
    assert {o.user for o in after.outcomes} == set(range(len(lab.cookies)))


def during_steps(record: Record, done: list[UpgradeStep]) -> str:
    """Which step each failure happened in (for the assertion message)."""
    where = []
    for failure in record.failures():
        step = next((s for s in reversed(done) if s.started <= failure.at), None)
        name = f"{step.member} {step.action}" if step else "before the first step"
        where.append(f"{failure.status or failure.error} after {failure.latency:.1f}s in {name}")
    return "; ".join(where)


async def session_revision(url: str) -> str:
    database = Database(url)
    try:
        async with database.connect() as conn:
            rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        return next(str(r[0]) for r in rows if str(r[0]).startswith("session_"))
    finally:
        await database.dispose()

"""Exactly one Admin per database, shown with real processes on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from gatehouse.administration.errors import AdminAlreadyRunning
from gatehouse.administration.lock import acquire_admin_lock, admin_lock, lock_file_path
from gatehouse.storage.engine import Database
from tests.support.postgres import PostgresCluster

HOLDER = """
import asyncio, sys
from gatehouse.administration.errors import AdminAlreadyRunning
from gatehouse.administration.lock import acquire_admin_lock

async def main() -> int:
    try:
        lock = await acquire_admin_lock(sys.argv[1])
    except AdminAlreadyRunning as error:
        print(f"refused: {error}", flush=True)
        return 3
    print("locked", flush=True)
    sys.stdin.readline()  # hold the lock until told to stop
    print("held" if await lock.still_held() else "lost", flush=True)
    await lock.release()
    return 0

sys.exit(asyncio.run(main()))
"""
HOST = socket.gethostname()


class Holder:
    """A separate process that takes the lock and holds it until its stdin says stop."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline().strip()

    def stop(self) -> tuple[int, str]:
        out, err = self.proc.communicate("stop\n", timeout=30)
        assert not err, err
        return self.proc.returncode, out.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.kill()


def start(holders: list[Holder], url: str) -> Holder:
    holder = Holder(url)
    holders.append(holder)
    return holder


def acquire_and_release(url: str) -> None:
    async def go() -> None:
        async with admin_lock(url) as lock:
            assert await lock.still_held()

    asyncio.run(go())


def eventually_acquire(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            acquire_and_release(url)
            return
        except AdminAlreadyRunning:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_second_admin_is_refused_and_told_who_runs(db_url: str, holders: list[Holder]) -> None:
    first = start(holders, db_url)
    assert first.first_line == "locked"
    second = start(holders, db_url)
    assert second.first_line.startswith("refused: another Administration service is running")
    assert f"pid={first.proc.pid}" in second.first_line or (
        f"pid {first.proc.pid} on host {HOST}" in second.first_line
    )
    assert second.proc.wait(timeout=30) == 3
    with pytest.raises(AdminAlreadyRunning) as info:
        acquire_and_release(db_url)
    message = str(info.value)
    assert str(first.proc.pid) in message
    assert HOST[:20] in message
    assert "exactly one Administration service per installation" in message
    assert first.stop() == (0, "held")
    acquire_and_release(db_url)  # free again once the first one stopped


def test_the_lock_dies_with_its_holder(db_url: str, holders: list[Holder]) -> None:
    first = start(holders, db_url)
    assert first.first_line == "locked"
    first.kill()
    eventually_acquire(db_url)
    third = start(holders, db_url)
    assert third.first_line == "locked"
    assert third.stop() == (0, "held")


def test_sqlite_lock_file_names_the_holder(tmp_path: Path, holders: list[Holder]) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}"
    path = lock_file_path(tmp_path / "gatehouse.db")
    assert path == tmp_path / "gatehouse.db.admin.lock"
    holder = start(holders, url)
    assert holder.first_line == "locked"
    info = json.loads(path.read_text())
    assert (info["pid"], info["host"]) == (holder.proc.pid, HOST)
    assert info["since"].endswith("Z")
    with pytest.raises(AdminAlreadyRunning) as refused:
        acquire_and_release(url)
    assert str(refused.value).startswith(
        f"another Administration service is running on this database: pid {holder.proc.pid} "
        f"on host {HOST}, since {info['since']} (lock file {path})."
    )
    holder.stop()
    assert path.exists()  # kept: deleting it would let two processes lock two files


def test_sqlite_lock_is_lost_when_its_file_is_replaced(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"

    async def go() -> tuple[bool, bool]:
        lock = await acquire_admin_lock(url)
        before = await lock.still_held()
        path = lock_file_path(tmp_path / "g.db")
        path.unlink()
        path.write_text("")
        after = await lock.still_held()
        await lock.release()
        return before, after

    assert asyncio.run(go()) == (True, False)


def test_sqlite_databases_are_locked_one_by_one(tmp_path: Path, holders: list[Holder]) -> None:
    one = start(holders, f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    assert one.first_line == "locked"
    acquire_and_release(f"sqlite+aiosqlite:///{tmp_path / 'two.db'}")


def test_postgres_holder_is_named_by_application_name(
    postgres_cluster: PostgresCluster, holders: list[Holder]
) -> None:
    database = postgres_cluster.create_database()
    url = postgres_cluster.url(database)
    holder = start(holders, url)
    assert holder.first_line == "locked"
    names = postgres_cluster.sql("SELECT application_name FROM pg_stat_activity", database)
    assert f"gatehouse-admin pid={holder.proc.pid} host=" in names
    with pytest.raises(AdminAlreadyRunning, match=rf"gatehouse-admin pid={holder.proc.pid} host="):
        acquire_and_release(url)
    # Another database of the same cluster is another installation.
    acquire_and_release(postgres_cluster.url(postgres_cluster.create_database()))


def test_postgres_lock_is_lost_with_its_connection(postgres_url: str) -> None:
    """A database restart or failover ends the session and with it the lock: the holder
    must notice (still_held) and stop, since another Admin may now take over."""

    async def terminate_admin_backends() -> None:
        db = Database(postgres_url)
        try:
            async with db.connect() as conn:
                await conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name LIKE 'gatehouse-admin%'"
                    )
                )
        finally:
            await db.dispose()

    async def go() -> tuple[bool, bool]:
        lock = await acquire_admin_lock(postgres_url)
        before = await lock.still_held()
        await terminate_admin_backends()
        after = await lock.still_held()
        await lock.release()
        return before, after

    assert asyncio.run(go()) == (True, False)
    acquire_and_release(postgres_url)


def test_pid_in_messages_is_this_process_for_in_process_holders(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"

    async def go() -> str:
        async with admin_lock(url):
            try:
                await acquire_admin_lock(url)
            except AdminAlreadyRunning as error:
                return str(error)
        return ""

    assert f"pid {os.getpid()} on host {HOST}" in asyncio.run(go())

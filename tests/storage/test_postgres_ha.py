"""The local PostgreSQL pair: synchronous replication, failover and rejoin, clear errors."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from gatehouse.storage.engine import Database
from gatehouse.storage.postgres_ha import binaries
from gatehouse.storage.postgres_ha.errors import ReplicationError
from gatehouse.storage.postgres_ha.node import PgNode
from gatehouse.storage.postgres_ha.pair import Pair
from tests.support.postgres import postgres_pair

__all__ = ["postgres_pair"]


# -- finding the binaries, clear errors (no server needed) ---------------------------------------


def test_bindir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for tool in ("initdb", "pg_ctl"):
        (tmp_path / tool).touch()
    monkeypatch.setenv(binaries.BINDIR_ENV, str(tmp_path))
    assert binaries.find_bindir() == tmp_path


def test_no_postgres_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(binaries.BINDIR_ENV, raising=False)
    monkeypatch.setattr(binaries, "DEBIAN_ROOT", tmp_path / "none")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert binaries.find_bindir() is None
    with pytest.raises(ReplicationError, match=r"not found: install PostgreSQL"):
        binaries.require_bindir()


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    node = PgNode("pg1", tmp_path / "pg1", 5432, bindir=bindir)
    with pytest.raises(ReplicationError, match=r"initdb not found in .*/bin"):
        node.initdb()


@pytest.mark.skipif(os.geteuid() != 0, reason="the postgres user is only used as root")
def test_a_directory_the_postgres_user_cannot_reach(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)  # root's private directory
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "initdb").touch()
    node = PgNode("pg1", tmp_path / "private" / "pg1", 5432, bindir=bindir)
    with pytest.raises(ReplicationError, match=r"'postgres' user cannot write to .*/pg1"):
        node.initdb()


def test_node_names_must_be_slot_names(tmp_path: Path) -> None:
    with pytest.raises(ReplicationError, match="node name"):
        PgNode("Primary-1", tmp_path, 5432)


# -- a primary and its synchronous standby ------------------------------------------------------


@pytest.mark.slow
def test_a_commit_is_on_the_standby_when_it_returns(postgres_pair: Pair) -> None:
    primary, standby = postgres_pair.nodes
    status = primary.status()
    assert (status.role, standby.status().role) == ("primary", "standby")
    assert [(r.application_name, r.state, r.sync_state) for r in status.replicas] == [
        ("pg2", "streaming", "sync")
    ]
    assert standby.status().upstream_port == primary.port
    assert primary.sql("SHOW synchronous_standby_names") == [["pg2"]]
    primary.sql("CREATE TABLE t (n integer)")
    for n in range(20):
        primary.sql(f"INSERT INTO t VALUES ({n})")
        # Asked right after the commit returned: the standby already shows it.
        assert standby.sql("SELECT count(*) FROM t") == [[str(n + 1)]]


@pytest.mark.slow
def test_a_commit_waits_while_the_standby_is_down(postgres_pair: Pair) -> None:
    """Acknowledged means on both servers: without the standby, commits wait for it."""
    primary, standby = postgres_pair.nodes
    primary.sql("CREATE TABLE t (n integer)")

    async def go() -> None:
        database = Database(primary.url("postgres"))

        async def write() -> None:
            async with database.connect() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))

        async def count() -> int:
            async with database.connect() as conn:
                return int(await conn.scalar(text("SELECT count(*) FROM t")) or 0)

        try:
            await asyncio.to_thread(standby.stop)
            commit = asyncio.create_task(write())
            done, _ = await asyncio.wait({commit}, timeout=1.0)
            assert not done, "the commit returned without the synchronous standby"
            assert await count() == 0  # not acknowledged, not visible to anyone either
            await asyncio.to_thread(standby.start)
            await asyncio.wait_for(commit, 30)
            assert await count() == 1
        finally:
            await database.dispose()

    asyncio.run(go())
    assert standby.sql("SELECT count(*) FROM t") == [["1"]]


@pytest.mark.slow
def test_a_failed_start_shows_the_server_log(postgres_pair: Pair) -> None:
    primary, standby = postgres_pair.nodes
    standby.stop()
    standby.settings = {"work_mem": "plenty"}
    standby.write_config(upstream=primary)
    with pytest.raises(ReplicationError) as info:
        standby.start()
    message = str(info.value)
    assert "'pg2'" in message
    assert "start failed" in message
    assert 'invalid value for parameter "work_mem"' in message


# -- failover and rejoin ------------------------------------------------------------------------


@pytest.mark.slow
def test_failover_then_rejoin_both_ways(postgres_pair: Pair) -> None:
    first, second = postgres_pair.nodes
    first.sql("CREATE TABLE t (n integer)")
    first.sql("INSERT INTO t VALUES (1)")

    first.kill()
    assert not first.running()
    assert postgres_pair.failover() is second
    assert second.status().role == "primary"
    second.sql("INSERT INTO t VALUES (2)")  # no sync standby now: does not wait
    with pytest.raises(ReplicationError, match="expected one primary"):
        postgres_pair.start()  # the killed primary must not come back as one

    assert postgres_pair.rejoin() == "rewound"
    assert [(r.application_name, r.sync_state) for r in second.status().replicas] == [
        ("pg1", "sync")
    ]
    assert first.status().upstream_port == second.port
    second.sql("INSERT INTO t VALUES (3)")
    assert first.sql("SELECT n FROM t ORDER BY n") == [["1"], ["2"], ["3"]]

    # Back again, this time with the primary still running (a switchover).
    assert postgres_pair.failover() is first
    first.sql("INSERT INTO t VALUES (4)")
    assert postgres_pair.rejoin() == "rewound"
    first.sql("INSERT INTO t VALUES (5)")
    assert second.sql("SELECT n FROM t ORDER BY n") == [[str(n)] for n in range(1, 6)]

    postgres_pair.stop()
    postgres_pair.start()
    assert postgres_pair.node_with_role("primary") is first
    assert [r.sync_state for r in first.status().replicas] == ["sync"]


@pytest.mark.slow
def test_rejoin_rebuilds_what_pg_rewind_cannot_rewind(postgres_pair: Pair) -> None:
    first, second = postgres_pair.nodes
    first.sql("CREATE TABLE t (n integer)")
    first.kill()
    postgres_pair.failover()
    second.sql("INSERT INTO t VALUES (1)")
    (first.datadir / "global" / "pg_control").write_bytes(b"\0" * 8192)
    assert postgres_pair.rejoin() == "rebuilt"
    assert [r.sync_state for r in second.status().replicas] == ["sync"]
    assert first.sql("SELECT n FROM t") == [["1"]]

"""Throwaway PostgreSQL clusters for tests: initdb + pg_ctl on a free loopback port.

One cluster per test session (shared by every test directory that uses these fixtures), one
fresh database per test. Without PostgreSQL installed the tests that need it are skipped,
unless ``GATEHOUSE_REQUIRE_ALL=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatehouse.storage.postgres_ha.binaries import find_bindir
from gatehouse.storage.postgres_ha.pair import Pair
from tests.support.processes import free_port

__all__ = [
    "PostgresCluster",
    "find_bindir",
    "missing",
    "postgres_cluster",
    "postgres_pair",
    "postgres_url",
    "require_bindir",
]

SUPERUSER = "gatehouse"
# Durability is pointless for a throwaway cluster; these make it start and write fast.
FAST_SETTINGS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def missing(reason: str) -> None:
    """Skip, or fail when every component is required (CI)."""
    if os.environ.get("GATEHOUSE_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (GATEHOUSE_REQUIRE_ALL=1)", pytrace=False)
    pytest.skip(reason)


def require_bindir() -> Path:
    """The PostgreSQL binaries' directory; skips (or fails in CI) when there is none."""
    bindir = find_bindir()
    if bindir is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl) not found; apt install postgresql")
    assert bindir is not None
    return bindir


class PostgresCluster:
    """A running cluster in a temporary directory; databases are created on demand."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="gatehouse-pg-"))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self._names = itertools.count(1)
        self._as_root = os.geteuid() == 0
        self.sockdir.mkdir()
        if self._as_root:
            # PostgreSQL refuses to run as root: hand the directory to the postgres user.
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockdir, "postgres", "postgres")
            self.root.chmod(0o755)
        self._server(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        self.start()

    def _server(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise RuntimeError(f"{tool} failed:\n{done.stdout}\n{done.stderr}\n{log}")

    def start(self) -> None:
        options = (
            f"-c listen_addresses={self.host} -p {self.port} -k {self.sockdir} {FAST_SETTINGS}"
        )
        self._server(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-o", options, "start"
        )

    def stop(self) -> None:
        self._server("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def psql(self, database: str = "postgres") -> list[str]:
        """The psql command line for ``database`` (add ``-c STATEMENT`` arguments)."""
        return [
            str(self.bindir / "psql"),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
        ]

    def sql(self, statement: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [*self.psql(database), "-c", statement],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()

    def create_database(self) -> str:
        name = f"test_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}")
        return name

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def destroy(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


_shared: PostgresCluster | None = None
_users = 0


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster (skips when PostgreSQL is not installed)."""
    global _shared, _users
    bindir = require_bindir()
    if _shared is None:
        _shared = PostgresCluster(bindir)
    _users += 1
    try:
        yield _shared
    finally:
        _users -= 1
        if _users == 0:
            _shared.destroy()
            _shared = None


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """An asyncpg URL of a fresh, empty database."""
    return postgres_cluster.url(postgres_cluster.create_database())


@pytest.fixture
def postgres_pair() -> Iterator[Pair]:
    """A throwaway primary + synchronous streaming standby (nodes ``pg1``, ``pg2``), running.

    ``pg1`` starts as the primary. Both nodes are stopped and their files removed afterwards.
    """
    bindir = require_bindir()
    root = Path(tempfile.mkdtemp(prefix="gatehouse-pair-"))
    root.chmod(0o755)  # the postgres user runs the servers when we are root
    pair = Pair(root, (free_port(), free_port()), bindir=bindir, fsync=False)
    try:
        pair.create()
        yield pair
    finally:
        for node in pair.nodes:
            try:
                node.stop("immediate")
            except Exception:
                node.kill()
        shutil.rmtree(root, ignore_errors=True)

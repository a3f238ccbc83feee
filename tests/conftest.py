"""Shared fixtures: real processes on loopback with free ports."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from gatehouse import compiled
from gatehouse.cluster.topology_patroni import QUIET_PORTS_ENV
from tests.support.processes import Service, free_port, quiet_block, write_config

StartAP = Callable[..., Service]

# The request path is compiled (setup.py): a module edited since would be tested as it was.
if _stale := compiled.stale():
    pytest.exit(
        f"{', '.join(_stale)} changed after it was compiled; run `make install` (or `make test`)",
        returncode=4,
    )

# Each xdist worker picks cluster ports from a block of its own (see tests.support.processes);
# set here, before any test runs, so the cluster commands the tests start inherit it.
os.environ[QUIET_PORTS_ENV] = quiet_block()

# Property tests check correctness, never speed (that is for `make bench`): no per-example
# deadline and no "input generation is slow" health check, which a loaded CI machine trips
# (a 1.8 s stall while drawing one JSON value failed test_canonical once). Other health
# checks stay on; a test may still set its own settings on top.
settings.register_profile("gatehouse", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gatehouse")


#: The test files that take longest, longest first (seconds per file, setup and teardown
#: included, from `make test PYTEST_ARGS=--durations=0` on 2026-12-06: 195 down to 43).
#: `make test` hands whole files to its workers (``--dist loadfile``) in collection order
#: (``--no-loadscope-reorder``; xdist's own order, by number of tests, sent these few-test
#: files last, where one of them could keep a worker busy after the others had finished).
#: With these first, the workers finish within a minute of each other: 3,036 s of tests on
#: 3 workers ran in 1,049 s.
SLOWEST_FILES = (
    "tests/chaos/test_chaos.py",
    "tests/test_sessions_follow_account.py",
    "tests/test_readme_tour.py",
    "tests/cluster/test_patroni.py",
    "tests/cluster/test_cluster_tls.py",
    "tests/authentication/test_codes_process.py",
    "tests/chaos/test_otp_failover.py",
    "tests/cluster/test_cluster_up.py",
    "tests/oidc/test_cluster_failover.py",
    "tests/test_node.py",
    "tests/test_protected.py",
    "tests/test_owned_access_point.py",
    "tests/policy/test_managed.py",
    "tests/authentication/test_service.py",
    "tests/internal/test_config_agent.py",
    "tests/distribution/test_service.py",
    "tests/administration/test_api.py",
    "tests/cluster/test_db_access.py",
    "tests/policy/test_service.py",
    "tests/test_sessions_follow_tokens.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first (see :data:`SLOWEST_FILES`); the order within a file, and of
    the other files, stays as collected."""
    rank = {path: index for index, path in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


@pytest.fixture(scope="module", autouse=True)
def _collect_garbage_per_file() -> Iterator[None]:
    """Collects garbage as each test file ends, so an unclosed socket or file is reported
    (``ResourceWarning``, an error here) by the file that leaked it, not by whichever file
    the same xdist worker runs next when the collector happens to run."""
    yield
    gc.collect()


@pytest.fixture
def demo_backend(tmp_path: Path) -> Iterator[Service]:
    """The demo whoami backend on a free port."""
    port = free_port()
    svc = Service(
        ["demo-backend", "--listen", f"127.0.0.1:{port}"],
        tmp_path / "backend.log",
        "127.0.0.1",
        port,
    )
    try:
        yield svc.wait_ready()
    finally:
        svc.stop()


@pytest.fixture
def start_ap(tmp_path: Path) -> Iterator[StartAP]:
    """Factory: write a config, start ``gatehouse access-point``, wait until it listens."""
    started: list[Service] = []

    def start(
        resources: list[dict[str, Any]],
        settings: dict[str, Any] | None = None,
        workers: int = 1,
        name: str = "ap",
        status: bool = False,
    ) -> Service:
        """``status``: with a status listener on a free port (``svc.status_port``)."""
        port = free_port()
        status_port = free_port() if status else None
        more = {} if status_port is None else {"status_listen": f"127.0.0.1:{status_port}"}
        config = {
            "access_point": {"listen": f"127.0.0.1:{port}", **more, **(settings or {})},
            "resources": resources,
        }
        path = write_config(tmp_path / f"{name}.yaml", config)
        svc = Service(
            ["access-point", "--config", str(path), "--workers", str(workers)],
            tmp_path / f"{name}.log",
            "127.0.0.1",
            port,
        )
        svc.config_path = path  # type: ignore[attr-defined]
        svc.status_port = status_port  # type: ignore[attr-defined]
        started.append(svc)
        return svc.wait_ready()

    yield start
    for svc in started:
        svc.stop()

"""Shared fixtures: real processes on loopback with free ports."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.support.processes import Service, free_port, write_config

StartAP = Callable[..., Service]

# Property tests check correctness, never speed (that is for `make bench`): no per-example
# deadline and no "input generation is slow" health check, which a loaded CI machine trips
# (a 1.8 s stall while drawing one JSON value failed test_canonical once). Other health
# checks stay on; a test may still set its own settings on top.
settings.register_profile("gatehouse", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gatehouse")


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

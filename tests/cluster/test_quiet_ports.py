"""quiet_free_ports: free ports outside the ephemeral range, from GATEHOUSE_QUIET_PORTS's
block when it is set (each parallel test worker has one: tests/conftest.py)."""

from __future__ import annotations

import socket

import pytest

from gatehouse.cluster.topology_patroni import QUIET_PORTS_ENV, quiet_free_ports
from tests.support.processes import quiet_block


def test_ports_come_from_the_block_free_and_distinct(monkeypatch: pytest.MonkeyPatch) -> None:
    block = quiet_block()
    monkeypatch.setenv(QUIET_PORTS_ENV, block)
    first, last = (int(p) for p in block.split("-"))
    with socket.socket() as held:
        taken = quiet_free_ports(1)[0]
        held.bind(("127.0.0.1", taken))  # a port of the block that is taken is never handed out
        ports = quiet_free_ports(64)
    assert len(set(ports)) == 64
    assert all(first <= port <= last for port in ports)
    assert taken not in ports


def test_a_block_of_one_free_port(monkeypatch: pytest.MonkeyPatch) -> None:
    port = quiet_free_ports(1)[0]
    monkeypatch.setenv(QUIET_PORTS_ENV, f"{port}-{port}")
    assert quiet_free_ports(1) == [port]
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        with pytest.raises(OSError, match="fewer than 1 free ports"):
            quiet_free_ports(1)


@pytest.mark.parametrize("value", ["junk", "30000", "30000-20000", "80-90", "60000-70000"])
def test_a_bad_block_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(QUIET_PORTS_ENV, value)
    with pytest.raises(OSError, match=f"{QUIET_PORTS_ENV}='{value}': not a port range"):
        quiet_free_ports(1)

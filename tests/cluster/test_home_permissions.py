"""A local cluster's home: owner-only, traversable by PostgreSQL's user when run as root."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from gatehouse.cluster import home as cluster_home
from gatehouse.cluster.home import LOG_DIR, RUN_DIR, write_home
from gatehouse.cluster.topology import load_topology
from gatehouse.node import STATE_DIR
from gatehouse.storage.home import prepare_home

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ha-cluster.yaml"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write(home: Path) -> None:
    write_home(home, load_topology(EXAMPLE), stats_socket=home / "s.sock", source="t.yaml")


@pytest.mark.parametrize(("euid", "expected"), [(1000, 0o700), (0, 0o711)])
def test_the_home_and_its_directories_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, euid: int, expected: int
) -> None:
    monkeypatch.setattr(cluster_home.os, "geteuid", lambda: euid)
    home = tmp_path / "cluster"
    write(home)
    assert mode(home) == expected
    for directory in (RUN_DIR, LOG_DIR, STATE_DIR):
        assert mode(home / directory) == 0o700, directory


def test_an_existing_readable_home_is_tightened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cluster_home.os, "geteuid", lambda: 0)
    home = tmp_path / "cluster"
    home.mkdir()
    home.chmod(0o755)
    with caplog.at_level(logging.WARNING, "gatehouse.storage"):
        write(home)
    assert mode(home) == 0o711
    assert f"tightened the permissions of {home} from 0755 to 0711" in caplog.text


def test_the_services_keep_a_traversable_home(tmp_path: Path) -> None:
    # The cluster's services and `gatehouse users --home` prepare the same home: they must
    # not take away what PostgreSQL's user needs to reach its data.
    home = tmp_path / "cluster"
    home.mkdir()
    home.chmod(0o711)
    prepare_home(home)
    assert mode(home) == 0o711

"""``gatehouse haproxy-config TOPOLOGY [--output FILE]``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatehouse.cli import build_parser, main
from gatehouse.cluster.haproxy import haproxy_config
from gatehouse.cluster.topology import load_topology
from tests.cluster.support import topology_data

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "ha-cluster.yaml")


def test_the_command_is_registered() -> None:
    assert "haproxy-config" in build_parser().format_help()


def test_writes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "haproxy.cfg"
    code = main(["haproxy-config", EXAMPLE, "--output", str(output), "--stats-socket", "/run/x"])
    assert code == 0
    expected = haproxy_config(load_topology(EXAMPLE), stats_socket="/run/x", source=EXAMPLE)
    assert output.read_text() == expected
    assert output.stat().st_mode & 0o777 == 0o644
    assert capsys.readouterr().out == ""


def test_prints_without_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["haproxy-config", EXAMPLE]) == 0
    assert capsys.readouterr().out == haproxy_config(load_topology(EXAMPLE), source=EXAMPLE)


def test_an_invalid_topology_names_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = topology_data()
    data["databases"]["user_db"] = "sqlite+aiosqlite:///gatehouse.db"
    data["access_points"][1]["policy_services"] = ["ps9"]
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    output = tmp_path / "haproxy.cfg"
    assert main(["haproxy-config", str(path), "-o", str(output)]) == 2
    assert capsys.readouterr().err == (
        f"gatehouse: {path}: databases.user_db: an HA topology needs PostgreSQL: "
        "SQLite lives on one node\n"
    )
    assert not output.exists()
    data["databases"]["user_db"] = "postgresql+asyncpg://db1/gatehouse"
    path.write_text(yaml.safe_dump(data))
    assert main(["haproxy-config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"gatehouse: {path}: access_points[1].policy_services[0]: no policy service 'ps9'\n"
    )


def test_an_unwritable_output_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "missing-dir" / "haproxy.cfg"
    assert main(["haproxy-config", EXAMPLE, "-o", str(output)]) == 1
    assert f"cannot write {output}" in capsys.readouterr().err

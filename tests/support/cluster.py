"""The example HA topology with free ports, for tests that run ``gatehouse cluster``."""

from __future__ import annotations

from pathlib import Path

from gatehouse.cluster.drill import on_free_ports

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ha-cluster.yaml"


def free_topology(path: Path) -> Path:
    """The example topology with every port replaced by a free one, written to ``path``."""
    return on_free_ports(EXAMPLE, path)

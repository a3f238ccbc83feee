"""The example HA topology with free ports, for tests that run ``gatehouse cluster``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ha-cluster.yaml"


def free_topology(path: Path) -> Path:
    """The example topology with every port replaced by a free one."""
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())

    def free() -> str:
        return f"127.0.0.1:{free_port()}"

    data["administration"]["listen"] = free()
    for section in ("access_points", "policy_services", "authentication_services"):
        for service in data[section]:
            service["listen"] = free()
    data["load_balancer"]["listen"] = free()
    data["load_balancer"]["stats"] = free()
    data["databases"]["local"] = {"primary_port": free_port(), "standby_port": free_port()}
    data["demo_backend"]["listen"] = free()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

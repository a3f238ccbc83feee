"""HOME/prometheus.yml for the cluster: a target per service of the topology, valid for
promtool as written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gatehouse.cluster.home import metrics_targets
from gatehouse.cluster.topology import load_topology
from gatehouse.metrics.scrape_config import FILE_NAME, write_scrape_config

EXAMPLE = Path(__file__).parents[2] / "examples" / "ha-cluster.yaml"


def test_cluster_targets_from_the_example(tmp_path: Path) -> None:
    path = write_scrape_config(tmp_path, metrics_targets(load_topology(EXAMPLE)), "test")
    assert path.name == FILE_NAME
    document = yaml.safe_load(path.read_text())
    [job] = document["scrape_configs"]
    found = {
        config["labels"]["service_id"]: (config["targets"], config["labels"]["role"])
        for config in job["static_configs"]
    }
    assert found["admin"] == (["127.0.0.1:9471"], "administration")
    assert found["ap2"] == (["127.0.0.1:9473"], "access_point")
    assert found["ps1"] == (["127.0.0.1:9474"], "policy")
    assert found["dist2"] == (["127.0.0.1:9479"], "distribution")
    assert len(found) == 9
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("GATEHOUSE_REQUIRE_ALL") == "1":
            pytest.fail("promtool is not installed (GATEHOUSE_REQUIRE_ALL=1)", pytrace=False)
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    check = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "gatehouse-ha.json"
METRICS_SOURCE = Path(__file__).parents[2] / "src" / "gatehouse" / "metrics"


def dashboard_queries() -> list[str]:
    import json

    document = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in document["panels"]
        for target in panel.get("targets", ())
        if "expr" in target
    ]


def test_the_dashboard_asks_for_metrics_that_exist() -> None:
    import re

    source = "".join(path.read_text() for path in METRICS_SOURCE.glob("*.py"))
    names = {
        re.sub(r"_(bucket|total)$", "", name)
        for query in dashboard_queries()
        for name in re.findall(r"gatehouse_\w+", query)
    }
    assert names
    missing_names = sorted(name for name in names if f'"{name}' not in source)
    assert not missing_names


def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("GATEHOUSE_REQUIRE_ALL") == "1":
            pytest.fail("promtool is not installed (GATEHOUSE_REQUIRE_ALL=1)", pytrace=False)
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

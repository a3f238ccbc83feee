"""``HOME/prometheus.yml``: a Prometheus scrape configuration listing every service's
metrics listener, written by ``gatehouse up`` and ``gatehouse cluster up``.

It is a whole Prometheus configuration file (``prometheus --config.file HOME/prometheus.yml``
works as it is; ``promtool check config`` accepts it): one job, ``gatehouse``, with a target
per service and labels that say which one it is (``service_id``, ``role``, ``node``), so a
dashboard can show which Access Point uses which Policy service.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from gatehouse.internal.lkg import atomic_write

FILE_NAME = "prometheus.yml"
JOB = "gatehouse"
SCRAPE_INTERVAL = "15s"
_DIALABLE = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@dataclass(frozen=True, slots=True)
class Target:
    """One service's metrics listener as Prometheus reaches it."""

    service_id: str
    role: str
    node: str
    host: str
    port: int

    @property
    def address(self) -> str:
        host = _DIALABLE.get(self.host, self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def scrape_config(targets: Sequence[Target], source: str) -> str:
    """The configuration's text; ``source``: what wrote it, for the header comment."""
    document = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "scheme": "http",
                "static_configs": [
                    {
                        "targets": [target.address],
                        "labels": {
                            "service_id": target.service_id,
                            "role": target.role,
                            "node": target.node,
                        },
                    }
                    for target in targets
                ],
            }
        ],
    }
    header = (
        f"# Written by '{source}' at every start: every Gatehouse service's metrics listener\n"
        "# (metrics.listen). Use it as it is (prometheus --config.file=THIS) or copy the job.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)


def write_scrape_config(home: Path, targets: Iterable[Target], source: str) -> Path:
    path = home / FILE_NAME
    atomic_write(path, scrape_config(list(targets), source).encode(), 0o644)
    return path

"""The example HA topology with free ports, for tests that run ``gatehouse cluster``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gatehouse.cluster.drill import on_free_ports
from gatehouse.cluster.runner import Cluster
from gatehouse.cluster.topology import LocalDatabases
from gatehouse.cluster.topology_patroni import EtcdMember, quiet_free_ports

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ha-cluster.yaml"


def free_topology(path: Path) -> Path:
    """The example topology with every port replaced by a free one, written to ``path``."""
    return on_free_ports(EXAMPLE, path)


@contextmanager
def cluster_home(prefix: str = "gh-cluster-") -> Iterator[Path]:
    """A cluster home under a short path (HAProxy's stats socket lives in it) that the
    postgres user can traverse; whatever cluster runs there is stopped afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path / "home"
    finally:
        if (path / "home" / "topology.yaml").exists():
            Cluster.open(path / "home").down()
        shutil.rmtree(path, ignore_errors=True)


def free_local_databases() -> tuple[LocalDatabases, list[EtcdMember]]:
    """PostgreSQL, Patroni REST and etcd ports on loopback for a :class:`ClusterDatabases`,
    every one free (each probe socket held until all are chosen)."""
    ports = quiet_free_ports(10)  # outside the ephemeral range: see quiet_free_ports
    local = LocalDatabases(
        primary_port=ports[0], standby_port=ports[1], rest_ports=(ports[2], ports[3])
    )
    etcd = [
        EtcdMember(name=f"etcd{i + 1}", client_port=ports[4 + 2 * i], peer_port=ports[5 + 2 * i])
        for i in range(3)
    ]
    return local, etcd

"""What ``gatehouse cluster up`` checks before it creates anything: HAProxy, PostgreSQL,
Patroni and etcd installed, a home path short enough for a Unix socket, every port free
(Patroni's REST API and etcd's included)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

from gatehouse.cluster.databases import ClusterDatabases, require_patroni
from gatehouse.cluster.errors import ClusterError
from gatehouse.cluster.etcd import find_etcd
from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.members import Member
from gatehouse.cluster.topology import Topology, dialable, host_port
from gatehouse.config.access_point import parse_listen
from gatehouse.storage.postgres_ha.binaries import require_bindir

#: Unix socket paths longer than this do not fit in ``sockaddr_un``.
MAX_SOCKET_PATH = 107


def _answers(address: tuple[str, int], timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


def preflight(
    home: Path,
    topology: Topology,
    members: Sequence[Member],
    databases: ClusterDatabases | None,
    stats_socket: Path,
) -> None:
    """Check that ``up`` can run ``members`` from ``home``.

    Raises:
        ClusterError: HAProxy missing, ``stats_socket`` too long a path, a port taken.
        ReplicationError: the PostgreSQL server binaries are missing.
    """
    if find_haproxy() is None:
        raise ClusterError("HAProxy is not installed (apt-get install haproxy)")
    if databases is not None:
        require_bindir()
        require_patroni()
        if find_etcd() is None:
            raise ClusterError("etcd is not installed (apt-get install etcd-server)")
    if len(str(stats_socket)) > MAX_SOCKET_PATH:
        raise ClusterError(
            f"{home} is too long a path for HAProxy's stats socket "
            f"({stats_socket}): Unix socket paths hold at most {MAX_SOCKET_PATH} "
            "bytes; use a shorter --home"
        )
    taken = []
    for member in members:
        addresses = [member.address] if member.address is not None else []
        if member.kind == "database":
            assert databases is not None
            node = databases.node(member.name)
            addresses = [(node.host, node.port), databases.rest_address(member.name)]
        if member.kind == "load_balancer" and topology.load_balancer.stats:
            host, port = parse_listen(topology.load_balancer.stats)
            addresses.append((dialable(host), port))
        demo = topology.demo_backend
        if member.kind == "demo_backend" and demo is not None and demo.smtp is not None:
            host, port = parse_listen(demo.smtp)  # its mail server
            addresses.append((dialable(host), port))
        taken += [f"{member.name} ({host_port(*a)})" for a in addresses if _answers(a, timeout=0.5)]
    if databases is not None and not databases.daemons_running():
        for etcd in databases.etcd.members:
            for port in (etcd.client_port, etcd.peer_port):
                if _answers((etcd.host, port), timeout=0.5):
                    taken.append(f"{etcd.name} ({host_port(etcd.host, port)})")
    if taken:
        raise ClusterError(f"another process listens where the cluster would: {', '.join(taken)}")

"""The command line each member of the local cluster runs (the PostgreSQL servers excepted:
:mod:`.databases` starts them)."""

from __future__ import annotations

import sys
from pathlib import Path

from gatehouse.administration.service import CONFIG_FILE
from gatehouse.cluster.errors import ClusterError
from gatehouse.cluster.haproxy import find_haproxy
from gatehouse.cluster.home import HAPROXY_CONFIG, POLICY_HOME
from gatehouse.cluster.members import Kind, Member
from gatehouse.cluster.topology import Topology
from gatehouse.node import STATE_DIR

#: The services that follow Admin from a state directory, in start order, and their command.
SERVICE_COMMANDS: dict[Kind, str] = {
    "distribution": "distribution",
    "authentication": "authentication",
    "policy": "policy",
    "access_point": "access-point",
}


def member_argv(member: Member, topology: Topology, home: Path, admin_url: str) -> list[str]:
    """The command that runs ``member`` from ``home``; a service joins Admin at ``admin_url``.

    Raises:
        ClusterError: HAProxy is not installed (for the load balancer).
    """
    name = member.name
    gatehouse = [sys.executable, "-m", "gatehouse"]
    if member.kind == "load_balancer":
        binary = find_haproxy()
        if binary is None:
            raise ClusterError("HAProxy is not installed (apt-get install haproxy)")
        return [binary, "-db", "-f", str(home / HAPROXY_CONFIG)]
    if member.kind == "demo_backend":
        assert topology.demo_backend is not None
        demo = topology.demo_backend
        smtp = ["--smtp", demo.smtp] if demo.smtp is not None else []
        return [*gatehouse, "demo-backend", "--listen", demo.listen, *smtp]
    if member.kind == "administration":
        config = str(home / CONFIG_FILE)
        return [*gatehouse, "administration", "--config", config, "--home", str(home)]
    placed = next(p.service for p in topology.placements() if p.service.id == name)
    state = home / STATE_DIR / name
    args = [*gatehouse, SERVICE_COMMANDS[member.kind], "--state", str(state)]
    args += ["--join", admin_url, "--token-file", str(state / "join.token")]
    args += ["--id", name, "--endpoint", topology.endpoint(placed)]
    args += ["--node", placed.node]
    if member.kind == "policy" and topology.databases.local is not None:
        # Its own home: the user DB URL there is the Policy role's (cluster.db_access).
        args += ["--home", str(home / POLICY_HOME)]
    elif member.kind != "access_point":
        args += ["--home", str(home)]
    return args

"""The members of a local cluster: every process (or PostgreSQL server) that runs a topology
on this machine, with its name, kind and address, in start order.

Names are the topology's ids plus ``haproxy``, ``demo-backend``, ``pg1`` and ``pg2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gatehouse.cluster.topology import Topology, dialable
from gatehouse.config.access_point import parse_listen

LOAD_BALANCER = "haproxy"
DEMO_BACKEND = "demo-backend"

Kind = Literal[
    "database",
    "demo_backend",
    "administration",
    "authentication",
    "policy",
    "access_point",
    "distribution",
    "load_balancer",
]
KIND_NAMES: dict[Kind, str] = {
    "database": "PostgreSQL",
    "demo_backend": "demo backend",
    "administration": "Administration",
    "authentication": "Authentication",
    "policy": "Policy",
    "access_point": "Access Point",
    "distribution": "Distribution",
    "load_balancer": "load balancer",
}
#: ``down`` stops in this order (the reverse of the dependencies); PostgreSQL comes last.
STOP_ORDER: tuple[Kind, ...] = (
    "load_balancer",
    "access_point",
    "policy",
    "authentication",
    "distribution",
    "administration",
    "demo_backend",
)
#: Start order of the topology's services (Admin first; an Access Point needs a Policy
#: service to be of use, a Policy service an Authentication service, which sends codes
#: through a Distribution service).
_START_RANK = {
    "administration": 0,
    "distribution": 1,
    "authentication": 2,
    "policy": 3,
    "access_point": 4,
}


@dataclass(frozen=True, slots=True)
class Member:
    """One process (or PostgreSQL server) of the cluster."""

    name: str
    kind: Kind
    node: str | None = None
    address: tuple[str, int] | None = None
    """Where it is reached on this machine (``None``: PostgreSQL, see the pair)."""

    @property
    def role(self) -> str:
        return KIND_NAMES[self.kind]


def cluster_members(topology: Topology, databases: Sequence[str]) -> list[Member]:
    """Every member in start order: the PostgreSQL servers named ``databases`` (none when the
    topology's databases are URLs), the demo backend, the topology's services, HAProxy."""
    t = topology
    out = [Member(name, "database") for name in databases]
    if t.demo_backend is not None:
        host, port = parse_listen(t.demo_backend.listen)
        out.append(Member(DEMO_BACKEND, "demo_backend", None, (dialable(host), port)))
    for placed in sorted(t.placements(), key=lambda p: _START_RANK[p.role]):
        service = placed.service
        host, port = t.address(service)
        out.append(Member(service.id, placed.role, service.node, (dialable(host), port)))
    host, port = parse_listen(t.load_balancer.listen)
    out.append(Member(LOAD_BALANCER, "load_balancer", None, (dialable(host), port)))
    return out

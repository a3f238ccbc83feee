"""The cross-field checks of a topology: what each field alone cannot say is wrong.

Duplicate nodes and service ids, services in the wrong zone, fewer than two of what must
fail over, preference lists naming the wrong services, addresses others cannot reach or that
two listeners share, databases both local and remote. :class:`~.topology.Topology` runs
:func:`topology_problems` when it is validated.
"""

from __future__ import annotations

from collections.abc import Iterator

from gatehouse.cluster.topology import (
    ROLE_NAMES,
    WILDCARD_HOSTS,
    Databases,
    Loc,
    Role,
    Topology,
    Zone,
    dialable,
    host_port,
)
from gatehouse.config.access_point import is_loopback, parse_listen


def topology_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    """Every inconsistency between fields, as (location, message); empty when valid."""
    yield from _node_problems(topology)
    yield from _placement_problems(topology)
    yield from _high_availability_problems(topology)
    yield from _ordered_list_problems(topology)
    yield from _address_problems(topology)
    yield from _database_problems(topology.databases)
    yield from _outbox_problems(topology)
    yield from _tls_problems(topology)


def _tls_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    lb = topology.load_balancer
    mode = lb.access_point_tls
    if mode is None:
        for index, ap in enumerate(topology.access_points):
            if ap.tls is not None:
                yield (
                    ("access_points", index, "tls"),
                    "set load_balancer.access_point_tls (passthrough or reencrypt) to say how "
                    "the load balancer reaches an AP that terminates TLS",
                )
        return
    for index, ap in enumerate(topology.access_points):
        if ap.tls is None:
            yield (
                ("access_points", index, "tls"),
                f"load_balancer.access_point_tls is {mode}: every AP needs its certificate",
            )
    if mode == "passthrough" and lb.tls_certificate is not None:
        yield (
            ("load_balancer", "tls_certificate"),
            "passthrough: the APs terminate TLS, HAProxy holds no certificate (remove it)",
        )
    if mode == "reencrypt":
        if lb.tls_certificate is None:
            yield (
                ("load_balancer", "tls_certificate"),
                "reencrypt: HAProxy terminates TLS first and needs its certificate",
            )
        if lb.access_point_ca_file is None:
            yield (
                ("load_balancer", "access_point_ca_file"),
                "reencrypt: HAProxy verifies each AP's certificate and needs the CA file",
            )


def _node_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    seen: set[str] = set()
    for index, node in enumerate(topology.nodes):
        if node.name in seen:
            yield ("nodes", index, "name"), f"duplicate node {node.name!r}"
        seen.add(node.name)


_ZONE_OF_ROLE: dict[Role, Zone] = {
    "administration": "internal",
    "access_point": "dmz",
    "policy": "internal",
    "authentication": "internal",
    "distribution": "internal",
}
_ZONE_NAMES: dict[Zone, str] = {"dmz": "DMZ", "internal": "internal"}


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0].lower() in "aeiou" else f"a {noun}"


def _placement_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    ids: dict[str, Role] = {}
    for placed in topology.placements():
        service = placed.service
        if service.id in ids:
            owner = _a(ROLE_NAMES[ids[service.id]])
            yield (*placed.loc, "id"), f"duplicate service id {service.id!r} ({owner})"
        else:
            ids[service.id] = placed.role
        node = topology.node(service.node)
        if node is None:
            yield (*placed.loc, "node"), f"no node {service.node!r}"
            continue
        zone = _ZONE_OF_ROLE[placed.role]
        if node.zone != zone:
            yield (
                (*placed.loc, "node"),
                f"{node.name!r} is {_a(_ZONE_NAMES[node.zone])} node; "
                f"{ROLE_NAMES[placed.role]}s run on {_ZONE_NAMES[zone]} nodes",
            )


def _high_availability_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    internal = [n.name for n in topology.nodes if n.zone == "internal"]
    with_ps = {ps.node for ps in topology.policy_services}
    with_auth = {auth.node for auth in topology.authentication_services}
    complete = [name for name in internal if name in with_ps and name in with_auth]
    if len(complete) < 2:
        found = ", ".join(complete) or "none"
        yield (
            ("nodes",),
            "an HA topology needs at least two internal nodes each running a Policy and an "
            f"Authentication service (found: {found})",
        )
    distribution = topology.distribution_services
    if distribution and (len(distribution) < 2 or len({d.node for d in distribution}) < 2):
        yield (
            ("distribution_services",),
            "an HA topology needs at least two Distribution services on two internal nodes "
            "(or none)",
        )
    dmz_nodes = {ap.node for ap in topology.access_points}
    if len(topology.access_points) < 2 or len(dmz_nodes) < 2:
        yield (
            ("access_points",),
            "an HA topology needs at least two Access Points on two DMZ nodes "
            "(the load balancer fails over between them)",
        )


def _ordered_list_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    roles = {p.service.id: p.role for p in topology.placements()}
    lists: list[tuple[Loc, list[str] | None, Role]] = [
        (("access_points", i, "policy_services"), ap.policy_services, "policy")
        for i, ap in enumerate(topology.access_points)
    ]
    lists += [
        (("policy_services", i, "authentication"), ps.authentication, "authentication")
        for i, ps in enumerate(topology.policy_services)
    ]
    lists += [
        (("authentication_services", i, "distribution"), auth.distribution, "distribution")
        for i, auth in enumerate(topology.authentication_services)
    ]
    for loc, listed, role in lists:
        if listed is None:
            continue
        if not listed:
            yield (
                loc,
                f"empty: list {ROLE_NAMES[role]}s, preferred first, or leave it out for the "
                "default order",
            )
        for index, service_id in enumerate(listed):
            actual = roles.get(service_id)
            if actual is None:
                yield (*loc, index), f"no {ROLE_NAMES[role].lower()} {service_id!r}"
            elif actual != role:
                yield (
                    (*loc, index),
                    f"{service_id!r} is {_a(ROLE_NAMES[actual])}, not {_a(ROLE_NAMES[role])}",
                )
            elif service_id in listed[:index]:
                yield (*loc, index), f"{service_id!r} is listed twice"


def _address_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    """Services others cannot reach, and two listeners on one address."""
    taken: dict[tuple[str, int], str] = {}
    ports_on_node: dict[tuple[str, int], str] = {}

    def claim(loc: Loc, address: tuple[str, int], owner: str) -> Iterator[tuple[Loc, str]]:
        key = (dialable(address[0]), address[1])
        if key in taken:
            yield loc, f"same address as {taken[key]} ({host_port(*key)})"
        else:
            taken[key] = owner

    for placed in topology.placements():
        service = placed.service
        loc = (*placed.loc, "listen")
        host, port = parse_listen(service.listen)
        node = topology.node(service.node)
        if node is None:
            continue  # reported with the placement
        if host in WILDCARD_HOSTS and node.address is None:
            yield (
                loc,
                (
                    f"listens on every address: set nodes[{topology.nodes.index(node)}].address "
                    "so the other services can reach it"
                ),
            )
            continue
        if is_loopback(host) and node.address is not None and not is_loopback(node.address):
            yield loc, f"listens on loopback only: unreachable at {node.name}'s {node.address}"
            continue
        if (node.name, port) in ports_on_node:
            owner = ports_on_node[node.name, port]
            yield loc, f"port {port} is taken on node {node.name} by {owner}"
            continue
        ports_on_node[node.name, port] = service.id
        yield from claim(loc, topology.address(service), service.id)

    for index, ap in enumerate(topology.access_points):
        status = topology.status_address(ap)
        if ap.status_listen is None or status is None or topology.node(ap.node) is None:
            continue
        loc = ("access_points", index, "status_listen")
        port = parse_listen(ap.status_listen)[1]
        if (ap.node, port) in ports_on_node:
            yield loc, f"port {port} is taken on node {ap.node} by {ports_on_node[ap.node, port]}"
            continue
        owner = f"{ap.id}'s status listener"
        ports_on_node[ap.node, port] = owner
        yield from claim(loc, status, owner)

    lb = topology.load_balancer
    yield from claim(("load_balancer", "listen"), parse_listen(lb.listen), "the load balancer")
    if lb.stats is not None:
        yield from claim(("load_balancer", "stats"), parse_listen(lb.stats), "the stats page")
    if topology.demo_backend is not None:
        demo = parse_listen(topology.demo_backend.listen)
        yield from claim(("demo_backend", "listen"), demo, "the demo backend")
        if topology.demo_backend.smtp is not None:
            smtp = parse_listen(topology.demo_backend.smtp)
            yield from claim(("demo_backend", "smtp"), smtp, "the demo mail server")
    local = topology.databases.local
    if local is not None:
        yield from claim(
            ("databases", "local", "primary_port"),
            (local.HOST, local.primary_port),
            "the PostgreSQL primary",
        )
        yield from claim(
            ("databases", "local", "standby_port"),
            (local.HOST, local.standby_port),
            "the PostgreSQL standby",
        )
        for index, port in enumerate(local.patroni_ports()):
            yield from claim(
                ("databases", "local", "rest_ports", index),
                (local.HOST, port),
                f"Patroni's REST API of pg{index + 1}",
            )
    if local is not None or topology.databases.etcd is not None:
        for index, member in enumerate(topology.databases.etcd_members()):
            where: Loc = ("databases", "etcd", index)
            yield from claim(
                (*where, "client_port"), (member.host, member.client_port), member.name
            )
            yield from claim((*where, "peer_port"), (member.host, member.peer_port), member.name)


def _database_problems(databases: Databases) -> Iterator[tuple[Loc, str]]:
    if databases.local is None and databases.user_db is None:
        yield (
            ("databases",),
            "set user_db (PostgreSQL URL) or local (PostgreSQL created by the cluster command)",
        )
    elif databases.local is not None:
        for name in ("user_db", "session_db", "oath_db", "outbox_db", "oauth2_db"):
            if getattr(databases, name) is not None:
                yield (
                    ("databases", name),
                    "either local or PostgreSQL URLs, not both: the local databases hold "
                    "users and sessions",
                )


def _outbox_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    """Distribution services share their work and their idempotency keys only through one
    outbox: with database URLs, that is ``outbox_db`` (``local`` makes one)."""
    databases = topology.databases
    if topology.distribution_services and databases.local is None and databases.outbox_db is None:
        yield (
            ("databases", "outbox_db"),
            "the Distribution services share one outbox: set outbox_db (a PostgreSQL URL)",
        )

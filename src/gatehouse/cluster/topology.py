"""The topology file of a high-availability installation: the nodes, which services each runs
and where they listen, the load balancer in front of the Access Points, and the databases.

Example (``examples/ha-cluster.yaml`` is the same on loopback)::

    nodes:
      - {name: dmz1, zone: dmz, address: 10.0.0.11}    # address: where the others reach it
      - {name: dmz2, zone: dmz, address: 10.0.0.12}
      - {name: int1, zone: internal, address: 10.0.1.11}
      - {name: int2, zone: internal, address: 10.0.1.12}
    administration: {node: int1, listen: "0.0.0.0:8001"}          # exactly one, internal
    access_points:                                                   # on DMZ nodes
      - {id: ap1, node: dmz1, listen: "0.0.0.0:8080"}     # policy_services: [ps1, ps2]
      - {id: ap2, node: dmz2, listen: "0.0.0.0:8080"}     # policy_services: [ps2, ps1]
    policy_services:                                      # on internal nodes
      - {id: ps1, node: int1, listen: "0.0.0.0:8101"}     # authentication: [auth1, auth2]
      - {id: ps2, node: int2, listen: "0.0.0.0:8101", authentication: [auth2, auth1]}
    authentication_services:
      - {id: auth1, node: int1, listen: "0.0.0.0:8201"}
      - {id: auth2, node: int2, listen: "0.0.0.0:8201"}
    load_balancer:
      listen: "0.0.0.0:443"
      tls_certificate: /etc/haproxy/gatehouse.pem    # optional: HAProxy terminates TLS
      health_check: {interval: 1s, timeout: 1s, fall: 2, rise: 2}
    databases:
      user_db: postgresql+asyncpg://gatehouse@/gatehouse?host=db1:5432&host=db2:5432&target_session_attrs=read-write
      # or, for `gatehouse cluster up` on one machine:
      # local: {primary_port: 5432, standby_port: 5433}
    demo_backend: {listen: "10.0.2.5:9000"}                          # optional

An Access Point without ``policy_services`` gets every Policy service, rotated by its
position (the first AP prefers the first PS, the second AP the second, ...), so two APs and
two PSs cross: AP1 → PS1, PS2 and AP2 → PS2, PS1. A Policy service without
``authentication`` prefers the Authentication services on its own node, then the others,
rotated by its position the same way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from gatehouse.administration.model import NodeName, ServiceId
from gatehouse.config.access_point import IPNetwork, Network, parse_listen
from gatehouse.config.base import Strict
from gatehouse.config.loader import load_file, problems_error
from gatehouse.config.units import Seconds
from gatehouse.errors import ConfigError
from gatehouse.storage.engine import parse_url

Loc = tuple[str | int, ...]
Zone = Literal["dmz", "internal"]
Role = Literal["administration", "access_point", "policy", "authentication"]

ROLE_NAMES = {
    "administration": "Administration service",
    "access_point": "Access Point",
    "policy": "Policy service",
    "authentication": "Authentication service",
}
#: Listen hosts meaning "every address": the others need the node's address to reach them.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*"})
SQLITE_REFUSED = "an HA topology needs PostgreSQL: SQLite lives on one node"

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _host(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not _HOST.match(value) or len(value) > 253:
            raise ValueError(f"not a host name or IP address: {value!r}") from None
    return value


def _postgres_url(value: str) -> str:
    try:
        parsed = parse_url(value)
    except ConfigError as error:
        raise ValueError(error.problems[0][1]) from None
    if parsed.drivername.startswith("sqlite"):
        raise ValueError(SQLITE_REFUSED)
    return value


def _status_as_text(value: object) -> object:
    """``502`` in YAML is a number; the HAProxy keyword is the same digits."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: ``HOST:PORT`` (``[v6]:PORT`` for IPv6).
ListenAddress = Annotated[str, AfterValidator(_listen)]
Host = Annotated[str, AfterValidator(_host)]
Port = Annotated[int, Field(ge=1, le=65535)]
PostgresURL = Annotated[str, AfterValidator(_postgres_url)]
#: An HAProxy ``retry-on`` event (https://docs.haproxy.org/2.6/configuration.html#4-retry-on).
RetryKeyword = Literal[
    "empty-response",
    "junk-response",
    "response-timeout",
    "0rtt-rejected",
    "401",
    "403",
    "404",
    "408",
    "425",
    "500",
    "501",
    "502",
    "503",
    "504",
]
RetryEvent = Annotated[RetryKeyword, BeforeValidator(_status_as_text)]


class Node(Strict):
    """A machine (or, for ``gatehouse cluster up``, a group of processes on loopback)."""

    name: NodeName
    zone: Zone
    address: Host | None = Field(
        default=None,
        description="where the other nodes reach this node's services; default: each "
        "service's listen host (required when a service listens on every address)",
    )


class PlacedService(Strict):
    """A service on a node, and the address it listens on."""

    id: ServiceId
    node: NodeName
    listen: ListenAddress


class AdministrationService(PlacedService):
    id: ServiceId = "admin"


class AccessPoint(PlacedService):
    policy_services: list[ServiceId] | None = Field(
        default=None, description="Policy services by id, preferred first; default: rotated"
    )


class PolicyService(PlacedService):
    authentication: list[ServiceId] | None = Field(
        default=None,
        description="Authentication services by id, preferred first; default: same node first",
    )


class AuthenticationService(PlacedService):
    pass


class HealthCheck(Strict):
    """How the load balancer checks each Access Point (``GET /_gatehouse/health``)."""

    interval: Seconds = Field(default=1.0, gt=0)
    timeout: Seconds = Field(default=1.0, gt=0)
    fall: int = Field(default=2, ge=1, le=100, description="failed checks before down")
    rise: int = Field(default=2, ge=1, le=100, description="passed checks before up again")


class Timeouts(Strict):
    """The load balancer's timeouts.

    ``server`` must stay above the Access Points' own backend timeouts (a resource's
    ``read_timeout``, 60 s by default): then a slow backend gets the AP's 504 page, and only
    an AP that hangs reaches ``server`` (a ``response-timeout``, retried elsewhere).
    """

    connect: Seconds = Field(default=2.0, gt=0)
    client: Seconds = Field(default=60.0, gt=0)
    server: Seconds = Field(default=90.0, gt=0)
    http_request: Seconds = Field(default=10.0, gt=0)
    keep_alive: Seconds = Field(default=10.0, gt=0)
    queue: Seconds = Field(default=5.0, gt=0)
    tunnel: Seconds = Field(default=3600.0, gt=0, description="WebSocket idle time")


def _default_retry_on() -> list[RetryKeyword]:
    return ["empty-response", "response-timeout", "502", "503"]


class LoadBalancer(Strict):
    """HAProxy in front of the Access Points (``gatehouse haproxy-config``)."""

    listen: ListenAddress
    tls_certificate: str | None = Field(
        default=None, description="PEM file (certificate and key): HAProxy terminates TLS"
    )
    balance: Literal["roundrobin", "leastconn"] = "roundrobin"
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    retries: int = Field(default=2, ge=0, le=10)
    redispatch: bool = Field(default=True, description="every retry goes to another AP")
    retry_on: list[RetryEvent] = Field(
        default_factory=_default_retry_on,
        description="besides a failed connection (always retried): when to retry an "
        "idempotent request on another AP; other requests are never sent twice",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)
    stats: ListenAddress | None = Field(
        default=None, description="HAProxy's stats page (keep it on loopback or internal)"
    )
    source_addresses: list[IPNetwork] | None = Field(
        default=None,
        description="where the load balancer connects to the APs from (trusted for "
        "X-Forwarded-*); default: its listen host, when that is an IP address",
    )

    def trusted_by_access_points(self) -> list[Network]:
        if self.source_addresses is not None:
            return list(self.source_addresses)
        host, _ = parse_listen(self.listen)
        if host in WILDCARD_HOSTS:
            return []
        try:
            return [ipaddress.ip_network(host)]
        except ValueError:
            return []


class LocalDatabases(Strict):
    """A PostgreSQL primary and its synchronous standby that ``gatehouse cluster up``
    creates on loopback."""

    HOST: ClassVar[str] = "127.0.0.1"
    primary_port: Port
    standby_port: Port
    user: str = Field(default="gatehouse", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    database: str = Field(default="gatehouse", pattern=r"^[a-z_][a-z0-9_]{0,62}$")

    def url(self) -> str:
        """A multi-host URL that follows whichever of the two is the writable primary."""
        hosts = ",".join(self.HOST for _ in self.ports())
        ports = ",".join(str(port) for port in self.ports())
        # The comma form: asyncpg's own parser (LISTEN/NOTIFY) reads it like SQLAlchemy.
        return (
            f"postgresql+asyncpg://{self.user}@/{self.database}"
            f"?host={hosts}&port={ports}&target_session_attrs=read-write"
        )

    def ports(self) -> tuple[int, int]:
        return self.primary_port, self.standby_port


class Databases(Strict):
    """Either ``local`` (the cluster command creates PostgreSQL) or PostgreSQL URLs."""

    local: LocalDatabases | None = None
    user_db: PostgresURL | None = None
    session_db: PostgresURL | None = Field(default=None, description="default: user_db")

    def urls(self) -> tuple[str, str | None]:
        """The user DB URL and the session DB URL (None: in the user DB)."""
        if self.local is not None:
            return self.local.url(), None
        assert self.user_db is not None  # checked by the topology
        return self.user_db, self.session_db


class DemoBackend(Strict):
    """The demo backend the installation's two demo resources point to."""

    listen: ListenAddress


@dataclass(frozen=True, slots=True)
class Placement:
    """A service of the topology with its role and where it is written in the file."""

    role: Role
    loc: Loc
    service: PlacedService


class Topology(Strict):
    """A whole HA installation; validated across fields, errors name the field path."""

    nodes: list[Node] = Field(min_length=1)
    administration: AdministrationService
    access_points: list[AccessPoint] = Field(min_length=1)
    policy_services: list[PolicyService] = Field(min_length=1)
    authentication_services: list[AuthenticationService] = Field(min_length=1)
    load_balancer: LoadBalancer
    databases: Databases
    demo_backend: DemoBackend | None = None

    @model_validator(mode="after")
    def _cross_check(self) -> Topology:
        problems = list(topology_problems(self))
        if problems:
            raise problems_error(type(self).__name__, problems, "topology")
        return self

    def placements(self) -> list[Placement]:
        """Every service, Administration first, then by section in file order."""
        out = [Placement("administration", ("administration",), self.administration)]
        sections: Sequence[tuple[Role, str, Sequence[PlacedService]]] = (
            ("access_point", "access_points", self.access_points),
            ("policy", "policy_services", self.policy_services),
            ("authentication", "authentication_services", self.authentication_services),
        )
        for role, section, services in sections:
            out += [Placement(role, (section, i), s) for i, s in enumerate(services)]
        return out

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def address(self, service: PlacedService) -> tuple[str, int]:
        """Where the other services (and the load balancer) connect to ``service``."""
        host, port = parse_listen(service.listen)
        node = self.node(service.node)
        if node is not None and node.address is not None:
            return node.address, port
        return host, port

    def endpoint(self, service: PlacedService) -> str:
        """The service's URL for its clients."""
        return "http://" + host_port(*self.address(service))

    def policy_order(self, access_point: AccessPoint) -> list[str]:
        """The AP's Policy services, preferred first."""
        if access_point.policy_services is not None:
            return list(access_point.policy_services)
        index = self.access_points.index(access_point)
        return rotated([ps.id for ps in self.policy_services], index)

    def authentication_order(self, policy: PolicyService) -> list[str]:
        """The PS's Authentication services, preferred first."""
        if policy.authentication is not None:
            return list(policy.authentication)
        local = [a.id for a in self.authentication_services if a.node == policy.node]
        others = [a.id for a in self.authentication_services if a.node != policy.node]
        return local + rotated(others, self.policy_services.index(policy))


def host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with IPv6 addresses in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def rotated(items: list[str], by: int) -> list[str]:
    """``items`` starting at position ``by`` (modulo its length), wrapping around."""
    if not items:
        return []
    by %= len(items)
    return items[by:] + items[:by]


def dialable(host: str) -> str:
    """The host to connect to for a server listening on ``host`` on this machine."""
    return {"0.0.0.0": "127.0.0.1", "*": "127.0.0.1", "::": "::1"}.get(host, host)


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file.

    Raises:
        ConfigError: unreadable, not YAML, or invalid; every problem with its field path.
    """
    return load_file(Topology, path)


# --- cross-field checks ----------------------------------------------------------------------


def topology_problems(topology: Topology) -> Iterator[tuple[Loc, str]]:
    """Every inconsistency between fields, as (location, message); empty when valid."""
    yield from _node_problems(topology)
    yield from _placement_problems(topology)
    yield from _high_availability_problems(topology)
    yield from _ordered_list_problems(topology)
    yield from _address_problems(topology)
    yield from _database_problems(topology.databases)


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
        if _is_loopback(host) and node.address is not None and not _is_loopback(node.address):
            yield loc, f"listens on loopback only: unreachable at {node.name}'s {node.address}"
            continue
        if (node.name, port) in ports_on_node:
            owner = ports_on_node[node.name, port]
            yield loc, f"port {port} is taken on node {node.name} by {owner}"
            continue
        ports_on_node[node.name, port] = service.id
        yield from claim(loc, topology.address(service), service.id)

    lb = topology.load_balancer
    yield from claim(("load_balancer", "listen"), parse_listen(lb.listen), "the load balancer")
    if lb.stats is not None:
        yield from claim(("load_balancer", "stats"), parse_listen(lb.stats), "the stats page")
    if topology.demo_backend is not None:
        demo = parse_listen(topology.demo_backend.listen)
        yield from claim(("demo_backend", "listen"), demo, "the demo backend")
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


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _database_problems(databases: Databases) -> Iterator[tuple[Loc, str]]:
    if databases.local is None and databases.user_db is None:
        yield (
            ("databases",),
            "set user_db (PostgreSQL URL) or local (PostgreSQL created by the cluster command)",
        )
    elif databases.local is not None:
        for name in ("user_db", "session_db"):
            if getattr(databases, name) is not None:
                yield (
                    ("databases", name),
                    "either local or PostgreSQL URLs, not both: the local databases hold "
                    "users and sessions",
                )

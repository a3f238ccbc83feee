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
      # optional on each AP: status_listen: "0.0.0.0:8090" (its version and Policy routing
      # for `gatehouse cluster status`; mutual TLS once enrolled, else loopback only)
    policy_services:                                      # on internal nodes
      - {id: ps1, node: int1, listen: "0.0.0.0:8101"}     # authentication: [auth1, auth2]
      - {id: ps2, node: int2, listen: "0.0.0.0:8101", authentication: [auth2, auth1]}
    authentication_services:
      - {id: auth1, node: int1, listen: "0.0.0.0:8201"}     # distribution: [dist1, dist2]
      - {id: auth2, node: int2, listen: "0.0.0.0:8201"}
    distribution_services:                                # optional; two on two internal nodes
      - {id: dist1, node: int1, listen: "0.0.0.0:8301"}
      - {id: dist2, node: int2, listen: "0.0.0.0:8301"}
    load_balancer:
      listen: "0.0.0.0:443"
      tls_certificate: /etc/haproxy/gatehouse.pem    # optional: HAProxy terminates TLS
      health_check: {interval: 1s, timeout: 1s, fall: 2, rise: 2}
    databases:
      user_db: postgresql+asyncpg://gatehouse@/gatehouse?host=db1:5432&host=db2:5432&target_session_attrs=read-write
      oath_db: postgresql+asyncpg://gatehouse@/gatehouse_oath?host=db1:5432&host=db2:5432&target_session_attrs=read-write
      outbox_db: postgresql+asyncpg://gatehouse_dist@/gatehouse_outbox?host=db1:5432&host=db2:5432&target_session_attrs=read-write
      oauth2_db: postgresql+asyncpg://gatehouse@/gatehouse_oauth2?host=db1:5432&host=db2:5432&target_session_attrs=read-write
      # or, for `gatehouse cluster up` on one machine:
      # local: {primary_port: 5432, standby_port: 5433}
    demo_backend: {listen: "10.0.2.5:9000", smtp: "10.0.2.5:8025"}  # optional; smtp: its
                                    # demo mail server, the Distribution services' channel

An Access Point without ``policy_services`` gets every Policy service, rotated by its
position (the first AP prefers the first PS, the second AP the second, ...), so two APs and
two PSs cross: AP1 → PS1, PS2 and AP2 → PS2, PS1. A Policy service without
``authentication`` prefers the Authentication services on its own node, then the others,
rotated by its position the same way. An Authentication service without ``distribution``
prefers the Distribution services on its own node, then the others, likewise.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from gatehouse.administration.model import NodeName, ServiceId
from gatehouse.cluster.topology_patroni import EtcdMember, PatroniSettings, default_etcd
from gatehouse.config.access_point import (
    IPNetwork,
    Network,
    TLSSettings,
    is_loopback,
    parse_listen,
)
from gatehouse.config.base import Strict
from gatehouse.config.loader import load_file, problems_error
from gatehouse.config.units import Seconds
from gatehouse.errors import ConfigError
from gatehouse.storage.engine import parse_url

Loc = tuple[str | int, ...]
Zone = Literal["dmz", "internal"]
Role = Literal["administration", "access_point", "policy", "authentication", "distribution"]

ROLE_NAMES = {
    "administration": "Administration service",
    "access_point": "Access Point",
    "policy": "Policy service",
    "authentication": "Authentication service",
    "distribution": "Distribution service",
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
    metrics_listen: ListenAddress | None = Field(
        default=None,
        description="the service's metrics listener (plain HTTP GET /metrics; keep it on "
        "loopback or the internal network); HOME/prometheus.yml lists it",
    )


class AdministrationService(PlacedService):
    id: ServiceId = "admin"


class AccessPoint(PlacedService):
    policy_services: list[ServiceId] | None = Field(
        default=None, description="Policy services by id, preferred first; default: rotated"
    )
    #: TLS on the AP's own listener (certificate and key files on its node); required on
    #: every AP when ``load_balancer.access_point_tls`` is set.
    tls: TLSSettings | None = None
    server_name: str | None = Field(
        default=None,
        description="re-encryption: the name HAProxy sends as SNI and requires in the AP's "
        "certificate; default: the AP's id",
    )
    status_listen: ListenAddress | None = Field(
        default=None,
        description="the AP's status listener: its configuration version and Policy routing "
        "for `gatehouse cluster status` (the public health says only up or down); mutual TLS "
        "once the AP is enrolled, else loopback only",
    )

    @property
    def tls_name(self) -> str:
        return self.server_name or self.id


class PolicyService(PlacedService):
    authentication: list[ServiceId] | None = Field(
        default=None,
        description="Authentication services by id, preferred first; default: same node first",
    )


class AuthenticationService(PlacedService):
    distribution: list[ServiceId] | None = Field(
        default=None,
        description="Distribution services by id, preferred first; default: same node first",
    )


class DistributionService(PlacedService):
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
    #: How HAProxy reaches APs that terminate TLS themselves: ``passthrough`` (mode tcp: the
    #: client's TLS goes through to the AP, HAProxy holds no key) or ``reencrypt`` (HAProxy
    #: terminates with ``tls_certificate`` and opens TLS to the AP, verifying it against
    #: ``access_point_ca_file``). None: plain HTTP to the APs.
    access_point_tls: Literal["passthrough", "reencrypt"] | None = None
    access_point_ca_file: str | None = Field(
        default=None,
        description="CA file (PEM) HAProxy verifies the APs' certificates with; required "
        "for reencrypt, optional for passthrough (health checks then verify too)",
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
    rest_ports: tuple[Port, Port] | None = Field(
        default=None,
        description="Patroni's REST API of the first and second node; default: the two "
        "ports after the higher PostgreSQL port",
    )

    def url(self, database: str | None = None) -> str:
        """A multi-host URL that follows whichever of the two is the writable primary (to
        ``database``, by default the cluster's)."""
        hosts = ",".join(self.HOST for _ in self.ports())
        ports = ",".join(str(port) for port in self.ports())
        # The comma form: asyncpg's own parser (LISTEN/NOTIFY) reads it like SQLAlchemy.
        return (
            f"postgresql+asyncpg://{self.user}@/{database or self.database}"
            f"?host={hosts}&port={ports}&target_session_attrs=read-write"
        )

    def ports(self) -> tuple[int, int]:
        return self.primary_port, self.standby_port

    def patroni_ports(self) -> tuple[int, int]:
        """Patroni's REST API port of each node."""
        if self.rest_ports is not None:
            return self.rest_ports
        after = max(self.ports())
        return after + 1, after + 2

    def default_etcd(self) -> list[EtcdMember]:
        """Three etcd members on the six ports after the REST API's (when the topology
        names none)."""
        return default_etcd(max(*self.ports(), *self.patroni_ports()) + 1, self.HOST)


class Databases(Strict):
    """Either ``local`` (the cluster command creates PostgreSQL) or PostgreSQL URLs."""

    local: LocalDatabases | None = None
    user_db: PostgresURL | None = None
    session_db: PostgresURL | None = Field(default=None, description="default: user_db")
    oath_db: PostgresURL | None = Field(
        default=None,
        description="the OATH DB (tokens); with local, cluster up makes it next to the user DB",
    )
    outbox_db: PostgresURL | None = Field(
        default=None,
        description="the Distribution services' outbox; with local, cluster up makes it next "
        "to the user DB",
    )
    oauth2_db: PostgresURL | None = Field(
        default=None,
        description="the OAuth2 DB (codes, tokens, consents of the OpenID Provider); with "
        "local, cluster up makes it next to the user DB",
    )
    etcd: list[EtcdMember] | None = Field(
        default=None,
        min_length=3,
        max_length=3,
        description="the etcd cluster Patroni keeps its leader key in (three members); with "
        "local, default: on loopback after the REST API's ports",
    )
    patroni: PatroniSettings = Field(default_factory=PatroniSettings)

    def etcd_members(self) -> list[EtcdMember]:
        """The etcd members: the topology's, else (with local) the default ones.

        Raises:
            ConfigError: neither (database URLs without ``etcd``).
        """
        if self.etcd is not None:
            return list(self.etcd)
        if self.local is not None:
            return self.local.default_etcd()
        raise ConfigError([("databases.etcd", "list the three etcd members")], "topology")

    def urls(self) -> tuple[str, str | None]:
        """The user DB URL and the session DB URL (None: in the user DB)."""
        if self.local is not None:
            return self.local.url(), None
        assert self.user_db is not None  # checked by the topology
        return self.user_db, self.session_db


class DemoBackend(Strict):
    """The demo backend the installation's two demo resources point to."""

    listen: ListenAddress
    #: Its demo mail server (SMTP, plain): the Distribution services' channel.
    smtp: ListenAddress | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """A service of the topology with its role and where it is written in the file."""

    role: Role
    loc: Loc
    service: PlacedService


class Topology(Strict):
    """A whole HA installation; validated across fields (:mod:`.topology_checks`), errors name
    the field path."""

    nodes: list[Node] = Field(min_length=1)
    administration: AdministrationService
    access_points: list[AccessPoint] = Field(min_length=1)
    policy_services: list[PolicyService] = Field(min_length=1)
    authentication_services: list[AuthenticationService] = Field(min_length=1)
    distribution_services: list[DistributionService] = Field(default_factory=list)
    load_balancer: LoadBalancer
    databases: Databases
    demo_backend: DemoBackend | None = None
    #: ``gatehouse cluster up`` only: make a local CA and certificates in the cluster's home
    #: and run TLS end to end, HAProxy in this mode in front of APs that terminate TLS
    #: (see :mod:`.local_tls`).
    local_tls: Literal["passthrough", "reencrypt"] | None = None

    @model_validator(mode="after")
    def _cross_check(self) -> Topology:
        # Imported here: the checks module reads this one's model.
        from gatehouse.cluster.topology_checks import topology_problems

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
            ("distribution", "distribution_services", self.distribution_services),
        )
        for role, section, services in sections:
            out += [Placement(role, (section, i), s) for i, s in enumerate(services)]
        return out

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def metrics_address(self, service: PlacedService) -> tuple[str, int] | None:
        """Where Prometheus scrapes ``service`` (None: no ``metrics_listen``)."""
        if service.metrics_listen is None:
            return None
        host, port = parse_listen(service.metrics_listen)
        node = self.node(service.node)
        if node is not None and node.address is not None and not is_loopback(host):
            return node.address, port
        return dialable(host), port

    def address(self, service: PlacedService) -> tuple[str, int]:
        """Where the other services (and the load balancer) connect to ``service``."""
        host, port = parse_listen(service.listen)
        node = self.node(service.node)
        if node is not None and node.address is not None:
            return node.address, port
        return host, port

    def status_address(self, access_point: AccessPoint) -> tuple[str, int] | None:
        """Where ``gatehouse cluster status`` reads the AP's details (None: no
        ``status_listen``)."""
        if access_point.status_listen is None:
            return None
        host, port = parse_listen(access_point.status_listen)
        node = self.node(access_point.node)
        if host in WILDCARD_HOSTS and node is not None and node.address is not None:
            return node.address, port
        return dialable(host), port

    def endpoint(self, service: PlacedService) -> str:
        """The service's URL for its clients (https for an AP with TLS)."""
        scheme = "https" if isinstance(service, AccessPoint) and service.tls else "http"
        return f"{scheme}://" + host_port(*self.address(service))

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

    def distribution_order(self, authentication: AuthenticationService) -> list[str]:
        """The Authentication service's Distribution services, preferred first."""
        if authentication.distribution is not None:
            return list(authentication.distribution)
        services = self.distribution_services
        local = [d.id for d in services if d.node == authentication.node]
        others = [d.id for d in services if d.node != authentication.node]
        return local + rotated(others, self.authentication_services.index(authentication))


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

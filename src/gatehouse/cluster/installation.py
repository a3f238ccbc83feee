"""A topology as the installation configuration the Administration service publishes.

The topology says where services run and in which order they call each other; the
installation document adds what every installation of the demo holds: the demo backend at
``/`` for any signed-in user and at ``/public`` for anyone, and, when the demo backend runs its
mail server (``demo_backend.smtp``), that server as the Distribution services' channel and
``/secure-email`` for a password and a code by e-mail. From then on the configuration is
Admin's (``gatehouse config apply|publish``); the topology only matters to start processes
and to write the load balancer's configuration.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from gatehouse.administration.model import InstallationConfig
from gatehouse.cluster.db_access import outbox_database
from gatehouse.cluster.topology import PlacedService, Topology, dialable, host_port
from gatehouse.config.access_point import Network, parse_listen
from gatehouse.config.loader import validate

#: The resource ids of the demo, and the rule each gets.
DEMO_RULES = {"demo": "authenticated", "demo-public": "public"}
#: The sender of the codes the demo mail server receives.
DEMO_SENDER = "Gatehouse <gatehouse@localhost>"


def _metrics(service: PlacedService) -> dict[str, Any]:
    """A service entry's ``metrics`` from the topology's ``metrics_listen``."""
    if service.metrics_listen is None:
        return {}
    return {"metrics": {"listen": service.metrics_listen}}


def installation_document(topology: Topology) -> dict[str, Any]:
    """The installation configuration as data (what ``parse_config`` accepts as YAML).

    The Administration service itself is not in it: it publishes the document, it does not
    follow it.
    """
    services: list[dict[str, str]] = []
    for placed in topology.placements():
        if placed.role == "administration":
            continue
        service = placed.service
        services.append(
            {
                "id": service.id,
                "role": placed.role,
                "endpoint": topology.endpoint(service),
                "node": service.node,
            }
        )
    lb_sources = [str(net) for net in topology.load_balancer.trusted_by_access_points()]
    access_points: list[dict[str, Any]] = []
    for ap in topology.access_points:
        entry: dict[str, Any] = {
            "id": ap.id,
            "listen": ap.listen,
            "policy_services": topology.policy_order(ap),
        }
        if lb_sources:
            entry["trusted_proxies"] = lb_sources
        if ap.status_listen is not None:
            entry["status_listen"] = ap.status_listen
        entry.update(_metrics(ap))
        if ap.tls is not None:
            # Paths on the AP's node: the view names the key file, never holds the key.
            entry["tls"] = ap.tls.model_dump(mode="json")
        access_points.append(entry)
    relays = _access_point_networks(topology)
    policy_services: list[dict[str, Any]] = []
    for ps in topology.policy_services:
        entry = {
            "id": ps.id,
            "listen": ps.listen,
            "authentication": topology.authentication_order(ps),
        }
        if relays is not None:
            entry["trusted_proxies"] = [str(net) for net in relays]
        entry.update(_metrics(ps))
        policy_services.append(entry)
    user_db, session_db = topology.databases.urls()
    databases = {"user_db": user_db}
    if session_db is not None:
        databases["session_db"] = session_db
    if topology.databases.oath_db is not None:
        databases["oath_db"] = topology.databases.oath_db
    if topology.databases.oauth2_db is not None:
        databases["oauth2_db"] = topology.databases.oauth2_db
    local = topology.databases.local
    if topology.databases.outbox_db is not None:
        databases["outbox_db"] = topology.databases.outbox_db
    elif local is not None and topology.distribution_services:
        # The one cluster up makes next to the user DB (db_access gives each role its own).
        databases["outbox_db"] = local.url(outbox_database(local))
    authentication_services: list[dict[str, Any]] = []
    for auth in topology.authentication_services:
        entry = {"id": auth.id, "listen": auth.listen, **_metrics(auth)}
        if topology.distribution_services:
            entry["distribution"] = topology.distribution_order(auth)
        authentication_services.append(entry)
    document: dict[str, Any] = {
        "services": services,
        "access_points": access_points,
        "policy_services": policy_services,
        "authentication_services": authentication_services,
        "distribution_services": [
            {"id": dist.id, "listen": dist.listen, **_metrics(dist)}
            for dist in topology.distribution_services
        ],
        "databases": databases,
        "resources": [],
        "global_rule": "public",
    }
    if topology.demo_backend is not None:
        host, port = parse_listen(topology.demo_backend.listen)
        backend = f"http://{host_port(dialable(host), port)}"
        document["resources"] = [
            {"id": "demo", "hosts": ["*"], "path_prefix": "/", "backends": [backend]},
            {"id": "demo-public", "hosts": ["*"], "path_prefix": "/public", "backends": [backend]},
        ]
        document["resource_rules"] = dict(DEMO_RULES)
        if topology.demo_backend.smtp is not None:
            document["distribution"] = {"channels": [demo_mail_channel(topology.demo_backend.smtp)]}
            # As on the single node: a password and a code by e-mail, read at /public/mail.
            document["resources"].append(
                {
                    "id": "demo-secure-email",
                    "hosts": ["*"],
                    "path_prefix": "/secure-email",
                    "backends": [backend],
                }
            )
            document["resource_rules"]["demo-secure-email"] = {
                "auth_methods": ["password", "email_otp"]
            }
    return document


def demo_mail_channel(smtp: str) -> dict[str, Any]:
    """The demo mail server (plain SMTP on the demo backend) as a Distribution channel."""
    host, port = parse_listen(smtp)
    return {
        "type": "smtp",
        "name": "demo-mail",
        "host": dialable(host),
        "port": port,
        "security": "none",
        "sender": DEMO_SENDER,
    }


def installation_config(topology: Topology, source: str = "topology") -> InstallationConfig:
    """The installation configuration, validated as Admin validates it.

    Raises:
        ConfigError: the document is refused (a bug here: the topology was valid).
    """
    return validate(InstallationConfig, installation_document(topology), source)


def _access_point_networks(topology: Topology) -> list[Network] | None:
    """The APs' addresses, which relay the login portal to the Policy services and so are
    trusted for X-Forwarded-For (client addresses count for lockouts); None when one of them
    is a host name (the Policy services' default then applies)."""
    networks: list[Network] = []
    for ap in topology.access_points:
        host, _ = topology.address(ap)
        try:
            network = ipaddress.ip_network(host)
        except ValueError:
            return None
        if network not in networks:
            networks.append(network)
    return networks

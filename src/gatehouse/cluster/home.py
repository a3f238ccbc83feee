"""The home directory of a local cluster: its layout, and the files ``up`` writes there for
every process of the cluster to read.

::

    topology.yaml          the topology this home runs (saved by the first ``up``)
    administration.yaml    Admin's settings: listen address, the cluster's PostgreSQL
    databases.yaml         the multi-host URLs of the user DB and the OATH DB, so
                           ``gatehouse users|tokens ... --home`` works (as the CLI's
                           PostgreSQL role, over TLS)
    oath-seeds.key         the OATH seed keyring (``gatehouse tokens``, the Authentication
                           services: they run with this home)
    ca/                    the installation's internal CA (PostgreSQL's server certificates)
    pgpass/ROLE            each PostgreSQL role's password (libpq password files, 0600)
    policy/                the Policy services' home: databases.yaml with their own role's
                           URL, policy-csrf.key (shared by the Policy services: a login form
                           served by one is accepted by the other)
    admin.token            Admin's API token (written by Admin)
    policy-admin.token     the Policy services' session admin token (``users disable``)
    haproxy.cfg            written at every ``up`` (``gatehouse haproxy-config``)
    prometheus.yml         written at every ``up``: a scrape configuration listing every
                           service's ``metrics_listen`` (gatehouse.metrics.scrape_config)
    postgres/pg1, pg2      the PostgreSQL pair (pgN/data, pgN/tls: its certificate and key);
                           postgres/primary names the current primary
    state/ID/              each service's state directory (registration, last-known-good)
    run/NAME.pid           each running process; run/haproxy.sock (HAProxy's stats socket)
    logs/NAME.log          each process's output
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml

from gatehouse.administration.document import render_yaml
from gatehouse.administration.service import CONFIG_FILE
from gatehouse.cluster import db_access
from gatehouse.cluster.haproxy import haproxy_config
from gatehouse.cluster.topology import Topology
from gatehouse.internal.lkg import atomic_write
from gatehouse.metrics.scrape_config import Target, write_scrape_config
from gatehouse.node import ADMIN_TOKEN_FILE, STATE_DIR
from gatehouse.storage.home import FILE_NAME as DATABASES_FILE
from gatehouse.storage.permissions import private_directory

TOPOLOGY_FILE = "topology.yaml"
RUN_DIR = "run"
LOG_DIR = "logs"
PG_DIR = "postgres"
HAPROXY_CONFIG = "haproxy.cfg"
STATS_SOCKET = "haproxy.sock"
#: The Policy services' home (``--home``): their user DB URL (audit events) is their own role's.
POLICY_HOME = "policy"


def write_home(home: Path, topology: Topology, *, stats_socket: Path, source: str) -> None:
    """The directories and the files every process of the cluster reads.

    Args:
        stats_socket: HAProxy's stats socket, for its configuration.
        source: the topology file's name, for HAProxy's configuration header.
    """
    # Tokens, keys and logs are the owner's; as root, PostgreSQL runs as its own user and
    # must pass through to HOME/postgres.
    private_directory(home, traversable=os.geteuid() == 0)
    for directory in (home / RUN_DIR, home / LOG_DIR, home / STATE_DIR):
        private_directory(directory)
    saved = home / TOPOLOGY_FILE
    if not saved.exists():
        text = "# The topology of this cluster, saved by 'gatehouse cluster up'.\n"
        text += render_yaml(topology.model_dump(mode="json", exclude_none=True))
        atomic_write(saved, text.encode(), 0o644)
    user_db, session_db = topology.databases.urls()
    admin_db = user_db
    oath_db = topology.databases.oath_db
    outbox_db = topology.databases.outbox_db
    local = topology.databases.local
    if local is not None:
        # Each its own PostgreSQL role (db_access): the CLI here, Admin, the Policy services.
        user_db = db_access.role_url(home, local, db_access.CLI_ROLE)
        oath_db = db_access.role_url(
            home, local, db_access.CLI_ROLE, db_access.oath_database(local)
        )
        outbox_db = db_access.role_url(
            home, local, db_access.CLI_ROLE, db_access.outbox_database(local)
        )
        admin_db = db_access.role_url(home, local, db_access.ADMIN_ROLE)
        private_directory(home / POLICY_HOME)
        policy_db = {"user_db": db_access.role_url(home, local, db_access.POLICY_ROLE)}
        atomic_write(home / POLICY_HOME / DATABASES_FILE, yaml.safe_dump(policy_db).encode(), 0o644)
    databases: dict[str, str] = {"user_db": user_db}
    if session_db is not None:
        databases["session_db"] = session_db
    if oath_db is not None:
        databases["oath_db"] = oath_db
    if outbox_db is not None:
        databases["outbox_db"] = outbox_db
    atomic_write(home / DATABASES_FILE, yaml.safe_dump(databases).encode(), 0o644)
    admin = topology.administration
    settings: dict[str, dict[str, object]] = {
        "administration": {"id": admin.id, "listen": admin.listen, "database": admin_db}
    }
    if admin.metrics_listen is not None:
        settings["administration"]["metrics"] = {"listen": admin.metrics_listen}
    atomic_write(
        home / CONFIG_FILE,
        b"# Written by 'gatehouse cluster up' at every start.\n"
        + yaml.safe_dump(settings, sort_keys=False).encode(),
        0o644,
    )
    token = home / ADMIN_TOKEN_FILE
    if not token.exists():
        atomic_write(token, (secrets.token_urlsafe(32) + "\n").encode(), 0o600)
    config = haproxy_config(topology, stats_socket=stats_socket, source=source)
    atomic_write(home / HAPROXY_CONFIG, config.encode(), 0o644)
    write_scrape_config(home, metrics_targets(topology), "gatehouse cluster up")


def metrics_targets(topology: Topology) -> list[Target]:
    """Every service with a ``metrics_listen``, as Prometheus reaches it."""
    targets = []
    for placed in topology.placements():
        address = topology.metrics_address(placed.service)
        if address is not None:
            service = placed.service
            targets.append(Target(service.id, placed.role, service.node, *address))
    return targets

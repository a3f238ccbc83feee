"""Patroni's configuration, made from the topology: one YAML document per PostgreSQL node.

``gatehouse cluster up`` runs what :func:`node_config` makes for its loopback nodes (with the
passwords and certificate paths of the cluster's home); ``gatehouse patroni-config TOPOLOGY``
writes the same documents for production, where the passwords come from Patroni's
environment (``PATRONI_SUPERUSER_PASSWORD``, ``PATRONI_REPLICATION_PASSWORD``,
``PATRONI_RESTAPI_PASSWORD``) and never from a file we write.

What every node gets: etcd (its v2 API, see :func:`node_config`) as the consensus store,
``synchronous_mode`` (a commit returns only once the synchronous standby has it, and Patroni
promotes only that standby), ``failsafe_mode``, ``pg_rewind`` for a failed primary that comes
back, TLS 1.3 with SCRAM passwords only (replication included), and the REST API with basic
authentication on its unsafe endpoints (switchover, restart, reinitialize, configuration
changes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatehouse.cluster.topology import Topology
from gatehouse.cluster.topology_patroni import EtcdMember, PatroniSettings
from gatehouse.errors import ConfigError
from gatehouse.storage.engine import parse_url

SUPERUSER = "gatehouse"
REPLICATION_USER = "replicator"
REST_USER = "patroni"
#: The names of the two PostgreSQL nodes, in topology order.
NODE_NAMES = ("pg1", "pg2")
#: Where production keeps the server certificate, key and CA (``patroni-config``).
PRODUCTION_TLS_DIR = "/etc/patroni/tls"


@dataclass(frozen=True, slots=True)
class PgMember:
    """One PostgreSQL node under Patroni: where it listens and where its REST API does."""

    name: str
    host: str
    port: int
    rest_port: int
    data_dir: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def rest_address(self) -> str:
        return f"{self.host}:{self.rest_port}"


@dataclass(frozen=True, slots=True)
class NodeFiles:
    """Paths on the node: TLS files, Patroni's own password file, the log directory."""

    cert: str
    key: str
    ca: str
    pgpass: str
    log_dir: str | None = None  # None: PostgreSQL's default (stderr, Patroni's log)


@dataclass(frozen=True, slots=True)
class Secrets:
    """The passwords ``cluster up`` generates (production: Patroni's environment)."""

    superuser: str
    replication: str
    rest: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Everything one node's document depends on besides the node itself."""

    settings: PatroniSettings
    etcd: Sequence[EtcdMember]
    members: Sequence[PgMember]
    bin_dir: str
    fsync: bool = True
    extra_parameters: Mapping[str, str] = field(default_factory=dict)


def production_members(topology: Topology) -> list[PgMember]:
    """The two PostgreSQL nodes of a topology: its loopback ones with ``local``, else the
    hosts and ports of ``user_db``'s multi-host URL.

    Raises:
        ConfigError: the user DB's URL does not name two hosts.
    """
    databases = topology.databases
    settings = databases.patroni
    local = databases.local
    if local is not None:
        return [
            PgMember(name, local.HOST, port, rest, settings.data_dir)
            for name, port, rest in zip(
                NODE_NAMES, local.ports(), local.patroni_ports(), strict=True
            )
        ]
    assert databases.user_db is not None
    url = parse_url(databases.user_db)
    hosts = str(url.query.get("host", url.host or "")).split(",")
    ports = str(url.query.get("port", url.port or 5432)).split(",")
    hosts = [h.split(":")[0] for h in hosts if h]
    if len(hosts) != 2:
        raise ConfigError(
            [("databases.user_db", "name the two PostgreSQL nodes (host=db1,db2&port=P1,P2)")],
            "topology",
        )
    if len(ports) == 1:
        ports = ports * 2
    return [
        PgMember(name, host, int(port), settings.rest_port, settings.data_dir)
        for name, host, port in zip(NODE_NAMES, hosts, ports, strict=True)
    ]


def dcs_settings(settings: PatroniSettings) -> dict[str, Any]:
    """The cluster-wide (DCS) settings Patroni bootstraps with."""
    return {
        "ttl": settings.ttl,
        "loop_wait": settings.loop_wait,
        "retry_timeout": settings.retry_timeout,
        "primary_start_timeout": settings.primary_start_timeout,
        "maximum_lag_on_failover": settings.maximum_lag_on_failover,
        "synchronous_mode": True,
        "synchronous_mode_strict": settings.synchronous_mode_strict,
        "failsafe_mode": settings.failsafe_mode,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": {
                "wal_level": "replica",
                "hot_standby": "on",
                "max_wal_senders": 10,
                "max_replication_slots": 10,
                "wal_log_hints": "on",
                "wal_keep_size": "1GB",
                "max_slot_wal_keep_size": "1GB",
                # Acknowledged means on the standby and visible there (read-your-writes
                # after a failover); "on" is enough for durability alone.
                "synchronous_commit": "remote_apply",
            },
        },
    }


def _pg_hba(members: Sequence[PgMember]) -> list[str]:
    lines = []
    for host in sorted({m.host for m in members} | {"127.0.0.1"}):
        mask = "128" if ":" in host else "32"
        lines.append(f"hostssl replication {REPLICATION_USER} {host}/{mask} scram-sha-256")
        lines.append(f"hostssl all all {host}/{mask} scram-sha-256")
    if any(m.host not in ("127.0.0.1", "localhost") for m in members):
        lines.append("hostssl all all 0.0.0.0/0 scram-sha-256")
    lines.append("hostssl all all ::1/128 scram-sha-256")
    lines += ["hostnossl all all 0.0.0.0/0 reject", "hostnossl all all ::/0 reject"]
    return lines


def node_config(
    layout: Layout, member: PgMember, files: NodeFiles, secrets: Secrets | None
) -> dict[str, Any]:
    """Patroni's YAML document (as data) for ``member``; without ``secrets`` the passwords
    are left to Patroni's environment variables."""
    client_tls = {"sslmode": "verify-full", "sslrootcert": files.ca}
    superuser: dict[str, Any] = {"username": SUPERUSER, **client_tls}
    replication: dict[str, Any] = {"username": REPLICATION_USER, **client_tls}
    rest_auth: dict[str, Any] = {"username": REST_USER}
    if secrets is not None:
        superuser["password"] = secrets.superuser
        replication["password"] = secrets.replication
        rest_auth["password"] = secrets.rest
    parameters: dict[str, Any] = {
        "ssl": "on",
        "ssl_cert_file": files.cert,
        "ssl_key_file": files.key,
        "ssl_min_protocol_version": "TLSv1.3",
        "password_encryption": "scram-sha-256",
        "fsync": "on" if layout.fsync else "off",
        "cluster_name": member.name,
    }
    if files.log_dir is not None:
        parameters |= {
            "logging_collector": "on",
            "log_directory": files.log_dir,
            "log_filename": "postgres.log",
            "log_file_mode": "0600",
            "log_rotation_age": "0",
            "log_rotation_size": "0",
        }
    parameters |= dict(layout.extra_parameters)
    settings = layout.settings
    initdb: list[Any] = [{"encoding": "UTF8"}, "no-locale", "data-checksums"]
    return {
        "scope": settings.scope,
        "namespace": "/gatehouse/",
        "name": member.name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": member.rest_address,
            "connect_address": member.rest_address,
            # Safe endpoints (GET) stay open for health checks; unsafe ones need this.
            "authentication": rest_auth,
        },
        "ctl": {"insecure": False},
        # etcd's v2 API, not etcd3: Patroni 3.0.2 (Debian 12) renews the leader key on etcd3
        # with an unconditional put, so a primary that was frozen past the key's ttl takes
        # the key back from the standby just promoted (Patroni 3.0.3 fixed it, PR #2689);
        # on v2 the renewal is a compare-and-swap on our own name and fails: it demotes.
        "etcd": {
            "hosts": [f"{m.host}:{m.client_port}" for m in layout.etcd],
            "protocol": "http",
        },
        "bootstrap": {
            "dcs": dcs_settings(settings),
            "initdb": initdb,
        },
        "postgresql": {
            "listen": member.address,
            "connect_address": member.address,
            "data_dir": member.data_dir,
            "bin_dir": layout.bin_dir,
            "pgpass": files.pgpass,
            "use_unix_socket": False,
            "authentication": {"superuser": superuser, "replication": replication},
            "parameters": parameters,
            "pg_hba": _pg_hba(layout.members),
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
            "basebackup": [{"checkpoint": "fast"}],
        },
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def production_configs(topology: Topology) -> dict[str, dict[str, Any]]:
    """``patroni-config``: each node's document, by node name, without passwords.

    Raises:
        ConfigError: no etcd members, or the user DB's URL does not name two hosts.
    """
    databases = topology.databases
    members = production_members(topology)
    layout = Layout(databases.patroni, databases.etcd_members(), members, databases.patroni.bin_dir)
    files = NodeFiles(
        cert=f"{PRODUCTION_TLS_DIR}/server.crt",
        key=f"{PRODUCTION_TLS_DIR}/server.key",
        ca=f"{PRODUCTION_TLS_DIR}/root.crt",
        pgpass="/var/lib/postgresql/patroni.pgpass",
    )
    return {member.name: node_config(layout, member, files, None) for member in members}


PRODUCTION_HEADER = """\
# Patroni's configuration for {name}, written by 'gatehouse patroni-config {source}'.
# Passwords are not in this file: give them to Patroni in its environment, e.g. in a systemd
# drop-in readable by root only (Environment=PATRONI_SUPERUSER_PASSWORD=...):
#   PATRONI_SUPERUSER_PASSWORD, PATRONI_REPLICATION_PASSWORD, PATRONI_RESTAPI_PASSWORD
# Put the node's certificate and key (from the installation's CA, naming the host the
# services dial) and the CA certificate in {tls}. In production also give etcd and
# Patroni's REST API TLS client certificates from the internal CA (docs/operations.md,
# "Database HA (Patroni)"), and run a watchdog (watchdog.mode: required).
"""

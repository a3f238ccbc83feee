"""The topology's database HA settings: the etcd members Patroni keeps its leader key in, and
Patroni's timing (``databases.etcd``, ``databases.patroni``).

A leaf module (no import of the topology's): :mod:`.topology` puts these models in its
``Databases``; :mod:`.patroni` turns them into Patroni's YAML. Why the defaults are what they
are is in docs/operations.md ("Database HA (Patroni)").
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from gatehouse.config.base import Strict

Port = Annotated[int, Field(ge=1, le=65535)]
#: Patroni's settings in whole seconds.
WholeSeconds = Annotated[int, Field(ge=0, le=3600)]

#: Patroni's own defaults (what the benchmark compares the tuned settings with).
PATRONI_DEFAULTS = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "primary_start_timeout": 300}


class EtcdMember(Strict):
    """One member of the etcd cluster (three: one may be lost, a majority is two)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,30}$")
    host: str = Field(default="127.0.0.1", description="where the others reach it")
    client_port: Port = Field(description="clients (Patroni): http://HOST:client_port")
    peer_port: Port = Field(description="the other etcd members")

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


class PatroniSettings(Strict):
    """Patroni's timing and mode; the defaults are tuned for a fast, safe failover.

    Patroni requires ``ttl >= loop_wait + 2 * retry_timeout``: a leader that cannot reach etcd
    for ``retry_timeout`` gives up the lead (demotes) before its key can expire.
    """

    scope: str = Field(default="gatehouse", pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    ttl: WholeSeconds = Field(default=10, ge=4, description="the leader key's lifetime")
    loop_wait: WholeSeconds = Field(default=1, ge=1, description="seconds between HA loops")
    retry_timeout: WholeSeconds = Field(
        default=4, ge=1, description="etcd and PostgreSQL operation retry budget"
    )
    primary_start_timeout: WholeSeconds = Field(
        default=0,
        description="0: a crashed primary fails over at once instead of being restarted "
        "(safe with synchronous_mode: the standby has every acknowledged commit)",
    )
    failsafe_mode: bool = Field(
        default=True,
        description="the primary keeps serving while etcd has no majority, as long as it "
        "reaches every other Patroni member",
    )
    synchronous_mode_strict: bool = Field(
        default=False,
        description="true: no write is accepted while the synchronous standby is down",
    )
    maximum_lag_on_failover: int = Field(default=1048576, ge=0)
    rest_port: Port = Field(
        default=8008, description="Patroni's REST API port on each database node (production)"
    )
    data_dir: str = Field(default="/var/lib/postgresql/15/main", description="production")
    bin_dir: str = Field(default="/usr/lib/postgresql/15/bin", description="production")

    @model_validator(mode="after")
    def _timing(self) -> PatroniSettings:
        needed = self.loop_wait + 2 * self.retry_timeout
        if self.ttl < needed:
            raise ValueError(
                f"ttl ({self.ttl}) must be at least loop_wait + 2 * retry_timeout ({needed}): "
                "a leader that cannot reach etcd must demote before its key expires"
            )
        return self


def default_etcd(first_port: int, host: str = "127.0.0.1") -> list[EtcdMember]:
    """Three members on the six ports from ``first_port`` (client, peer for each)."""
    return [
        EtcdMember(
            name=f"etcd{i + 1}",
            host=host,
            client_port=first_port + 2 * i,
            peer_port=first_port + 2 * i + 1,
        )
        for i in range(3)
    ]


#: Where quiet ports are looked for when the kernel's ephemeral range cannot be read.
_EPHEMERAL_FALLBACK = (32768, 60999)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _EPHEMERAL_FALLBACK


#: ``FIRST-LAST``: where :func:`quiet_free_ports` looks instead of below the ephemeral range.
#: Several drills or test runs at once on one machine each get a block of their own (the
#: tests give each of their parallel workers one): otherwise two of them may pick the same
#: port while neither has bound it yet.
QUIET_PORTS_ENV = "GATEHOUSE_QUIET_PORTS"


def _quiet_candidates() -> list[int]:
    span = os.environ.get(QUIET_PORTS_ENV, "").strip()
    if span:
        first, _, last = span.partition("-")
        try:
            low, high = int(first), int(last)
        except ValueError:
            low = high = 0
        if not 1024 <= low <= high <= 65535:
            raise OSError(f"{QUIET_PORTS_ENV}={span!r}: not a port range FIRST-LAST in 1024-65535")
        return list(range(low, high + 1))
    low, high = _ephemeral_range()
    return list(range(20000, low)) if low > 21000 else list(range(high + 1, 65535))


def quiet_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that are free now and outside the kernel's ephemeral range,
    so that no outgoing connection (etcd's peers, Patroni's clients) takes one as its local
    port before the server meant for it binds it (drills and tests on one busy machine).
    :data:`QUIET_PORTS_ENV` narrows where they are looked for."""
    candidates = _quiet_candidates()
    random.shuffle(candidates)
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for port in candidates:
            probe = socket.socket()
            try:
                probe.bind((host, port))
            except OSError:
                probe.close()
                continue
            held.append(probe)
            ports.append(port)
            if len(ports) == count:
                return ports
    finally:
        for probe in held:
            probe.close()
    raise OSError(f"fewer than {count} free ports on {host}")

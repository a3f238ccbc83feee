"""Patroni's REST API as the cluster reads and drives it: who leads, who is the synchronous
standby and how far behind, and a planned switchover (basic authentication: an unsafe
endpoint). Loopback and plain HTTP in the local cluster; see docs/operations.md for what
production adds (TLS with client certificates from the internal CA).
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatehouse.storage.postgres_ha.errors import ReplicationError

TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class PatroniMember:
    """One member as Patroni's ``GET /cluster`` lists it."""

    name: str
    role: str  # leader, sync_standby, replica (standby_leader in a standby cluster)
    state: str  # running, streaming, starting, stopped, crashed, ...
    lag: int | None  # bytes behind the leader (None: unknown, or the leader)
    timeline: int | None


@dataclass(frozen=True, slots=True)
class PatroniView:
    """The whole Patroni cluster as one member's REST API answered; ``source`` names it."""

    members: tuple[PatroniMember, ...]
    source: str
    failsafe: bool = False

    @property
    def leader(self) -> str | None:
        return next((m.name for m in self.members if m.role == "leader"), None)

    @property
    def sync_standby(self) -> str | None:
        return next((m.name for m in self.members if m.role == "sync_standby"), None)

    def member(self, name: str) -> PatroniMember | None:
        return next((m for m in self.members if m.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "leader": self.leader,
            "sync_standby": self.sync_standby,
            "members": [
                {"name": m.name, "role": m.role, "state": m.state, "lag": m.lag}
                for m in self.members
            ],
        }


def _request(
    address: tuple[str, int],
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _lag(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_cluster(
    addresses: Sequence[tuple[str, int]], timeout: float = TIMEOUT
) -> PatroniView | None:
    """``GET /cluster`` from the first member that answers; None when none does."""
    for address in addresses:
        try:
            status, body = _request(address, "GET", "/cluster", timeout=timeout)
        except (OSError, http.client.HTTPException):
            continue
        if status != 200:
            continue
        try:
            data = json.loads(body)
        except ValueError:
            continue
        members = tuple(
            PatroniMember(
                name=str(m.get("name")),
                role=str(m.get("role", "")),
                state=str(m.get("state", "")),
                lag=_lag(m.get("lag")),
                timeline=m.get("timeline") if isinstance(m.get("timeline"), int) else None,
            )
            for m in data.get("members", [])
        )
        return PatroniView(members, f"{address[0]}:{address[1]}", bool(data.get("failsafe")))
    return None


def node_state(address: tuple[str, int], timeout: float = TIMEOUT) -> dict[str, Any] | None:
    """``GET /patroni`` of one member (its role, state, timeline); None without an answer."""
    try:
        _status, body = _request(address, "GET", "/patroni", timeout=timeout)
        answer = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


def switchover(address: tuple[str, int], leader: str, candidate: str, auth: tuple[str, str]) -> str:
    """Ask Patroni (at ``address``) to hand the lead from ``leader`` to ``candidate`` now;
    its answer's text.

    Raises:
        ReplicationError: refused (the answer says why) or no answer.
    """
    try:
        status, body = _request(
            address,
            "POST",
            "/switchover",
            {"leader": leader, "candidate": candidate},
            auth=auth,
            timeout=60.0,
        )
    except (OSError, http.client.HTTPException) as exc:
        raise ReplicationError(f"Patroni at {address[0]}:{address[1]}: no answer ({exc})") from None
    text = body.decode(errors="replace").strip()
    if status != 200:
        raise ReplicationError(f"Patroni refused the switchover ({status}): {text}")
    return text

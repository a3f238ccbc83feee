"""The Access Point's status listener (``status_listen``): the full health answer, off the
public port.

The public ``GET /_gatehouse/health`` says only ``{"status":"ok"}`` (200) or
``{"status":"draining"}`` (503): enough for a load balancer, nothing about the installation.
The details — the AP's id, the configuration version it runs (``config_version``,
``config_source``, ``local_version``) and where its decisions go (``"policy": {"using",
"endpoints"}``) — are answered here, to ``gatehouse cluster status`` and operators:

- ``GET /_gatehouse/health`` or ``GET /internal/v1/health`` (HEAD too) → 200 with the
  details (503 with ``"status": "draining"`` while the worker drains); any other path 404;
  another method 405. One request per connection: the answer closes it.
- With internal credentials the listener speaks mutual TLS (TLS 1.3, the internal CA): a
  client without a certificate fails the handshake, and only peers whose certificate names
  the ``operator`` or ``administration`` role get an answer (403 for the others). Without
  credentials it is plaintext, and only on a loopback address (:func:`check_status_listen`).
- Bounded: a request head larger than :data:`MAX_HEAD` gets 431, one that takes longer than
  :data:`READ_TIMEOUT` is dropped, and at most :data:`MAX_CONNECTIONS` are open per worker.

Each worker listens on the same address with ``SO_REUSEPORT``, like the public socket; the
answer is that worker's (the kernel picks one).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from gatehouse.access_point import pages
from gatehouse.config.access_point import AccessPointSettings, is_loopback, parse_listen
from gatehouse.errors import ConfigError
from gatehouse.internal.one_request import OneRequestProtocol, head_end, request_line
from gatehouse.trust.identity import ADMINISTRATION, OPERATOR
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import peer_of_ssl

if TYPE_CHECKING:
    from gatehouse.access_point.connection import WorkerState

__all__ = [
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "READERS",
    "READ_TIMEOUT",
    "STATUS_PATHS",
    "StatusProtocol",
    "check_status_listen",
    "is_loopback",
]

#: The largest request head read (request line and fields).
MAX_HEAD = 8 << 10
#: Seconds a client has to send its request head (and, with TLS, finish the handshake).
READ_TIMEOUT = 5.0
#: Status connections open at once per worker; more are closed at once.
MAX_CONNECTIONS = 64
#: The paths answered with the details.
STATUS_PATHS = frozenset({b"/_gatehouse/health", b"/internal/v1/health"})
#: Certificate roles that may read the details over mutual TLS.
READERS = frozenset({OPERATOR, ADMINISTRATION})

_JSON = b"application/json"


def check_status_listen(settings: AccessPointSettings, tls: bool, source: str) -> None:
    """Refuse a plaintext status listener that other machines could reach.

    Raises:
        ConfigError: ``status_listen`` is not on loopback and ``tls`` (internal credentials)
            is false.
    """
    if settings.status_listen is None or tls:
        return
    host, _ = parse_listen(settings.status_listen)
    if not is_loopback(host):
        message = (
            f"{host} is not a loopback address: without internal TLS credentials (--tls DIR, "
            "or enrolled with the Administration service) the status listener shows the "
            "Access Point's details to anyone who reaches it; use 127.0.0.1:PORT or give "
            "the Access Point its credentials"
        )
        raise ConfigError([("access_point.status_listen", message)], source)


def _answer(status: int, body: bytes, head_only: bool = False) -> bytes:
    return pages.response(status, body, _JSON, close=True, head_only=head_only)


def _error(status: int, message: str) -> bytes:
    return _answer(status, json.dumps({"error": pages.reason(status), "message": message}).encode())


class StatusProtocol(OneRequestProtocol):
    """One connection to the status listener: read one request head, answer, close."""

    max_connections = MAX_CONNECTIONS
    read_timeout = READ_TIMEOUT

    def __init__(
        self,
        state: WorkerState,
        tls: bool,
        connections: set[asyncio.Transport],
        revocations: Revocations | None = None,
    ) -> None:
        super().__init__(connections)
        self.state = state
        self.tls = tls
        #: Certificates the Administration service revoked: refused like a missing one.
        self.revocations = revocations

    def timer_loop(self) -> asyncio.AbstractEventLoop:
        return self.state.loop

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return
        self.buffer += data
        end = head_end(self.buffer)
        if end < 0 or end > MAX_HEAD:
            if len(self.buffer) > MAX_HEAD:
                self.send(_error(431, "The request head is too large."))
            return
        self.send(self.respond(self.buffer[:end]))

    def respond(self, head: bytes) -> bytes:
        """The complete answer to a request head."""
        request = request_line(head)
        if request is None:
            return _error(400, "The request could not be understood.")
        method, target = request
        if self.tls:
            assert self.transport is not None
            peer = peer_of_ssl(self.transport.get_extra_info("ssl_object"))
            if self.revocations is not None and self.revocations.revoked(peer):
                peer = None
            if peer is None or peer.role not in READERS:
                who = "no valid Gatehouse certificate" if peer is None else str(peer.identity)
                return _error(
                    403, f"The status is for operator and administration certificates, not {who}."
                )
        if target.split(b"?", 1)[0] not in STATUS_PATHS:
            return _error(404, "There is nothing at this address.")
        if method not in (b"GET", b"HEAD"):
            return _error(405, "Use GET or HEAD.")
        state = self.state
        body = state.runtime.health()
        status = 200
        if state.draining:
            status = 503
            body = body.replace(b'"status": "ok"', b'"status": "draining"', 1)
        return _answer(status, body, method == b"HEAD")

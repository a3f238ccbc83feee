"""TLS contexts for internal links: TLS 1.3 only, certificates from the internal CA, both
ends authenticated.

A service keeps its credentials in one directory::

    DIR/          0700
      ca.pem      0644  the installation's CA certificate (pinned at enrolment)
      cert.pem    0644  this service's certificate (names its role and id)
      key.pem     0600  its private key (made here, never sent anywhere)

:class:`Credentials` builds the server and client contexts once and, on :meth:`reload`,
loads the renewed certificate into the *same* contexts: new handshakes use it at once, open
connections keep going, nothing restarts.

Host names are not checked: a client checks the identity in the server's certificate (its
role, and its id when known) with :func:`check_server`, right after the handshake.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from gatehouse.errors import GatehouseError
from gatehouse.trust.identity import Identity, IdentityError, Peer, identity_of, peer_of_der
from gatehouse.trust.revocation import Revocations

__all__ = [
    "CA_FILE",
    "CERT_FILE",
    "KEY_FILE",
    "ClientTLS",
    "Credentials",
    "PeerRefused",
    "check_server",
    "peer_of_ssl",
    "write_credentials",
]

log = logging.getLogger("gatehouse.trust")

CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


class PeerRefused(GatehouseError):
    """The other end of an internal link is not who it must be."""


def peer_of_ssl(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> Peer | None:
    """The authenticated peer of a TLS connection; None without a (Gatehouse) certificate."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return peer_of_der(der)
    except IdentityError:
        return None


def check_server(
    ssl_object: ssl.SSLObject | ssl.SSLSocket | None,
    roles: Collection[str],
    service_id: str | None = None,
) -> Peer:
    """The server's identity, if it has one of ``roles`` (and is ``service_id`` when given).

    Raises:
        PeerRefused: saying who it is and what was expected.
    """
    peer = peer_of_ssl(ssl_object)
    if peer is None:
        raise PeerRefused("the server showed no Gatehouse certificate")
    if peer.role not in roles:
        raise PeerRefused(f"the server is {peer.identity}, not {' or '.join(sorted(roles))}")
    if service_id is not None and peer.service_id != service_id:
        raise PeerRefused(f"the server is {peer.identity}, not {service_id!r}")
    return peer


def _base(purpose: int) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    if purpose == ssl.PROTOCOL_TLS_SERVER:
        # No TLS 1.3 session tickets: no internal client resumes a session (pooled
        # connections instead), so the two tickets OpenSSL sends after every handshake were
        # work for nothing: a third of the server's CPU for a handshake (1,090 -> 740 µs,
        # bench/mtls_cpu.py). Every connection keeps authenticating with its certificate.
        context.num_tickets = 0
    return context


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """How a failover client speaks to one service: the client context (its own
    certificate, the pinned CA), the roles the server may have, and, per endpoint in
    configured order, the service id it must be (None: any of ``roles``)."""

    context: ssl.SSLContext
    roles: frozenset[str]
    ids: tuple[str | None, ...] = ()
    revocations: Revocations | None = None

    def expected_id(self, index: int) -> str | None:
        return self.ids[index] if index < len(self.ids) else None

    def check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket | None, index: int) -> Peer:
        """The server of endpoint ``index``, if it is who it must be and not revoked.

        Raises:
            PeerRefused: saying why.
        """
        peer = check_server(ssl_object, self.roles, self.expected_id(index))
        if self.revocations is not None and self.revocations.revoked(peer):
            raise PeerRefused(f"the server's certificate (serial {peer.serial:x}) is revoked")
        return peer


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    identity: Identity
    serial: int
    not_before: datetime
    not_after: datetime


class Credentials:
    """A service's internal TLS credentials, from a directory (see the module doc).

    Raises (at construction and :meth:`reload`):
        GatehouseError: a file is missing or unusable, naming it.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.server = _base(ssl.PROTOCOL_TLS_SERVER)
        self.server.verify_mode = ssl.CERT_REQUIRED
        self.client = _base(ssl.PROTOCOL_TLS_CLIENT)
        self.client.check_hostname = False  # the identity is checked instead: check_server
        self.client.verify_mode = ssl.CERT_REQUIRED
        for context in (self.server, self.client):
            self._load_ca(context)
        self.info = self._load_chain()

    @property
    def ca_path(self) -> Path:
        return self.directory / CA_FILE

    @property
    def cert_path(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def identity(self) -> Identity:
        return self.info.identity

    def optional_client_server_context(self) -> ssl.SSLContext:
        """A server context that asks for a client certificate but does not require one
        (the Administration service: a joining service has none yet)."""
        context = _base(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = ssl.CERT_OPTIONAL
        self._load_ca(context)
        context.load_cert_chain(self.cert_path, self.key_path)
        self._extra = [*getattr(self, "_extra", []), context]
        return context

    def changed(self) -> bool:
        """Whether the certificate file is another one than the one loaded."""
        try:
            stat = self.cert_path.stat()
        except OSError:
            return False
        return (stat.st_mtime_ns, stat.st_ino) != self._stamp

    def reload(self) -> CertificateInfo:
        """Load the (renewed) certificate and key into every context made here."""
        self.info = self._load_chain()
        for context in getattr(self, "_extra", []):
            context.load_cert_chain(self.cert_path, self.key_path)
        log.info(
            "internal certificate of %s loaded (serial %x, valid until %s)",
            self.info.identity,
            self.info.serial,
            self.info.not_after.isoformat(timespec="seconds"),
        )
        return self.info

    def _load_ca(self, context: ssl.SSLContext) -> None:
        try:
            context.load_verify_locations(cafile=str(self.ca_path))
        except (OSError, ssl.SSLError) as exc:
            raise GatehouseError(
                f"{self.ca_path}: cannot load the internal CA: {_why(exc)}"
            ) from None

    def _load_chain(self) -> CertificateInfo:
        try:
            stat = self.cert_path.stat()
            self._stamp = (stat.st_mtime_ns, stat.st_ino)
            pem = self.cert_path.read_bytes()
            certificate = x509.load_pem_x509_certificate(pem)
            identity = identity_of(certificate)
        except OSError as exc:
            raise GatehouseError(f"{self.cert_path}: {exc.strerror}") from None
        except (ValueError, IdentityError) as exc:
            raise GatehouseError(f"{self.cert_path}: not a Gatehouse certificate ({exc})") from None
        for context in (self.server, self.client):
            try:
                context.load_cert_chain(self.cert_path, self.key_path)
            except (OSError, ssl.SSLError) as exc:
                raise GatehouseError(
                    f"{self.key_path}: cannot load the key of {self.cert_path}: {_why(exc)}"
                ) from None
        return CertificateInfo(
            identity,
            certificate.serial_number,
            certificate.not_valid_before_utc,
            certificate.not_valid_after_utc,
        )


def write_credentials(
    directory: Path, ca_pem: bytes, cert_pem: bytes, key_pem: bytes | None
) -> None:
    """Write a credentials directory atomically, file by file (the key first, so a crash
    never leaves a certificate without its key; ``key_pem=None`` keeps the key there)."""
    from gatehouse.internal.lkg import atomic_write

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if key_pem is not None:
        atomic_write(directory / KEY_FILE, key_pem, 0o600)
    atomic_write(directory / CA_FILE, ca_pem, 0o644)
    atomic_write(directory / CERT_FILE, cert_pem, 0o644)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)

"""The certificates made next to the internal CA, on the Administration service's machine:
the Administration service's own (its API is served over TLS) and the operator's command
line's (``gatehouse config``, ``gatehouse nodes``, ``gatehouse up``, ``gatehouse cluster``).

::

    HOME/ca/                   the internal CA (gatehouse.trust.ca): ca.key 0600, ca.pem
    HOME/tls/administration/   the Administration service's credentials (gatehouse.trust.tls)
    HOME/tls/operator/         the command line's credentials

Each is issued when missing, when it is not the CA's or not the identity's, or when less
than a third of its life is left; both are issued from the CA key directly (no CSR travels).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import ssl
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gatehouse.errors import GatehouseError
from gatehouse.trust.ca import (
    CA_CERT_FILE,
    CA_DIR,
    CA_KEY_FILE,
    DEFAULT_LIFETIME,
    CertificateAuthority,
    needs_renewal,
    renew_at,
)
from gatehouse.trust.identity import (
    ADMINISTRATION,
    OPERATOR,
    Identity,
    IdentityError,
    identity_of,
)
from gatehouse.trust.tls import CA_FILE, CERT_FILE, KEY_FILE, Credentials, write_credentials

__all__ = [
    "ADMIN_TLS_DIR",
    "OPERATOR_IDENTITY",
    "OPERATOR_TLS_DIR",
    "AdminTLS",
    "admin_identity",
    "admin_tls",
    "ca_dir",
    "ensure_credentials",
    "load_ca",
    "operator_context",
    "operator_tls",
]

ADMIN_TLS_DIR = Path("tls") / "administration"
OPERATOR_TLS_DIR = Path("tls") / "operator"
OPERATOR_IDENTITY = Identity(OPERATOR, "cli")
_LOCK = ".lock"
#: While serving, the certificate is looked at least this often (seconds)...
RENEW_CHECK_CAP = 3600.0
#: ... and again this soon after a failed renewal.
RENEW_RETRY = 60.0

log = logging.getLogger("gatehouse.administration")


def admin_identity(service_id: str) -> Identity:
    return Identity(ADMINISTRATION, service_id)


def ca_dir(home: Path) -> Path:
    return home / CA_DIR


def load_ca(home: Path) -> CertificateAuthority:
    """The installation's CA in ``home``.

    Raises:
        GatehouseError: there is none (the Administration service makes it when it first
            starts), or it cannot be read.
    """
    directory = ca_dir(home)
    if not (directory / CA_KEY_FILE).exists():
        raise GatehouseError(
            f"no internal CA in {directory}: the Administration service makes it when it "
            "first starts (is --home the Administration service's home?)"
        )
    return CertificateAuthority.load(directory)


def _usable(directory: Path, ca_pem: bytes, identity: Identity, now: datetime) -> bool:
    """Whether ``directory`` holds a certificate of ``identity`` from this CA with more than
    a third of its life left, and its key."""
    try:
        if (directory / CA_FILE).read_bytes() != ca_pem or not (directory / KEY_FILE).exists():
            return False
        certificate = x509.load_pem_x509_certificate((directory / CERT_FILE).read_bytes())
        if identity_of(certificate) != identity:
            return False
    except (OSError, ValueError, IdentityError):
        return False
    return not needs_renewal(certificate.not_valid_before_utc, certificate.not_valid_after_utc, now)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One process at a time writes ``directory`` (two commands started at once)."""
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_credentials(
    directory: Path,
    ca: CertificateAuthority | Path,
    identity: Identity,
    *,
    hosts: Sequence[str] = (),
    lifetime: timedelta = DEFAULT_LIFETIME,
    now: datetime | None = None,
) -> bool:
    """Issue ``identity`` a new key and certificate in ``directory`` unless a usable one is
    there; True when one was issued. ``ca``: the CA, or its directory (read only when a
    certificate must be issued).

    Raises:
        GatehouseError: the CA cannot be read, or the files cannot be written.
    """
    now = now or datetime.now(UTC)
    if isinstance(ca, CertificateAuthority):
        ca_pem = ca.certificate_pem
    else:
        try:
            ca_pem = (ca / CA_CERT_FILE).read_bytes()
        except OSError as exc:
            raise GatehouseError(f"cannot read {ca / CA_CERT_FILE}: {exc.strerror}") from None
    if _usable(directory, ca_pem, identity, now):
        return False
    try:
        with _locked(directory):
            if _usable(directory, ca_pem, identity, now):
                return False  # another process has just issued it
            authority = (
                ca if isinstance(ca, CertificateAuthority) else CertificateAuthority.load(ca)
            )
            key, cert = authority.issue_key_pair(identity, lifetime=lifetime, hosts=hosts)
            write_credentials(directory, authority.certificate_pem, cert, key)
    except OSError as exc:
        raise GatehouseError(f"cannot write credentials in {directory}: {exc.strerror}") from None
    return True


def operator_context(home: Path) -> ssl.SSLContext:
    """The command line's client context: it verifies the Administration service against
    HOME/ca/ca.pem and presents the operator's certificate (made or renewed here).

    Raises:
        GatehouseError: no CA in ``home``, or files that cannot be read or written.
    """
    directory = ca_dir(home)
    if not (directory / CA_CERT_FILE).exists():
        raise GatehouseError(
            f"no internal CA in {directory}: the Administration service makes it when it "
            "first starts (is --home the Administration service's home?)"
        )
    if not os.access(directory / CA_KEY_FILE, os.R_OK):
        tls = home / OPERATOR_TLS_DIR
        if not (tls / CERT_FILE).exists():
            raise GatehouseError(
                f"cannot read {directory / CA_KEY_FILE}: run this command as the user the "
                "Administration service runs as"
            )
    ensure_credentials(home / OPERATOR_TLS_DIR, directory, OPERATOR_IDENTITY)
    return Credentials(home / OPERATOR_TLS_DIR).client


def operator_tls(home: Path) -> ssl.SSLContext | None:
    """:func:`operator_context` when ``home`` holds the installation's CA (this is the
    Administration service's machine), else None (a home without an Administration
    service: plaintext development services).

    Raises:
        GatehouseError: the CA is there but the credentials cannot be made or read.
    """
    if not (ca_dir(home) / CA_CERT_FILE).exists():
        return None
    return operator_context(home)


def certificate_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _hosts(host: str) -> list[str]:
    """The names a listener on ``host`` is reached by, for the certificate's SANs."""
    if host in ("", "0.0.0.0", "::"):
        return ["127.0.0.1", "localhost"]
    return [host]


class AdminTLS:
    """The Administration service's TLS: the CA, its credentials and its server context
    (a client certificate requested, not required: a joining service has none yet)."""

    def __init__(
        self, home: Path, service_id: str, host: str, lifetime: timedelta = DEFAULT_LIFETIME
    ) -> None:
        self.ca, made = CertificateAuthority.load_or_create(ca_dir(home))
        if made:
            log.info("internal CA created in %s (%s)", ca_dir(home), self.ca.fingerprint)
        self.directory = home / ADMIN_TLS_DIR
        self.identity = admin_identity(service_id)
        self.hosts = _hosts(host)
        self.lifetime = lifetime
        self.renew()
        self.credentials = Credentials(self.directory)
        self.context = self.credentials.optional_client_server_context()

    def renew(self) -> bool:
        """Issue a new certificate if less than a third of its life is left; True if so."""
        return ensure_credentials(
            self.directory, self.ca, self.identity, hosts=self.hosts, lifetime=self.lifetime
        )

    async def keep_renewed(self) -> None:
        """Renew the certificate while serving (new handshakes use the new one)."""
        while True:
            info = self.credentials.info
            due = renew_at(info.not_before, info.not_after) - datetime.now(UTC)
            await asyncio.sleep(min(max(due.total_seconds(), 1.0), RENEW_CHECK_CAP))
            try:
                if await asyncio.to_thread(self.renew):
                    self.credentials.reload()
            except GatehouseError as exc:
                log.error("cannot renew the Administration service's certificate: %s", exc)
                await asyncio.sleep(RENEW_RETRY)


def admin_tls(
    home: Path, service_id: str, host: str, lifetime: timedelta = DEFAULT_LIFETIME
) -> AdminTLS:
    """The Administration service's CA and TLS (both made on the first start).

    Raises:
        GatehouseError: the CA or the credentials cannot be read or written.
    """
    return AdminTLS(home, service_id, host, lifetime)

"""The installation's internal certificate authority (EC P-256, ``cryptography`` x509).

The CA key lives only on the Administration service's disk (``HOME/ca/ca.key``, mode 0600):
never in a database row, never in a view. Every internal certificate it issues names exactly
one identity (``identity.py``) in a URI SAN taken from the join token or the current
certificate, never from the request: a CSR only proves the key. ::

    HOME/ca/          0700
      ca.key          0600  the CA's private key (PEM, PKCS#8)
      ca.pem          0644  the CA certificate every service pins

Pure functions and one small class; the Administration service does the I/O around them.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatehouse.errors import GatehouseError
from gatehouse.trust.identity import Identity

__all__ = [
    "CA_CERT_FILE",
    "CA_DIR",
    "CA_KEY_FILE",
    "DEFAULT_LIFETIME",
    "MAX_LIFETIME",
    "CertificateAuthority",
    "CsrInvalid",
    "fingerprint",
    "fingerprint_of_pem",
    "key_pem",
    "load_certificate",
    "make_csr",
    "make_key",
    "needs_renewal",
    "renew_at",
]

CA_DIR = "ca"
CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.pem"
#: Service certificates: seven days, renewed at about two thirds (the Administration service
#: may be down two days with no effect).
DEFAULT_LIFETIME = timedelta(days=7)
MAX_LIFETIME = timedelta(days=90)
CA_LIFETIME = timedelta(days=3650)
#: Clocks of two machines may differ a little: certificates start a few minutes early.
BACKDATE = timedelta(minutes=5)


class CsrInvalid(GatehouseError):
    """A certificate signing request is malformed, badly signed or has an unfit key."""


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A PEM CSR proving ``key``; what it names is ignored by the CA."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gatehouse")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def fingerprint(certificate: x509.Certificate) -> str:
    """``sha256:`` and the URL-safe base64 (no padding) of the DER's SHA-256."""
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    return "sha256:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issued_at(not_before: datetime, not_after: datetime) -> datetime:
    """When a certificate was issued: its start without the few minutes it is backdated."""
    start = not_before + BACKDATE
    return start if start < not_after else not_before


def renew_at(not_before: datetime, not_after: datetime, fraction: float = 2 / 3) -> datetime:
    """When ``fraction`` of a certificate's life (from its issue) has passed."""
    start = issued_at(not_before, not_after)
    return start + (not_after - start) * fraction


def needs_renewal(not_before: datetime, not_after: datetime, now: datetime | None = None) -> bool:
    """Less than a third of the certificate's life is left (or it has expired)."""
    return (now or datetime.now(UTC)) >= renew_at(not_before, not_after)


def load_certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def fingerprint_of_pem(pem: bytes) -> str:
    return fingerprint(load_certificate(pem))


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(
        cls, name: str = "Gatehouse internal CA", now: datetime | None = None
    ) -> CertificateAuthority:
        now = now or datetime.now(UTC)
        key = make_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gatehouse"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{name} {secrets.token_hex(4)}"),
            ]
        )
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    # files -----------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA kept in ``directory``.

        Raises:
            GatehouseError: a file is missing, unreadable or not a CA of this shape.
        """
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            certificate = load_certificate(cert_path.read_bytes())
        except OSError as exc:
            raise GatehouseError(
                f"cannot read the internal CA in {directory}: {exc.strerror}"
            ) from None
        except ValueError:
            raise GatehouseError(f"the internal CA in {directory} is damaged") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise GatehouseError(f"{key_path}: not an EC private key")
        if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
            raise GatehouseError(f"{key_path} is not the key of {cert_path}")
        return cls(key, certificate)

    @classmethod
    def load_or_create(cls, directory: Path) -> tuple[CertificateAuthority, bool]:
        """The CA in ``directory``, made there first if there is none; True if made now."""
        if (directory / CA_KEY_FILE).exists():
            return cls.load(directory), False
        ca = cls.create()
        ca.save(directory)
        return ca, True

    def save(self, directory: Path) -> None:
        from gatehouse.internal.lkg import atomic_write

        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        atomic_write(directory / CA_KEY_FILE, key_pem(self.key), 0o600)
        atomic_write(directory / CA_CERT_FILE, self.certificate_pem, 0o644)

    # what the CA shows -------------------------------------------------------------------
    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)

    # issuing ----------------------------------------------------------------------------
    def issue(
        self,
        csr_pem: bytes | str,
        identity: Identity,
        *,
        lifetime: timedelta = DEFAULT_LIFETIME,
        hosts: Sequence[str] = (),
        now: datetime | None = None,
    ) -> x509.Certificate:
        """A certificate for the key ``csr_pem`` proves, naming ``identity``.

        ``hosts`` (DNS names or IP addresses) are added as SANs for clients that check host
        names (PostgreSQL's ``verify-full``); Gatehouse services check the URI.

        Raises:
            CsrInvalid: the CSR cannot be read, its signature is wrong or its key unfit.
        """
        if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
            raise ValueError(f"lifetime must be more than 0 and at most {MAX_LIFETIME.days} days")
        data = csr_pem.encode("ascii", "replace") if isinstance(csr_pem, str) else csr_pem
        try:
            csr = x509.load_pem_x509_csr(data)
        except ValueError:
            raise CsrInvalid("csr: not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise CsrInvalid("csr: the signature does not match its key")
        public = csr.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            if public.curve.name not in ("secp256r1", "secp384r1"):
                raise CsrInvalid(f"csr: curve {public.curve.name} is not accepted (use P-256)")
        elif not isinstance(public, ed25519.Ed25519PublicKey):
            raise CsrInvalid("csr: the key must be EC P-256 (or Ed25519)")
        return self.sign(public, identity, lifetime=lifetime, hosts=hosts, now=now)

    def sign(
        self,
        public: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
        identity: Identity,
        *,
        lifetime: timedelta = DEFAULT_LIFETIME,
        hosts: Sequence[str] = (),
        now: datetime | None = None,
    ) -> x509.Certificate:
        now = now or datetime.now(UTC)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        not_after = min(now + lifetime, self.certificate.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gatehouse"),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role),
                        x509.NameAttribute(NameOID.COMMON_NAME, identity.service_id),
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue_key_pair(
        self,
        identity: Identity,
        *,
        lifetime: timedelta = DEFAULT_LIFETIME,
        hosts: Sequence[str] = (),
    ) -> tuple[bytes, bytes]:
        """A fresh key and its certificate, both PEM: for what runs next to the CA (the
        Administration service itself, the operator's command line)."""
        key = make_key()
        certificate = self.sign(key.public_key(), identity, lifetime=lifetime, hosts=hosts)
        return key_pem(key), certificate.public_bytes(serialization.Encoding.PEM)

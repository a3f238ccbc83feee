"""Who a service is on the internal network: a role and a service id, carried in its
certificate as one URI subject alternative name ``spiffe://gatehouse/ROLE/ID``.

A leaf module: the server routes, the failover client, the CA and the Administration service
all read identities through it, so the format is written down in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

__all__ = [
    "ACCESS_POINT",
    "ADMINISTRATION",
    "AUTHENTICATION",
    "DATABASE",
    "DISTRIBUTION",
    "OPERATOR",
    "POLICY",
    "ROLES",
    "SERVICE_ROLES",
    "Identity",
    "IdentityError",
    "Peer",
    "identity_of",
    "peer_of_der",
]

ACCESS_POINT = "access_point"
POLICY = "policy"
AUTHENTICATION = "authentication"
#: The Distribution service: delivers one-time codes and invitations (e-mail, SMS).
DISTRIBUTION = "distribution"
ADMINISTRATION = "administration"
#: The operator's command line (``gatehouse users``, ``gatehouse cluster status``): its
#: certificate is made on the Administration service's machine, from the CA there.
OPERATOR = "operator"
#: A PostgreSQL server of the installation (its server certificate, for ``verify-full``).
DATABASE = "database"
#: The roles services register with (join tokens name one of them).
SERVICE_ROLES = (ACCESS_POINT, POLICY, AUTHENTICATION, DISTRIBUTION)
ROLES = (*SERVICE_ROLES, ADMINISTRATION, OPERATOR, DATABASE)

URI_PREFIX = "spiffe://gatehouse/"
# As the Administration model spells service ids (lowercase, digits, '.', '_', '-').
_ID = r"[a-z0-9][a-z0-9_.-]{0,62}"
_URI = re.compile(rf"spiffe://gatehouse/(?P<role>[a-z_]+)/(?P<id>{_ID})\Z")


class IdentityError(ValueError):
    """A certificate carries no Gatehouse identity (or more than one, or a malformed one)."""


@dataclass(frozen=True, slots=True)
class Identity:
    role: str
    service_id: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise IdentityError(f"role {self.role!r} is not one of {', '.join(ROLES)}")
        if not re.fullmatch(_ID, self.service_id):
            raise IdentityError(f"not a service id: {self.service_id!r}")

    @property
    def uri(self) -> str:
        return f"{URI_PREFIX}{self.role}/{self.service_id}"

    @classmethod
    def from_uri(cls, uri: str) -> Identity:
        match = _URI.match(uri)
        if match is None:
            raise IdentityError(f"not a Gatehouse identity: {uri[:120]!r}")
        return cls(match["role"], match["id"])

    def __str__(self) -> str:
        return f"{self.role} {self.service_id!r}"


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of an authenticated internal connection."""

    identity: Identity
    serial: int
    not_after: datetime

    @property
    def role(self) -> str:
        return self.identity.role

    @property
    def service_id(self) -> str:
        return self.identity.service_id


def identity_of(certificate: x509.Certificate) -> Identity:
    """The one Gatehouse identity a certificate names.

    Raises:
        IdentityError: none, several, or a malformed one.
    """
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        raise IdentityError("the certificate has no subject alternative name") from None
    uris = list(san.value.get_values_for_type(x509.UniformResourceIdentifier))
    ours = [u for u in uris if u.startswith(URI_PREFIX)]
    if len(ours) != 1:
        raise IdentityError(f"the certificate names {len(ours)} Gatehouse identities, not one")
    return Identity.from_uri(ours[0])


def peer_of_der(der: bytes) -> Peer:
    """The peer a DER certificate (``SSLObject.getpeercert(binary_form=True)``) names.

    Raises:
        IdentityError: the certificate cannot be read or names no Gatehouse identity.
    """
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise IdentityError("the peer certificate cannot be read") from None
    return Peer(
        identity_of(certificate), certificate.serial_number, certificate.not_valid_after_utc
    )

"""TLS end to end for a cluster on one machine (``local_tls`` in the topology).

``gatehouse cluster up`` makes a local CA in ``HOME/tls`` (0700) and, signed by it, a
certificate for each Access Point (its id and its address as names) and one for HAProxy, then
fills in what a real installation writes by hand: each AP's ``tls``, and the load balancer's
``access_point_tls``, ``access_point_ca_file`` and (re-encryption) ``tls_certificate``. The
files are made once and reused by later ``up``\\ s; browsers trust ``HOME/tls/ca.pem`` only if
told to. Keys never leave the home: the AP view names them by path.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatehouse.cluster.topology import Topology, dialable
from gatehouse.config.access_point import parse_listen

TLS_DIR = "tls"
CA_FILE = "ca.pem"
CA_KEY = "ca.key"
LOAD_BALANCER_PEM = "haproxy.pem"
VALIDITY = datetime.timedelta(days=365)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / CA_FILE, directory / CA_KEY
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gatehouse local cluster CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _leaf(
    directory: Path,
    stem: str,
    names: list[str],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path


def with_local_tls(topology: Topology, home: Path) -> Topology:
    """``topology`` with the TLS settings of ``local_tls`` filled in, the certificates made in
    ``HOME/tls`` if need be; unchanged without ``local_tls``."""
    mode = topology.local_tls
    if mode is None:
        return topology
    directory = Path(home).absolute() / TLS_DIR
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    ca = _ca(directory)
    data = topology.model_dump(mode="json", exclude_none=True)
    for entry, ap in zip(data["access_points"], topology.access_points, strict=True):
        host, _ = topology.address(ap)
        cert, key = _leaf(directory, ap.id, [ap.tls_name, dialable(host), "localhost"], ca)
        entry["tls"] = {"certificates": [{"cert_file": str(cert), "key_file": str(key)}]}
    lb = data["load_balancer"]
    lb["access_point_tls"] = mode
    lb["access_point_ca_file"] = str(directory / CA_FILE)
    if mode == "reencrypt":
        host, _ = parse_listen(topology.load_balancer.listen)
        cert, key = _leaf(directory, "haproxy", ["localhost", dialable(host)], ca)
        bundle = directory / LOAD_BALANCER_PEM
        _write(bundle, cert.read_bytes() + key.read_bytes(), 0o600)
        lb["tls_certificate"] = str(bundle)
    else:
        lb.pop("tls_certificate", None)
    return Topology.model_validate(data)

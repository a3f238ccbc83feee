"""TLS on the Access Point's own listener: certificates by SNI, reloadable without a restart.

The listening socket gets one *dispatching* :class:`ssl.SSLContext` whose SNI callback hands
each new handshake the context of the certificate that matches the name the client asked for
(RFC 6066 §3), or the default (the first certificate). A reload replaces the table the callback
reads, so new handshakes use the new certificates while open connections keep theirs.
ALPN offers ``http/1.1`` only (RFC 7301).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httptools
from cryptography import x509
from cryptography.x509.oid import NameOID

from gatehouse.config.access_point import Certificate, TLSSettings
from gatehouse.errors import ConfigError
from gatehouse.internal.detached import DETACHED_REQUEST_PARSER

log = logging.getLogger("gatehouse.access_point")

ALPN = ["http/1.1"]
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
FIELD = "access_point.tls"


def certificate_names(pem: bytes) -> list[str]:
    """The DNS names of the first certificate in ``pem`` (subjectAltName, else the CN),
    lower case."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    return [n.lower().rstrip(".") for n in names]


def host_matches(pattern: str, host: str) -> bool:
    """``pattern`` (a name, ``*.domain`` or ``*``) matches ``host``; a wildcard covers exactly
    one label (RFC 6125 §6.4.3)."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return False


def _context(
    cert: Certificate | None, index: int, minimum: ssl.TLSVersion, source: str
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = minimum
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(ALPN)
    # No session tickets across reloads to worry about: each context has its own key.
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    if cert is None:
        return ctx
    where = f"{FIELD}.certificates[{index}]"
    for name in ("cert_file", "key_file"):
        path = Path(getattr(cert, name))
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                [(f"{where}.{name}", f"cannot read {path}: {exc.strerror}")], source
            ) from None
    try:
        ctx.load_cert_chain(cert.cert_file, cert.key_file)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc) or reason == "KEY_VALUES_MISMATCH":
            problem = (
                f"{where}.key_file",
                f"{cert.key_file} is not the private key of {cert.cert_file}",
            )
        elif "PEM" in str(exc) and "key" not in str(exc).lower():
            problem = (f"{where}.cert_file", f"{cert.cert_file} holds no PEM certificate")
        else:
            problem = (
                f"{where}",
                f"cannot use {cert.cert_file} with {cert.key_file}: {reason}",
            )
        raise ConfigError([problem], source) from None
    return ctx


@dataclass(frozen=True, slots=True)
class CertificateTable:
    """The contexts of one configuration's certificates and the names each serves."""

    default: ssl.SSLContext
    #: (host pattern, context), exact names first, then wildcards, in configuration order.
    by_name: tuple[tuple[str, ssl.SSLContext], ...]
    exact: dict[str, ssl.SSLContext]

    def lookup(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return self.default
        host = server_name.lower().rstrip(".")
        found = self.exact.get(host)
        if found is not None:
            return found
        for pattern, ctx in self.by_name:
            if host_matches(pattern, host):
                return ctx
        return self.default


def load_table(settings: TLSSettings, source: str = "") -> CertificateTable:
    """Read every certificate and key of ``settings``.

    Raises:
        ConfigError: a file cannot be read, holds no certificate, or a key does not match
            its certificate; the path names the field
            (``access_point.tls.certificates[1].key_file``).
    """
    minimum = _VERSIONS[settings.min_version]
    contexts = []
    exact: dict[str, ssl.SSLContext] = {}
    wild: list[tuple[str, ssl.SSLContext]] = []
    for index, cert in enumerate(settings.certificates):
        ctx = _context(cert, index, minimum, source)
        contexts.append(ctx)
        try:
            names = certificate_names(Path(cert.cert_file).read_bytes())
        except ValueError:
            names = []
        for name in [*cert.hosts, *names]:
            if "*" in name:
                wild.append((name, ctx))
            else:
                exact.setdefault(name, ctx)
    return CertificateTable(contexts[0], tuple(wild), exact)


def dispatcher_context(settings: TLSSettings) -> ssl.SSLContext:
    """The context every handshake starts on (:class:`ServerTLS`), without a certificate.

    It also holds the session ticket keys: OpenSSL encrypts and decrypts tickets with the
    keys of the context a connection was created on, whatever context SNI moves it to, and
    makes them at random with the context. A supervisor makes this context once, before it
    forks, so that every worker has the same keys and a client resumes its session on
    whichever worker the kernel (SO_REUSEPORT) hands its next connection to; with a context
    per worker, a resumption on another worker fails and costs a full handshake. The keys
    live as long as the supervisor (nginx without ``ssl_session_ticket_key`` does the same).
    """
    return _context(None, 0, _VERSIONS[settings.min_version], FIELD)


class ServerTLS:
    """The listener's SSL context; :meth:`swap` changes what new handshakes get.

    Args:
        context: the dispatcher made by the supervisor (:func:`dispatcher_context`), shared
            by its workers; None: one of its own.
    """

    def __init__(
        self, settings: TLSSettings, source: str = "", context: ssl.SSLContext | None = None
    ) -> None:
        self.settings = settings
        self.table = load_table(settings, source)
        # The dispatcher: the handshake starts on it and the SNI callback (called with or
        # without a server name) moves it to the certificate's own context.
        # OpenSSL copies the protocol versions into a connection when it starts, before
        # SNI, so the minimum is the dispatcher's (a new one needs a restart).
        if context is None or context.minimum_version != _VERSIONS[settings.min_version]:
            context = dispatcher_context(settings)
        self.context = context
        self.context.sni_callback = self._pick

    def _pick(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.table.lookup(server_name)

    def swap(self, settings: TLSSettings, source: str = "") -> None:
        """Load ``settings``' files again (they may have been replaced on disk) and use them.

        Raises:
            ConfigError: a file is unusable; the running table stays.
        """
        self.use(settings, load_table(settings, source))

    def use(self, settings: TLSSettings, table: CertificateTable) -> None:
        """New handshakes get ``table``'s certificates (from :func:`load_table`)."""
        if settings.min_version != self.settings.min_version:
            log.warning("reload: a new tls.min_version needs a restart; keeping the running one")
        self.settings = settings
        self.table = table


def check_files(settings: TLSSettings | None, source: str = "") -> None:
    """Read every certificate and key (:func:`load_table`); a :class:`ConfigError` if any
    is unusable."""
    if settings is not None:
        load_table(settings, source)


def hsts_line(settings: TLSSettings | None) -> bytes:
    """The ``Strict-Transport-Security`` field line for HTTPS responses (RFC 6797), or b""."""
    if settings is None or settings.hsts_max_age <= 0:
        return b""
    value = f"max-age={int(settings.hsts_max_age)}"
    if settings.hsts_include_subdomains:
        value += "; includeSubDomains"
    return b"Strict-Transport-Security: " + value.encode()


def redirect_location(host: bytes, target: bytes, https_port: int) -> bytes:
    """``https://HOST[:PORT]TARGET`` for a plain-HTTP request: the Host's own port is
    replaced by the HTTPS port (omitted when 443)."""
    name = host
    if host.startswith(b"["):
        end = host.find(b"]")
        name = host[: end + 1] if end > 0 else host
    elif host.count(b":") == 1:
        name = host.partition(b":")[0]
    port = b"" if https_port == 443 else b":" + str(https_port).encode()
    if not target.startswith(b"/"):
        target = b"/"
    return b"https://" + name + port + target


_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
_REASONS = {301: b"Moved Permanently", 308: b"Permanent Redirect"}


def redirect_response(host: bytes | None, target: bytes, https_port: int, status: int) -> bytes:
    """The whole answer of the plain-HTTP listener to one request head."""
    if not host or not all(c in _HOST_CHARS for c in host):
        body = b"A Host header is needed to redirect to HTTPS.\n"
        return (
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
    location = redirect_location(host, target, https_port)
    return (
        b"HTTP/1.1 "
        + str(status).encode()
        + b" "
        + _REASONS[status]
        + b"\r\nLocation: "
        + location
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )


class RedirectProtocol(asyncio.Protocol):
    """The plain-HTTP listener: every request is answered with a redirect to HTTPS and the
    connection closed. Nothing is proxied, so no cookie or credential travels in clear past
    the first request."""

    #: A request head larger than this is not read further.
    MAX_HEAD = 16 << 10

    def __init__(self, https_port: int, status: int, connections: set[asyncio.Transport]) -> None:
        self.https_port = https_port
        self.status = status
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.host: bytes | None = None
        self.seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.connections.discard(self.transport)
        # Freed by reference counting, not left to the cyclic collector (internal.detached).
        self.parser = DETACHED_REQUEST_PARSER
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.seen += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._answer(None)
            return
        if self.seen > self.MAX_HEAD and self.transport is not None:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"host" and self.host is None:
            self.host = value.strip()

    def on_headers_complete(self) -> None:
        self._answer(self.host)

    def _answer(self, host: bytes | None) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        target = self.url
        if target.startswith((b"http://", b"https://")):
            # Absolute form: its authority is the host, the rest the target.
            rest = target.partition(b"://")[2]
            authority, slash, path = rest.partition(b"/")
            host, target = authority or host, slash + path
        transport.write(redirect_response(host, target, self.https_port, self.status))
        transport.close()

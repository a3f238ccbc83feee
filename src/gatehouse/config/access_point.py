"""The Access Point's view of the configuration: its own settings and the resources it routes.

This view is what the Administration service will publish to an AP, so it must never hold
secrets, user data or database URLs.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from gatehouse.config.base import Strict
from gatehouse.config.failover import FailoverSettings
from gatehouse.config.loader import problems_error
from gatehouse.config.units import ByteSize, Seconds
from gatehouse.metrics.settings import MetricsSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: object) -> Network:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise ValueError(f"not an IP network: {value!r} (use CIDR, e.g. 10.0.0.0/8)") from None


IPNetwork = Annotated[Network, PlainValidator(_network)]

#: Identity headers a backend may trust: only the Policy service sets them, the Access Point
#: strips them from clients. The fifth is the signed identity assertion (policy.assertions),
#: the sixth the authentication methods the session ran (``password,otp``).
DEFAULT_IDENTITY_HEADERS = (
    "Remote-User",
    "Remote-Groups",
    "Remote-Email",
    "Remote-Name",
    "Gatehouse-Assertion",
    "Remote-Auth-Methods",
)

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_RESOURCE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_HOST_PATTERN = re.compile(
    r"^(\*|(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)$"
)


def _header_name(value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"not a valid HTTP header name: {value!r}")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a listen or dial address) is this machine's loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not HOST:PORT: {value!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError(f"not HOST:PORT: {value!r}")
    return host, int(port)


def _listen(value: str) -> str:
    parse_listen(value)
    return value


class Backend(BaseModel):
    """A parsed backend URL: ``http(s)://host[:port][/base-path]``."""

    model_config = ConfigDict(frozen=True)

    url: str
    scheme: Literal["http", "https"]
    host: str
    port: int
    base_path: str

    @classmethod
    def parse(cls, url: str) -> Backend:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a URL: {url!r} ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a URL: {url!r} (expected http://host[:port][/path])")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"backend URL may not have a query, fragment or credentials: {url!r}")
        default_port = 443 if parts.scheme == "https" else 80
        return cls(
            url=url,
            scheme=parts.scheme,  # type: ignore[arg-type]
            host=parts.hostname,
            port=port or default_port,
            base_path=parts.path.rstrip("/"),
        )

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def _backend_url(value: str) -> str:
    Backend.parse(value)
    return value


BackendURL = Annotated[str, AfterValidator(_backend_url)]


def _host_pattern(host: str) -> str:
    norm = host.strip().lower().rstrip(".")
    if not _HOST_PATTERN.match(norm):
        raise ValueError(f"not a host name or pattern: {host!r} (use a name, *.domain or *)")
    return norm


HostPattern = Annotated[str, AfterValidator(_host_pattern)]


class Resource(Strict):
    """A web resource behind the Access Point."""

    id: str
    hosts: list[HostPattern] = Field(default_factory=lambda: ["*"], min_length=1)
    path_prefix: str = "/"
    backends: list[BackendURL] = Field(min_length=1)
    public: bool = False
    strip_prefix: bool = False
    preserve_host: bool = False
    connect_timeout: Seconds = Field(default=5.0, gt=0)
    read_timeout: Seconds = Field(default=60.0, gt=0)
    max_body_size: ByteSize = Field(default=64 << 20, ge=0, description="0 means unlimited")
    tls_verify: bool = True
    ca_file: str | None = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _RESOURCE_ID.match(value):
            raise ValueError("use lowercase letters, digits, '.', '_' or '-' (max 63)")
        return value

    @field_validator("path_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in "?# \t\\"):
            raise ValueError("must be an absolute path starting with '/', without query")
        if "/../" in value + "/" or "/./" in value + "/":
            raise ValueError("may not contain '.' or '..' segments")
        return value

    def parsed_backends(self) -> list[Backend]:
        return [Backend.parse(url) for url in self.backends]


def _file_path(value: str) -> str:
    if "-----BEGIN" in value or "\n" in value:
        raise ValueError(
            "must be the path of a PEM file on the Access Point's host, not the PEM text itself"
        )
    if not value.strip():
        raise ValueError("must be the path of a PEM file")
    return value


FilePath = Annotated[str, AfterValidator(_file_path)]


class Certificate(Strict):
    """One certificate the TLS listener can present, read from files on the AP's host."""

    #: PEM: the certificate, then any intermediates (the chain sent to clients).
    cert_file: FilePath
    #: PEM: the private key of ``cert_file`` (not encrypted).
    key_file: FilePath
    #: Host names (``name`` or ``*.domain``) served with this certificate, besides the DNS
    #: names the certificate itself holds.
    hosts: list[HostPattern] = Field(default_factory=list)


class TLSSettings(Strict):
    """TLS on the Access Point's own listener (``listen`` then speaks HTTPS only)."""

    #: The first certificate is the default (no SNI, or a name no certificate matches);
    #: the others are chosen by SNI from their names and ``hosts``.
    certificates: list[Certificate] = Field(min_length=1)
    min_version: Literal["1.2", "1.3"] = "1.2"
    #: A plain-HTTP listener that only redirects to HTTPS (same host and path); off if null.
    redirect_listen: Annotated[str, AfterValidator(_listen)] | None = None
    redirect_status: Literal[301, 308] = 308
    #: The HTTPS port named in redirects; null: the port of ``listen``.
    redirect_https_port: int | None = Field(default=None, ge=1, le=65535)
    #: ``Strict-Transport-Security`` on every proxied HTTPS response; 0 turns it off.
    hsts_max_age: Seconds = Field(default=31_536_000, ge=0)
    hsts_include_subdomains: bool = False


class AccessPointSettings(Strict):
    """Settings of the Access Point process itself."""

    id: str = "ap1"
    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:8080"
    workers: int = Field(default=1, ge=1, le=64)
    reserved_prefix: str = "/_gatehouse/"
    #: Relay the OAuth 2.0 / OpenID Connect discovery documents
    #: (``/.well-known/openid-configuration``, ``/.well-known/oauth-authorization-server``)
    #: to the portal, as the paths under ``reserved_prefix`` are: exact paths only.
    relay_discovery: bool = True
    trusted_proxies: list[IPNetwork] = Field(default_factory=list)
    identity_headers: list[HeaderName] = Field(
        default_factory=lambda: list(DEFAULT_IDENTITY_HEADERS)
    )
    via_pseudonym: str = "gatehouse"
    allow_underscores_in_headers: bool = False
    header_timeout: Seconds = Field(default=10.0, gt=0)
    keepalive_timeout: Seconds = Field(default=75.0, gt=0)
    body_timeout: Seconds = Field(default=60.0, gt=0)
    send_timeout: Seconds = Field(default=60.0, gt=0)
    drain_timeout: Seconds = Field(default=30.0, gt=0)
    max_connections: int = Field(default=4096, ge=1)
    max_request_line: ByteSize = Field(default=8 << 10, ge=64)
    max_header_bytes: ByteSize = Field(default=32 << 10, ge=256)
    max_pipelined: int = Field(default=32, ge=1)
    policy_services: list[BackendURL] = Field(
        default_factory=list, description="ordered Policy service URLs (preferred first)"
    )
    session_cookie: HeaderName = "gatehouse_session"
    #: TLS on ``listen``; null: plain HTTP (TLS terminated in front of the AP).
    tls: TLSSettings | None = None
    #: The status listener: the full health answer (id, configuration version, Policy
    #: routing) for ``gatehouse cluster status`` and operators; the public
    #: ``/_gatehouse/health`` says only up or down. Mutual TLS (operator or Administration
    #: certificates) when the AP has internal credentials, else loopback only. Null: none.
    status_listen: Annotated[str, AfterValidator(_listen)] | None = None
    #: The metrics listener (``GET /metrics``; every worker's counts added up). Read at start.
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    decision_timeout: Seconds = Field(default=2.0, gt=0)
    decision_cache_entries: int = Field(default=100_000, ge=0)
    #: How decision calls fail over between the Policy services (connect timeout, probes of
    #: down ones, fail-back after `rise` passes); a decision attempt's timeout is
    #: ``decision_timeout``.
    failover: FailoverSettings = Field(default_factory=FailoverSettings)
    decision_headers: list[HeaderName] = Field(default_factory=list)
    upstream_keepalive: int = Field(default=64, ge=0)
    upstream_idle_timeout: Seconds = Field(default=60.0, gt=0)
    backend_fail_timeout: Seconds = Field(default=10.0, ge=0)

    @field_validator("reserved_prefix")
    @classmethod
    def _check_reserved(cls, value: str) -> str:
        if not (value.startswith("/") and value.endswith("/") and len(value) > 2):
            raise ValueError("must start and end with '/', e.g. /_gatehouse/")
        return value

    @field_validator("via_pseudonym")
    @classmethod
    def _check_via(cls, value: str) -> str:
        return _header_name(value)


class AccessPointConfig(Strict):
    """A whole Access Point configuration file."""

    access_point: AccessPointSettings = Field(default_factory=AccessPointSettings)
    resources: list[Resource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> AccessPointConfig:
        seen: set[str] = set()
        problems: list[tuple[tuple[int | str, ...], str]] = []
        for index, res in enumerate(self.resources):
            if res.id in seen:
                problems.append((("resources", index, "id"), f"duplicate resource id {res.id!r}"))
            seen.add(res.id)
        if problems:
            raise problems_error(type(self).__name__, problems)
        return self

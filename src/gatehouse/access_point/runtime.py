"""The compiled form of an Access Point configuration: what a request reads, built once per
config version. A request captures one :class:`Runtime` when its head is complete, so it sees
the old or the new configuration, never a mix."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gatehouse.access_point.decisions import Decider
from gatehouse.access_point.headers import HeaderPolicy
from gatehouse.access_point.routing import Router
from gatehouse.access_point.tls import hsts_line
from gatehouse.access_point.upstream import BackendGroup, Origin, make_ssl_context
from gatehouse.config.access_point import AccessPointConfig, AccessPointSettings, Resource
from gatehouse.trust.tls import ClientTLS

if TYPE_CHECKING:
    from gatehouse.metrics.access_point import Series, WorkerCounters


@dataclass(frozen=True, slots=True)
class Route:
    """A resource ready to serve."""

    resource: Resource
    group: BackendGroup
    #: Each backend's base path; per resource, because resources share pooled origins.
    base_paths: dict[Origin, str]
    prefix: str
    public: bool
    strip_prefix: bool
    preserve_host: bool
    max_body: int
    connect_timeout: float
    read_timeout: float
    #: The resource's requests, counted when metrics are on (None: off).
    series: Series | None = None


class OriginRegistry:
    """Origins shared across config versions, so keep-alive connections survive a reload."""

    def __init__(self, internal: ClientTLS | None = None) -> None:
        self._origins: dict[tuple[object, ...], Origin] = {}
        #: Mutual TLS to the Policy services (the portal relay); None: plaintext.
        self.internal = internal

    def get(
        self, resource: Resource, settings: AccessPointSettings, internal: bool = False
    ) -> list[Origin]:
        """The origins of ``resource``; ``internal``: they are the Policy services (the
        portal), reached over mutual TLS when the worker has internal credentials."""
        out = []
        tls = self.internal if internal else None
        for index, backend in enumerate(resource.parsed_backends()):
            if tls is not None:
                key: tuple[object, ...] = ("internal", backend.host, backend.port, index)
                origin = self._origins.get(key)
                if origin is None:
                    origin = Origin(
                        backend,
                        tls.context,
                        settings.upstream_keepalive,
                        settings.upstream_idle_timeout,
                        check=functools.partial(tls.check, index=index),
                    )
                    self._origins[key] = origin
                out.append(origin)
                continue
            key = (
                backend.scheme,
                backend.host,
                backend.port,
                resource.tls_verify,
                resource.ca_file,
                settings.upstream_keepalive,
                settings.upstream_idle_timeout,
            )
            origin = self._origins.get(key)
            if origin is None:
                context = (
                    make_ssl_context(resource.tls_verify, resource.ca_file)
                    if backend.scheme == "https"
                    else None
                )
                origin = Origin(
                    backend, context, settings.upstream_keepalive, settings.upstream_idle_timeout
                )
                self._origins[key] = origin
            out.append(origin)
        return out

    def retain(self, used: set[int]) -> None:
        """Drop origins no longer referenced by the live configuration."""
        for key, origin in list(self._origins.items()):
            if id(origin) not in used:
                origin.close_idle()
                del self._origins[key]

    def close_all(self) -> None:
        for origin in self._origins.values():
            origin.close_idle()


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: AccessPointSettings
    router: Router[Route]
    policy: HeaderPolicy
    reserved: str
    health_body: bytes
    #: The version the Administration service published this configuration as; ``None`` for
    #: a configuration file (``--config``).
    version: int | None
    #: A configuration file's load count in this worker (``--config``); ``None`` when managed.
    local_version: int | None
    #: The login portal, relayed to the Policy services; None without Policy services.
    portal: Route | None
    #: Asks the Policy services for decisions; None without Policy services.
    decider: Decider | None
    #: With TLS on the listener, ``__Host-`` + the configured name: the portal sets that
    #: name when the AP says it terminated TLS (see docs/operations.md, "TLS").
    session_cookie: bytes
    decision_headers: tuple[bytes, ...]
    #: ``Strict-Transport-Security`` field line for HTTPS responses, or b"".
    hsts: bytes = b""
    #: Exact paths relayed to the portal besides the reserved prefix (OAuth discovery).
    well_known: frozenset[str] = frozenset()
    #: With metrics on, the series of requests no resource matched (None: metrics off).
    unrouted: Series | None = None

    def health(self) -> bytes:
        """The status listener's health answer (:mod:`.status`; the public one says only
        up or down): :func:`health_answer` and, with Policy services,
        ``"policy": {"using": URL, "endpoints": [{"url", "up"}]}`` — the Policy service this
        worker's decisions go to now (for ``gatehouse cluster status``)."""
        if self.decider is None:
            return self.health_body
        routing = json.dumps(self.decider.client.routing()).encode()
        return self.health_body[:-1] + b',"policy":' + routing + b"}"


PORTAL_ID = "gatehouse-portal"
#: How long a portal page (a sign-in, a logout) may take the Policy service, seconds. It
#: outlasts ``database.failover_wait`` (20 s by default) twice over, for a password check and
#: a session write that each wait for a new database primary: the browser waits, no error.
PORTAL_READ_TIMEOUT = 60.0
#: The OAuth 2.0 / OpenID Connect discovery documents (RFC 8414, OIDC Discovery 1.0): served by
#: the portal at the issuer's root, so relayed by exact path (``relay_discovery``).
WELL_KNOWN = frozenset(
    {"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"}
)


def health_answer(
    access_point_id: str, version: int | None, local_version: int | None
) -> dict[str, object]:
    """``{"status": "ok", "id", "config_version", "config_source"}``, the same fields as the
    Policy and Authentication services' health answers:

    - following Admin: ``"config_version": N`` (the version Admin published, as in its
      ``GET /api/v1/services``) and ``"config_source": "admin"``;
    - a configuration file: ``"config_version": null``, ``"config_source": "file"`` and
      ``"local_version": N``, how many times this worker loaded the file (1 at start, +1 per
      SIGHUP reload): a local counter, never a version of Admin's.
    """
    answer: dict[str, object] = {"status": "ok", "id": access_point_id}
    if version is not None:
        answer.update(config_version=version, config_source="admin")
    else:
        answer.update(config_version=None, config_source="file", local_version=local_version)
    return answer


def _route(
    res: Resource,
    settings: AccessPointSettings,
    registry: OriginRegistry,
    ordered: bool = False,
    counters: WorkerCounters | None = None,
) -> Route:
    origins = registry.get(res, settings, internal=res.id == PORTAL_ID)
    if counters is not None:
        for origin in origins:
            if origin.timings is None:
                origin.timings = counters.backend(origin.backend.url)
                origin.clock = counters.clock
    return Route(
        resource=res,
        group=BackendGroup(origins, settings.backend_fail_timeout, ordered),
        base_paths={
            origin: backend.base_path
            for origin, backend in zip(origins, res.parsed_backends(), strict=True)
        },
        prefix=res.path_prefix,
        public=res.public,
        strip_prefix=res.strip_prefix,
        preserve_host=res.preserve_host,
        max_body=res.max_body_size,
        connect_timeout=res.connect_timeout,
        read_timeout=res.read_timeout,
        series=None if counters is None else counters.series(res.id),
    )


def compile_config(
    config: AccessPointConfig,
    registry: OriginRegistry,
    version: int | None,
    decider: Decider | None = None,
    local_version: int | None = None,
    counters: WorkerCounters | None = None,
) -> Runtime:
    """Compile a configuration; ``decider`` is the worker's (it outlives config versions).

    ``version`` is the version Admin published ``config`` as; ``None`` for a configuration
    file, loaded for the ``local_version``-th time (see :func:`health_answer`). With
    ``counters`` (metrics on), each route carries its resource's series and each origin its
    backend's histogram."""
    settings = config.access_point
    routes = []
    used: set[int] = set()
    portal = None
    if settings.policy_services:
        portal_resource = Resource(
            id=PORTAL_ID,
            backends=settings.policy_services,
            public=True,
            preserve_host=True,
            connect_timeout=settings.decision_timeout,
            read_timeout=PORTAL_READ_TIMEOUT,
            max_body_size=64 << 10,
        )
        portal = _route(portal_resource, settings, registry, ordered=True, counters=counters)
        used.update(id(o) for o in portal.group.origins)
    for res in config.resources:
        route = _route(res, settings, registry, counters=counters)
        used.update(id(o) for o in route.group.origins)
        routes.append((res.hosts, res.path_prefix, route))
    registry.retain(used)
    policy = HeaderPolicy.build(
        settings.identity_headers,
        settings.via_pseudonym,
        settings.allow_underscores_in_headers,
        settings.trusted_proxies,
    )
    health = json.dumps(health_answer(settings.id, version, local_version)).encode()
    return Runtime(
        settings,
        Router(routes),
        policy,
        settings.reserved_prefix,
        health,
        version,
        local_version,
        portal,
        decider if settings.policy_services else None,
        session_cookie_name(settings).encode("ascii"),
        tuple(h.lower().encode("ascii") for h in settings.decision_headers),
        hsts_line(settings.tls),
        WELL_KNOWN if settings.relay_discovery and portal is not None else frozenset(),
        None if counters is None else counters.series(""),
    )


#: The prefix of the session and CSRF cookies when the AP terminates TLS (RFC 6265bis
#: §4.1.3.2: Secure, Path=/, no Domain, so no other host or plain-HTTP page can set them).
HOST_PREFIX = "__Host-"


def session_cookie_name(settings: AccessPointSettings) -> str:
    """The session cookie the AP reads: ``__Host-NAME`` on a TLS listener, else ``NAME``."""
    if settings.tls is not None:
        return HOST_PREFIX + settings.session_cookie
    return settings.session_cookie

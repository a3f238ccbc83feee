"""An Access Point worker process: listening socket, event loop, signals, reload, drain.

SIGHUP reloads the configuration file: the listening socket is kept, requests in flight finish
on the configuration they started with, the next ones use the new one; a file that does not
validate (or that the worker cannot compile, e.g. a ``ca_file`` it cannot read) is logged and
ignored. SIGTERM (or SIGINT) stops accepting, lets requests in flight finish (up to
``drain_timeout``) and exits.

The file is YAML, or JSON when its name ends in ``.json`` (read as JSON because YAML 1.1 reads a
JSON number such as ``1e-05`` as a string).

Which configuration a worker runs, as its status listener's health answer (:mod:`.status`;
the public ``/_gatehouse/health`` says only up or down) and its logs say it:

- ``--config FILE`` (a file the operator wrote): no version published by the Administration
  service. Health: ``"config_version": null, "config_source": "file", "local_version": N``,
  where N counts this worker's loads of the file (1 at start, +1 per reload that succeeded);
  it is a local counter, not a version of Admin's.
- managed (``--state DIR``, see :mod:`.managed`): the worker reads ``DIR/access-point.json``,
  which the supervisor's config agent writes as ``{"published_version": N, "view": {...}}``
  (:func:`read_published`). Health: ``"config_version": N, "config_source": "admin"``, the
  number Admin published (what ``GET /api/v1/services`` reports as ``running_version``). A
  SIGHUP that finds the same version in the file changes nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from gatehouse.access_point.connection import ClientConnection, WorkerState
from gatehouse.access_point.decisions import Decider
from gatehouse.access_point.runtime import OriginRegistry, Runtime, compile_config
from gatehouse.access_point.status import READ_TIMEOUT, StatusProtocol, check_status_listen
from gatehouse.access_point.tls import (
    RedirectProtocol,
    ServerTLS,
    check_files,
    dispatcher_context,
    load_table,
)
from gatehouse.config.access_point import (
    DEFAULT_IDENTITY_HEADERS,
    AccessPointConfig,
    parse_listen,
)
from gatehouse.config.loader import load_file, validate
from gatehouse.errors import ConfigError, GatehouseError
from gatehouse.logs import setup_logging
from gatehouse.metrics.access_point import COUNTERS
from gatehouse.trust.identity import POLICY
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import ClientTLS, Credentials

log = logging.getLogger("gatehouse.access_point")

#: Seconds between checks of the internal certificate's file (renewed by the config agent).
CREDENTIALS_CHECK = 30.0


@dataclass(frozen=True)
class Overrides:
    """Command-line values that win over the file, on start and on every reload."""

    listen: tuple[str, int] | None = None
    workers: int | None = None
    #: Internal TLS credentials (``--tls DIR``, or the state directory's ``tls/`` when
    #: managed): mutual TLS to the Policy services. None: plaintext (development).
    internal_tls: Path | None = None

    def apply(self, config: AccessPointConfig) -> AccessPointConfig:
        update: dict[str, object] = {}
        if self.listen is not None:
            host, port = self.listen
            update["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.workers is not None:
            update["workers"] = self.workers
        if not update:
            return config
        settings = config.access_point.model_copy(update=update)
        return config.model_copy(update={"access_point": settings})


def read_config(path: str | Path) -> AccessPointConfig:
    """The configuration in ``path``: JSON when the name ends in ``.json``, else YAML."""
    path = Path(path)
    if path.suffix != ".json":
        return load_file(AccessPointConfig, path)
    return validate(AccessPointConfig, _read_json(path), str(path))


def _read_json(path: Path) -> object:
    """JSON data of a file; unreadable or invalid as a :class:`ConfigError` naming it."""
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file: {exc.strerror}")], str(path)) from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError([("", f"invalid JSON: {exc}")], str(path)) from None


def load_config(path: str | Path, overrides: Overrides) -> AccessPointConfig:
    return overrides.apply(read_config(path))


#: The fields of a managed worker's file (written by :func:`.managed.write_view`).
PUBLISHED_VERSION = "published_version"
PUBLISHED_VIEW = "view"
#: The serials (hex) of the certificates the Administration service revoked, as of that
#: version: the worker refuses them (a Policy service's, an operator's on the status listener).
PUBLISHED_REVOKED = "revoked"


def read_published(path: str | Path) -> tuple[int, AccessPointConfig]:
    """A managed worker's file: ``{"published_version": N, "view": {...}}``, the view the
    Administration service published as version N.

    Raises:
        ConfigError: the file cannot be read, is not such an envelope, or the view is invalid.
    """
    path = Path(path)
    data = _read_json(path)
    version = data.get(PUBLISHED_VERSION) if isinstance(data, dict) else None
    view = data.get(PUBLISHED_VIEW) if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(
            [(PUBLISHED_VERSION, "missing or not a positive integer (not a published view)")],
            str(path),
        )
    if not isinstance(view, dict):
        raise ConfigError([(PUBLISHED_VIEW, "missing or not an object")], str(path))
    return version, validate(AccessPointConfig, view, str(path))


def read_revoked(path: str | Path) -> frozenset[int]:
    """The revoked serials in a managed worker's file (none when absent or unreadable: the
    configuration itself is checked by :func:`read_published`)."""
    try:
        data = _read_json(Path(path))
    except ConfigError:
        return frozenset()
    listed = data.get(PUBLISHED_REVOKED) if isinstance(data, dict) else None
    if not isinstance(listed, list):
        return frozenset()
    serials = set()
    for item in listed:
        try:
            serials.add(int(item, 16))
        except (TypeError, ValueError):
            continue
    return frozenset(serials)


def load_published(path: str | Path, overrides: Overrides) -> tuple[int, AccessPointConfig]:
    version, config = read_published(path)
    return version, overrides.apply(config)


FileIdentity = tuple[int, int, int, int]


def file_identity(path: str | Path) -> FileIdentity | None:
    """What tells one version of a file from the next (an atomic replace makes a new inode;
    times and size guard against the inode number being reused)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def listening_socket(host: str, port: int, reuse_port: bool, listen: bool = True) -> socket.socket:
    """Bind the Access Point's socket; a clear error (not a traceback) when that fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(4096)
    except OSError as exc:
        sock.close()
        raise GatehouseError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class Worker:
    """One event loop serving the Access Point.

    Args:
        path: the file the worker loads, and loads again on SIGHUP.
        overrides: command-line values that win over the file.
        config: the configuration loaded from ``path`` at start.
        loaded: the file's identity before it was read (:func:`file_identity`).
        published_version: managed mode: the version the Administration service published
            ``config`` as; ``path`` is then read with :func:`read_published`. ``None``: a
            user's configuration file (:func:`read_config`).
    """

    def __init__(
        self,
        path: str | Path,
        overrides: Overrides,
        config: AccessPointConfig,
        loaded: FileIdentity | None = None,
        published_version: int | None = None,
    ) -> None:
        self.path = path
        self.overrides = overrides
        self.config = config
        #: The file as it was (taken before reading it), to notice a replace missed at start.
        self.loaded = loaded
        #: This AP's internal certificate (mutual TLS to the Policy services), or None.
        self.credentials = (
            None if overrides.internal_tls is None else Credentials(overrides.internal_tls)
        )
        #: Revoked certificates (managed: from the supervisor's file at every reload).
        self.revocations = Revocations(read_revoked(path) if published_version else ())
        self.internal = (
            None
            if self.credentials is None
            else ClientTLS(self.credentials.client, frozenset({POLICY}), (), self.revocations)
        )
        self.registry = OriginRegistry(self.internal)
        self.managed = published_version is not None
        #: The version Admin published the running configuration as (managed mode only).
        self.published_version = published_version
        #: How many times this worker loaded its file (--config mode; a local counter only).
        self.local_version = 1
        self.decider: Decider | None = None
        #: The TLS listener's certificates (None: plain HTTP); reloaded on SIGHUP.
        self.tls: ServerTLS | None = None
        #: A worker without a supervisor serves ``metrics.listen`` itself; a supervised one
        #: answers the supervisor's metrics thread (:mod:`gatehouse.metrics.workers`).
        self.own_metrics = False

    def describe(self) -> str:
        """The running configuration, for a log line."""
        if self.published_version is not None:
            return (
                f"configuration version {self.published_version} "
                "(published by the Administration service)"
            )
        return (
            f"configuration file {self.path} (local version {self.local_version}, "
            "not published by the Administration service)"
        )

    def _decider_for(self, config: AccessPointConfig) -> Decider | None:
        """The Decider for ``config``: the worker's own while the Policy services stay the
        same, else a new one, not started until :meth:`_use_decider`."""
        settings = config.access_point
        key = (
            tuple(settings.policy_services),
            settings.id,
            tuple(settings.identity_headers),
            settings.decision_timeout,
            settings.decision_cache_entries,
            settings.failover,
        )
        old = self.decider
        if old is not None and getattr(old, "key", None) == key:
            return old
        if not settings.policy_services:
            return None
        decider = Decider(
            settings.policy_services,
            settings.id,
            [*DEFAULT_IDENTITY_HEADERS, *settings.identity_headers],
            settings.decision_timeout,
            settings.decision_cache_entries,
            settings.failover,
            tls=self.internal,
        )
        decider.key = key
        return decider

    def _use_decider(self, decider: Decider | None) -> None:
        old, self.decider = self.decider, decider
        if decider is old:
            return
        if old is not None:
            COUNTERS.retire(old)  # its counts stay in the worker's metrics
            asyncio.get_running_loop().create_task(old.aclose())
        if decider is not None:
            decider.start()

    def _compile(
        self, config: AccessPointConfig, published: int | None, local: int | None
    ) -> Runtime:
        """Compile ``config``; the worker's Decider changes only once that succeeded."""
        decider = self._decider_for(config)
        runtime = compile_config(
            config,
            self.registry,
            published,
            decider,
            local_version=local,
            counters=COUNTERS if COUNTERS.on else None,
        )
        self._use_decider(decider)
        return runtime

    def reload(self, state: WorkerState) -> None:
        """SIGHUP: load the file again. Managed, a file holding the running version (an
        operator's SIGHUP) or an older one changes nothing. A renewed internal certificate
        is loaded in every case: new connections to the Policy services use it."""
        self.reload_credentials()
        if self.managed:
            closed = self.revocations.update(read_revoked(self.path))
            if closed:
                log.warning("closed %d connection(s) to revoked services", closed)
        loaded = file_identity(self.path)
        published: int | None = None
        try:
            if self.managed:
                published, config = load_published(self.path, self.overrides)
            else:
                config = load_config(self.path, self.overrides)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        if published is not None and self.published_version is not None:
            if published == self.published_version:
                log.info("reload: %s runs already; nothing to do", self.describe())
                self.loaded = loaded
                return
            if published < self.published_version:
                log.warning(
                    "reload refused: %s holds version %d, older than the running %s",
                    self.path,
                    published,
                    self.describe(),
                )
                return
        local = None if self.managed else self.local_version + 1
        new_tls = config.access_point.tls
        table = None
        if (new_tls is None) != (self.tls is None):
            # The listener, the cookie name and HSTS all follow it: only a restart changes it.
            log.error("reload refused: turning TLS on or off needs a restart")
            return
        if new_tls is not None:
            try:
                # Read again even when unchanged: a renewed certificate replaces the files.
                table = load_table(new_tls, str(self.path))
            except ConfigError as exc:
                log.error("reload refused, keeping the running configuration:\n%s", exc)
                return
        try:
            # Built aside and swapped in one assignment: a request sees one runtime or the other.
            runtime = self._compile(config, published, local)
        except Exception:
            log.exception("reload refused, keeping the running configuration")
            return
        if table is not None and new_tls is not None and self.tls is not None:
            self.tls.use(new_tls, table)
            log.info("TLS certificates reloaded; new handshakes use them")
        if config.access_point.listen != self.config.access_point.listen:
            log.warning("reload: a new listen address needs a restart; keeping the old one")
        if config.access_point.status_listen != self.config.access_point.status_listen:
            log.warning("reload: a new status_listen needs a restart; keeping the old one")
        if self.managed:
            self.published_version = published
        else:
            self.local_version += 1
        state.runtime = runtime
        self.config = config
        self.loaded = loaded
        if self.managed:
            log.info("worker now runs %s", self.describe())
        else:
            log.info("configuration reloaded: %s", self.describe())

    def reload_credentials(self) -> None:
        """Load the internal certificate again if its file changed (renewed)."""
        if self.credentials is None:
            return
        try:
            if self.credentials.changed():
                self.credentials.reload()
        except GatehouseError as exc:
            log.error("keeping the internal certificate in use: %s", exc)

    async def _watch_credentials(self, interval: float = CREDENTIALS_CHECK) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload_credentials()

    async def serve(
        self,
        sock: socket.socket,
        redirect: socket.socket | None = None,
        status_sock: socket.socket | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        settings = self.config.access_point
        if settings.tls is not None and self.tls is None:
            self.tls = ServerTLS(settings.tls, str(self.path))
        from gatehouse.metrics import workers

        # Without a metrics listener, routes carry no series: the request path counts nothing
        # and reads no clock. Decided before the first compile, for the worker's life.
        COUNTERS.on = workers.LINK is not None or (
            settings.metrics.listen is not None and self.own_metrics
        )
        runtime = self._compile(
            self.config, self.published_version, None if self.managed else self.local_version
        )
        state = WorkerState(runtime, loop, clock=COUNTERS.clock if COUNTERS.on else None)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload, state)
        if self.loaded is not None and file_identity(self.path) != self.loaded:
            # Replaced (and SIGHUP sent, then ignored) while this worker was starting.
            self.reload(state)
        state.sweep()
        stop_metrics = await self._start_metrics(state)
        watch = loop.create_task(self._watch_credentials()) if self.credentials else None
        # What exists before the first connection (modules, the compiled configuration, TLS
        # contexts) lives as long as the worker: frozen, the cyclic collector stops walking
        # it, and a full collection costs what was allocated since (as for every service:
        # gatehouse.internal.hosting). A reload's garbage in cycles from this first
        # configuration is never collected: bounded, once per worker.
        gc.collect()
        gc.freeze()
        if self.tls is not None:
            server = await loop.create_server(
                lambda: ClientConnection(state, b"https"),
                sock=sock,
                ssl=self.tls.context,
                ssl_handshake_timeout=settings.header_timeout,
            )
        else:
            server = await loop.create_server(lambda: ClientConnection(state), sock=sock)
        plain: set[asyncio.Transport] = set()
        redirector = None
        if redirect is not None and settings.tls is not None:
            https_port = settings.tls.redirect_https_port or parse_listen(settings.listen)[1]
            status = settings.tls.redirect_status
            redirector = await loop.create_server(
                lambda: RedirectProtocol(https_port, status, plain), sock=redirect
            )
        status_server = None
        status_open: set[asyncio.Transport] = set()
        if status_sock is not None:
            status_server = await self._serve_status(state, status_sock, status_open)
        log.info(
            "access point %s listening on %s, %s",
            self.config.access_point.id,
            self.config.access_point.listen,
            self.describe(),
        )
        await stop.wait()
        log.info("draining %d connection(s)", len(state.connections))
        state.draining = True
        server.close()
        if redirector is not None:
            redirector.close()
            for transport in list(plain):
                transport.close()
        for conn in list(state.connections):
            conn.start_draining()
        deadline = loop.time() + state.runtime.settings.drain_timeout
        while state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(state.connections):
            conn.abort()
        if status_server is not None:
            status_server.close()
            for status_transport in list(status_open):
                status_transport.abort()
        self.registry.close_all()
        if stop_metrics is not None:
            stop_metrics()
        if watch is not None:
            watch.cancel()
        if self.decider is not None:
            await self.decider.aclose()
        log.info("stopped")

    async def _start_metrics(self, state: WorkerState) -> Callable[[], None] | None:
        """Answer the supervisor's snapshot requests, or (no supervisor) serve
        ``metrics.listen``; returns what stops it."""
        from gatehouse.metrics import workers
        from gatehouse.metrics.access_point import merge, render_snapshot, worker_snapshot

        def snapshot() -> dict[str, Any]:
            return worker_snapshot(self, state)

        listen = self.config.access_point.metrics.listen
        if workers.LINK is not None:
            transport = await workers.serve_link(snapshot)
            return None if transport is None else transport.close
        if listen is None or not self.own_metrics:
            return None
        from gatehouse.metrics.listener import MetricsListener

        async def render() -> bytes:
            return render_snapshot(merge([snapshot()]))

        listener = MetricsListener(render)
        await listener.start(*parse_listen(listen))
        return listener.close

    async def _serve_status(
        self, state: WorkerState, sock: socket.socket, connections: set[asyncio.Transport]
    ) -> asyncio.Server:
        """The status listener (:mod:`.status`): mutual TLS with the internal certificate
        when the worker has one, else plaintext (on loopback, checked at start)."""
        loop = asyncio.get_running_loop()
        tls = self.credentials is not None
        server = await loop.create_server(
            lambda: StatusProtocol(state, tls, connections, self.revocations),
            sock=sock,
            ssl=self.credentials.server if self.credentials is not None else None,
            ssl_handshake_timeout=READ_TIMEOUT if tls else None,
        )
        log.info(
            "status listener on %s (%s)",
            self.config.access_point.status_listen,
            "mutual TLS: operator and administration certificates" if tls else "plaintext",
        )
        return server


def status_socket(
    config: AccessPointConfig, overrides: Overrides, source: str, reuse_port: bool
) -> socket.socket | None:
    """The status listener's socket (None without ``status_listen``), bound after checking
    that a plaintext one is on loopback."""
    settings = config.access_point
    if settings.status_listen is None:
        return None
    check_status_listen(settings, overrides.internal_tls is not None, source)
    return listening_socket(*parse_listen(settings.status_listen), reuse_port)


def run_worker(
    path: str | Path,
    overrides: Overrides,
    reuse_port: bool,
    managed: bool = False,
    tls_context: ssl.SSLContext | None = None,
) -> int:
    """Run one worker until SIGTERM; returns the exit code. ``managed``: ``path`` is the
    file the supervisor's config agent writes (:func:`read_published`); ``tls_context``:
    the supervisor's :func:`.tls.dispatcher_context`, the same in every worker."""
    loaded = file_identity(path)
    published: int | None = None
    if managed:
        published, config = load_published(path, overrides)
    else:
        config = load_config(path, overrides)
    tls = config.access_point.tls
    # Certificates are read before the socket listens: a connection never waits on them.
    server_tls = None if tls is None else ServerTLS(tls, str(path), tls_context)
    host, port = parse_listen(config.access_point.listen)
    sock = listening_socket(host, port, reuse_port)
    redirect = None
    if tls is not None and tls.redirect_listen is not None:
        rhost, rport = parse_listen(tls.redirect_listen)
        redirect = listening_socket(rhost, rport, reuse_port)
    status = status_socket(config, overrides, str(path), reuse_port)
    worker = Worker(path, overrides, config, loaded, published)
    worker.tls = server_tls
    worker.own_metrics = not reuse_port
    uvloop.run(worker.serve(sock, redirect, status))
    return 0


def run_access_point(
    config_path: str,
    listen: tuple[str, int] | None = None,
    workers: int | None = None,
    internal_tls: Path | None = None,
) -> int:
    """``gatehouse access-point``: one worker in this process, or a supervisor of N."""
    setup_logging()
    # A SIGHUP before the event loop handles it must not kill the process (reload = re-read,
    # and the file is read at start anyway).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    overrides = Overrides(listen=listen, workers=workers, internal_tls=internal_tls)
    if internal_tls is not None:
        Credentials(internal_tls)  # fail now, naming the file
    config = load_config(config_path, overrides)  # fail fast, before forking
    check_files(config.access_point.tls, config_path)
    check_status_listen(config.access_point, internal_tls is not None, config_path)
    count = config.access_point.workers
    if count == 1:
        return run_worker(config_path, overrides, reuse_port=False)
    from gatehouse.access_point.supervisor import Supervisor
    from gatehouse.metrics.workers import supervisor_metrics

    # Bind (without listening, so the kernel sends it no connections) to report a port that
    # is taken before any worker starts; the workers bind their own sockets.
    host, port = parse_listen(config.access_point.listen)
    listening_socket(host, port, reuse_port=True, listen=False).close()
    tls = config.access_point.tls
    if tls is not None and tls.redirect_listen is not None:
        listening_socket(*parse_listen(tls.redirect_listen), reuse_port=True, listen=False).close()
    if config.access_point.status_listen is not None:
        status = parse_listen(config.access_point.status_listen)
        listening_socket(*status, reuse_port=True, listen=False).close()
    links, on_start, on_stop = supervisor_metrics(config.access_point.metrics.listen)
    # Made before the fork: the workers share its session ticket keys.
    shared = None if tls is None else dispatcher_context(tls)
    supervisor = Supervisor(
        count,
        lambda: run_worker(config_path, overrides, reuse_port=True, tls_context=shared),
        on_start=on_start,
        on_stop=on_stop,
        links=links,
    )
    return supervisor.run()

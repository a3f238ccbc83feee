"""The Access Point following the Administration service: ``gatehouse access-point --state DIR``.

Design: in managed mode the AP always runs as a supervisor with its workers (even with
``workers: 1``), and the config agent runs in the supervisor, on a thread of its own with its
own event loop. The workers work as with ``--config``: they load a file and re-read it on
SIGHUP, so reload, crash restart and drain work unchanged. The agent writes each accepted
version to ``DIR/access-point.json`` (atomically) as ``{"published_version": N, "view":
{...}}``, so a worker knows which version Admin published what it loads (its health answer
says ``"config_version": N, "config_source": "admin"``; a SIGHUP from an operator that finds
the same version changes nothing), and sends SIGHUP to every worker; a worker
swaps its compiled runtime in one assignment, so a request sees the old or the new
configuration, never a mix. A worker that was still starting when the file was replaced
notices it once its SIGHUP handler is in place (:mod:`.server`).

Start-up order: register and get the version to start from (``asyncio.run`` in the parent,
closed again: no loop or thread is left behind), write the file, fork the workers, and only
then start the agent thread. A worker restarted after a crash is forked while that thread
runs; the child runs only the worker's code, on a fresh uvloop, and never touches the agent's
loop. The agent's thread blocks the signals the supervisor handles, so they always reach the
main thread (in ``os.wait``). SIGTERM/SIGINT cancel the agent's task, then the workers drain.

::

    STATE_DIR/              mode 0700
      admin.json            registration with Admin (gatehouse.internal.lkg)
      lkg.json              last-known-good signed envelope (gatehouse.internal.lkg)
      access-point.json     the running view the workers load, with its published version:
                            {"published_version": N, "view": {AccessPointConfig document}}

The agent's check refuses what a worker would refuse: the :class:`AccessPointConfig` model,
then a trial compile (a ``ca_file`` the AP cannot load, say). A refused version is acknowledged
with its error, and the running one stays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from gatehouse.access_point.runtime import OriginRegistry, compile_config
from gatehouse.access_point.server import (
    PUBLISHED_REVOKED,
    PUBLISHED_VERSION,
    PUBLISHED_VIEW,
    Overrides,
    listening_socket,
    load_published,
    run_worker,
)
from gatehouse.access_point.status import check_status_listen
from gatehouse.access_point.supervisor import FORWARDED, Supervisor
from gatehouse.access_point.tls import check_files, dispatcher_context
from gatehouse.access_point.upstream import make_ssl_context
from gatehouse.config.access_point import AccessPointConfig, parse_listen
from gatehouse.errors import ConfigError, GatehouseError
from gatehouse.internal.config_agent import Apply, ConfigAgent, Validate, describe
from gatehouse.internal.lkg import atomic_write
from gatehouse.internal.managed import Joining, Managed, model_check, start_managed
from gatehouse.internal.service_tls import TLS_DIR, state_credentials
from gatehouse.logs import setup_logging
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import CERT_FILE

__all__ = [
    "ROLE",
    "VIEW_FILE",
    "AgentThread",
    "ViewCheck",
    "check_usable",
    "run_managed",
    "write_view",
]

log = logging.getLogger("gatehouse.access_point")

ROLE = "access_point"
VIEW_FILE = "access-point.json"
SOURCE = "the published configuration"


def check_usable(config: AccessPointConfig, source: str = SOURCE) -> None:
    """Refuse what the model accepts but a worker could not compile.

    Compiling is free of side effects with a registry of its own and no Decider: it builds
    origins (no connections), TLS contexts (reading ``ca_file``), routes and header rules.

    Raises:
        ConfigError: with the field path when the cause is known (``resources[i].ca_file``).
    """
    check_files(config.access_point.tls, source)
    problems = []
    for index, resource in enumerate(config.resources):
        if resource.ca_file is None:
            continue
        if all(backend.scheme != "https" for backend in resource.parsed_backends()):
            continue  # the worker loads a CA file only for https backends
        try:
            make_ssl_context(resource.tls_verify, resource.ca_file)
        except OSError as exc:  # ssl.SSLError included
            reason = exc.strerror or str(exc)
            problems.append(
                (f"resources[{index}].ca_file", f"cannot load {resource.ca_file}: {reason}")
            )
    if problems:
        raise ConfigError(problems, source)
    try:
        compile_config(config, OriginRegistry(), 0, None)
    except Exception as exc:
        raise ConfigError(
            [("", f"the Access Point cannot use it: {describe(exc)}")], source
        ) from None


class ViewCheck:
    """The agent's check of a published view: what the workers would run (the view with the
    command-line overrides), validated and compiled; a plaintext ``status_listen`` off
    loopback is refused unless the AP has internal credentials (given, or enrolled in
    ``state_dir``)."""

    def __init__(self, overrides: Overrides, state_dir: Path | None = None) -> None:
        self.overrides = overrides
        self.state_dir = state_dir
        self._model = model_check(AccessPointConfig)

    def __call__(self, view: dict[str, Any]) -> AccessPointConfig:
        config = self.overrides.apply(self._model(view))
        check_usable(config)
        check_status_listen(config.access_point, self._has_credentials(), SOURCE)
        return config

    def _has_credentials(self) -> bool:
        if self.overrides.internal_tls is not None:
            return True
        return self.state_dir is not None and (self.state_dir / TLS_DIR / CERT_FILE).exists()


def write_view(path: Path, version: int, view: dict[str, Any], revoked: Iterable[int] = ()) -> None:
    """Replace the workers' file with ``view``, published by Admin as ``version``, and the
    serials revoked as of it (atomically: they read the old or the new); read by
    :func:`.server.read_published` and :func:`.server.read_revoked`."""
    document: dict[str, Any] = {PUBLISHED_VERSION: version, PUBLISHED_VIEW: view}
    document[PUBLISHED_REVOKED] = [f"{serial:x}" for serial in sorted(revoked)]
    atomic_write(path, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n", 0o600)


class AgentThread:
    """:meth:`ConfigAgent.run` on a thread of its own, with its own event loop, until
    :meth:`stop`. An unexpected failure of the agent is logged and it is started again."""

    RETRY_DELAY = 5.0

    def __init__(self, agent: ConfigAgent, apply: Apply, check: Validate) -> None:
        self.agent = agent
        self.apply = apply
        self.check = check
        self._thread = threading.Thread(target=self._main, name="config-agent", daemon=True)
        # Reentrant: stop() runs in a signal handler, which may interrupt stop() itself.
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Cancel the agent's task; returns at once (safe in a signal handler)."""
        with self._lock:
            self._stopping = True
            loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop is closed: the agent has stopped already

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; False if it is still running after ``timeout``."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        # Signals belong to the supervisor's main thread (it forwards them to the workers).
        signal.pthread_sigmask(signal.SIG_BLOCK, {*FORWARDED, signal.SIGCHLD})
        try:
            asyncio.run(self._follow())
        except Exception:
            log.exception("the config agent thread failed")

    async def _follow(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
        try:
            while True:
                try:
                    await self.agent.run(self.apply, self.check)
                except Exception:
                    log.exception(
                        "the config agent failed; it starts again in %g s", self.RETRY_DELAY
                    )
                    await asyncio.sleep(self.RETRY_DELAY)
        except asyncio.CancelledError:
            log.info(
                "config agent stopped at configuration version %d (published by the "
                "Administration service)",
                self.agent.version,
            )


class Follower:
    """Applies Admin's versions to the running workers: the file, then SIGHUP."""

    def __init__(self, path: Path, overrides: Overrides, workers: int) -> None:
        self.path = path
        self.overrides = overrides
        self.workers = workers
        self.supervisor: Supervisor | None = None
        #: The agent's revocation list, written next to every version for the workers.
        self.revocations: Revocations | None = None

    def apply(self, version: int, view: dict[str, Any]) -> None:
        revoked = self.revocations.serials if self.revocations is not None else ()
        write_view(self.path, version, view, revoked)
        if self.supervisor is not None:
            self.supervisor.signal_workers(signal.SIGHUP)
        log.info(
            "configuration version %d (published by the Administration service) written to "
            "%s; workers reload it",
            version,
            self.path,
        )
        wanted = view.get("access_point", {}).get("workers", 1)
        if self.overrides.workers is None and wanted != self.workers:
            log.warning(
                "version %d asks for %s workers; %d run until the Access Point restarts",
                version,
                wanted,
                self.workers,
            )


async def _start(state_dir: Path, joining: Joining | None, check: Validate) -> Managed | None:
    """:func:`start_managed`, or ``None`` when SIGTERM comes first (waiting for Admin's first
    version can take long)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopped = False

    def stop() -> None:
        nonlocal stopped
        stopped = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        return await start_managed(state_dir, ROLE, joining, check)
    except asyncio.CancelledError:
        if stopped:
            return None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_managed(state_dir: Path, joining: Joining | None, overrides: Overrides) -> int:
    """``gatehouse access-point --state DIR``: register if need be, start from the
    last-known-good or Admin's first version, and follow Admin until SIGTERM."""
    setup_logging()
    # A SIGHUP before the supervisor handles it must not kill the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    check = ViewCheck(overrides, Path(state_dir))
    managed = asyncio.run(_start(state_dir, joining, check))
    if managed is None:
        log.info("stopped before a configuration was received")
        return 0
    path = Path(state_dir) / VIEW_FILE
    try:
        write_view(path, managed.version, managed.view, managed.agent.revocations.serials)
    except OSError as exc:
        raise GatehouseError(f"cannot write {path}: {exc.strerror or exc}") from None
    if state_credentials(Path(state_dir)) is not None:
        # Enrolled: mutual TLS to the Policy services with the agent's certificate, which
        # the workers load again when the agent renews it.
        overrides = dataclasses.replace(overrides, internal_tls=Path(state_dir) / TLS_DIR)
    _, config = load_published(path, overrides)
    # As with --config: report a port that is taken before any worker starts.
    host, port = parse_listen(config.access_point.listen)
    listening_socket(host, port, reuse_port=True, listen=False).close()
    if config.access_point.status_listen is not None:
        check_status_listen(config.access_point, overrides.internal_tls is not None, str(path))
        status = parse_listen(config.access_point.status_listen)
        listening_socket(*status, reuse_port=True, listen=False).close()
    count = config.access_point.workers
    follower = Follower(path, overrides, count)
    follower.revocations = managed.agent.revocations
    agent = AgentThread(managed.agent, follower.apply, check)
    from gatehouse.metrics.workers import supervisor_metrics

    links, on_start, on_stop = supervisor_metrics(
        config.access_point.metrics.listen, managed.agent, agent.start, agent.stop
    )
    # Made before the fork: the workers share its session ticket keys.
    tls = config.access_point.tls
    shared = None if tls is None else dispatcher_context(tls)
    supervisor = Supervisor(
        count,
        lambda: run_worker(path, overrides, reuse_port=True, managed=True, tls_context=shared),
        on_start=on_start,
        on_stop=on_stop,
        links=links,
    )
    follower.supervisor = supervisor
    log.info(
        "access point starting with configuration version %d (published by the "
        "Administration service)",
        managed.version,
    )
    try:
        return supervisor.run()
    finally:
        agent.stop()
        if not agent.join(5.0):
            log.warning("the config agent did not stop within 5 s")

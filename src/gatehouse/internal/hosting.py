"""Run a service's ASGI app with uvicorn (uvloop + httptools), quietly and cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gatehouse.internal.peer import PEER_KEY
from gatehouse.logs import setup_logging
from gatehouse.trust.identity import Peer
from gatehouse.trust.revocation import Revocations
from gatehouse.trust.tls import peer_of_ssl

if TYPE_CHECKING:
    from gatehouse.metrics.listener import MetricsListener
    from gatehouse.metrics.service import ServiceMetrics


class CorkedTransport:
    """A transport whose writes of one loop turn go out as one.

    uvicorn writes a response's head and its body separately: two sends, and over TLS two
    records (an encryption and a send each, in Python's memory-BIO TLS). Held until the end
    of the current loop turn, the two are one. Everything else is the transport's own;
    closing sends what is held first, aborting drops it."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(bytes(data))

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorkedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        corked = CorkedTransport(transport, asyncio.get_running_loop())
        super().connection_made(cast(asyncio.Transport, corked))


class _PeerProtocol(CorkedProtocol):
    """uvicorn's httptools protocol that knows its TLS peer: it adds it to every request's
    scope, refuses revoked certificates and lets :class:`Revocations` close it later."""

    revocations: Revocations | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = peer_of_ssl(transport.get_extra_info("ssl_object"))
        revocations = self.revocations
        if revocations is not None and not revocations.track(self):
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.revocations is not None:
            self.revocations.forget(self)
        super().connection_lost(exc)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[PEER_KEY] = self.peer  # type: ignore[literal-required]


class Server(uvicorn.Server):
    """uvicorn's server, except that SIGTERM and SIGINT end it with exit code 0.

    uvicorn re-raises the caught signal after shutting down, which would kill the process with
    that signal instead of returning to the CLI.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._stop) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        # A second Ctrl-C skips waiting for open connections.
        self.force_exit = self.should_exit and sig == signal.SIGINT
        self.should_exit = True

    #: The service's metrics and their listener (``metrics.listen``), started with the server.
    metrics: ServiceMetrics | None = None
    _metrics_listener: MetricsListener | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        # What exists once the service has started (its modules, app, models, caches) lives
        # as long as the process: frozen, the collector no longer walks it, so a full
        # collection costs what was allocated since, not the whole heap (the Administration
        # service's took ~90 ms every few publishes, the p99 of publishing).
        gc.collect()
        gc.freeze()
        metrics = self.metrics
        if metrics is not None and metrics.listen is not None and not self.should_exit:
            from gatehouse.config.access_point import parse_listen
            from gatehouse.metrics.listener import MetricsListener

            self._metrics_listener = MetricsListener(metrics.render)
            await self._metrics_listener.start(*parse_listen(metrics.listen))

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        if self._metrics_listener is not None:
            self._metrics_listener.close()
        await super().shutdown(sockets)


def server_config(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    revocations: Revocations | None = None,
) -> uvicorn.Config:
    """uvicorn's configuration for a service.

    With ``tls`` (a server context from :class:`gatehouse.trust.tls.Credentials`) the
    listener speaks only TLS and every request's scope names its peer (:func:`scope_peer`);
    ``revocations`` refuses and closes connections of revoked certificates.
    """
    extra: dict[str, Any] = {}
    http: type[asyncio.Protocol] = CorkedProtocol
    if tls is not None:
        context = tls
        extra["ssl_context_factory"] = lambda _config, _default: context
        http = type("PeerProtocol", (_PeerProtocol,), {"revocations": revocations})
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=http,
        ws="none",
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=True,
        # Services decide themselves which peers' X-Forwarded-For to believe
        # (trusted_proxies); uvicorn's own rewriting would trust every loopback peer.
        proxy_headers=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        **extra,
    )


def serve(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    revocations: Revocations | None = None,
    metrics: ServiceMetrics | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code (0 on a clean stop). With
    ``metrics`` (and its ``listen``), requests are counted and a metrics listener runs."""
    setup_logging()
    if metrics is not None and metrics.listen is not None:
        from gatehouse.metrics.asgi import RequestMetrics

        app = RequestMetrics(app)
    server = Server(server_config(app, host, port, tls=tls, revocations=revocations))
    server.metrics = metrics
    server.run()
    return 0 if server.started else 1


@contextlib.contextmanager
def on_stop_signal(callback: Callable[[], None]) -> Iterator[None]:
    """Run ``callback`` on the current loop at SIGTERM/SIGINT, then chain to the server's own
    handler: never-ending responses (event streams, long polls) are ended at once, so the
    server's graceful shutdown, which waits for open responses, is not held up by them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, object] = {}

    def handler(sig: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        chained = previous.get(sig)
        if callable(chained):
            chained(sig, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for number, old in previous.items():
            if signal.getsignal(number) is handler:
                signal.signal(number, old)  # type: ignore[arg-type]

"""Run a service's ASGI app with uvicorn (uvloop + httptools), quietly and cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from gatehouse.logs import setup_logging


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


def serve(app: ASGIApp, host: str, port: int) -> int:
    """Serve until SIGTERM or SIGINT; returns the exit code (0 on a clean stop)."""
    setup_logging()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
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
    )
    server = Server(config)
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

"""Run a service's Starlette app with uvicorn (uvloop + httptools), quietly and cleanly."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp

from gatehouse.logs import setup_logging


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
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1

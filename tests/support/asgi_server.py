"""An ASGI app on a real uvicorn server in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config) -> AsyncIterator[str]:
    """Start ``config``'s server in the running loop and yield its base URL
    (``https://HOST:PORT`` when it speaks TLS); stop it and wait for it on the way out. A
    server that fails to start raises its own error instead of waiting forever."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped before it started")
        await asyncio.sleep(0.005)
    scheme = "https" if config.is_ssl else "http"
    try:
        yield f"{scheme}://{config.host}:{config.port}"
    finally:
        server.should_exit = True
        await task

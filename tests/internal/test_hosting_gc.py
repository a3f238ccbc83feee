"""A service's server freezes what exists once it has started, so that the collector's full
collections walk only what was allocated since (the Administration service's full collections
of its whole heap were the p99 of publishing: see docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import gc

from starlette.applications import Starlette

from gatehouse.internal.hosting import Server, server_config
from tests.support.processes import free_port


def test_the_started_server_has_frozen_its_start_up_objects() -> None:
    async def scenario() -> int:
        server = Server(server_config(Starlette(), "127.0.0.1", free_port()))
        task = asyncio.create_task(server.serve())
        try:
            async with asyncio.timeout(20):
                while not server.started:
                    await asyncio.sleep(0.01)
            return gc.get_freeze_count()
        finally:
            server.should_exit = True
            await task

    gc.unfreeze()
    try:
        frozen = asyncio.run(scenario())
    finally:
        gc.unfreeze()  # the rest of this test process collects as before
    assert frozen > 10_000  # the imported modules and the app at least

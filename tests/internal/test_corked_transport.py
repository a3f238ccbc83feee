"""The internal servers' corked transport: a response's head and body written in one loop
turn leave as one write (one TLS record), in order, and closing or aborting keeps its word."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from gatehouse.internal.hosting import CorkedTransport


class Recorder:
    """A transport that records what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def corked() -> tuple[CorkedTransport, Recorder]:
    raw = Recorder()
    return CorkedTransport(cast(asyncio.Transport, raw), asyncio.get_running_loop()), raw


def test_writes_of_one_loop_turn_leave_as_one_write_in_order() -> None:
    async def scenario() -> None:
        transport, raw = corked()
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(memoryview(b"{}"))
        assert raw.writes == []
        assert transport.get_write_buffer_size() == 21
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        transport.writelines([b"a", b"b"])
        await asyncio.sleep(0)
        assert raw.writes[1:] == [b"ab"]
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest delegated

    asyncio.run(scenario())


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def scenario() -> None:
        transport, raw = corked()
        transport.write(b"last answer")
        transport.close()
        assert (raw.writes, raw.closed) == ([b"last answer"], True)
        await asyncio.sleep(0)
        assert raw.writes == [b"last answer"]  # the scheduled flush finds nothing more

        transport, raw = corked()
        transport.write(b"never sent")
        transport.abort()
        await asyncio.sleep(0)
        assert (raw.writes, raw.aborted) == ([], True)

    asyncio.run(scenario())

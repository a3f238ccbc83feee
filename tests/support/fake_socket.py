"""An asyncio transport without a socket, for driving the Access Point's connections in
process: it records what is written, and can be told to fail.

    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
"""

from __future__ import annotations

from typing import Any


class FakeTransport:
    """Records what is written (``sent``); holds its protocol (``protocol``) when a test sets
    it, as real transports do until the connection is lost; ``fail``: every write raises."""

    def __init__(self, peer: str = "127.0.0.1", fail: bool = False) -> None:
        self.peer = peer
        self.fail = fail
        self.sent: list[bytes] = []
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("the socket broke")
        self.sent.append(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

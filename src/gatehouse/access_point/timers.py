"""A cheap inactivity timer: refreshing it on every chunk is one attribute write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class InactivityTimer:
    """Calls ``callback`` once nothing has ``touch``-ed the timer for ``timeout`` seconds."""

    __slots__ = ("_callback", "_handle", "_loop", "last", "timeout")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, timeout: float, callback: Callable[[], None]
    ) -> None:
        self._loop = loop
        self.timeout = timeout
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self.last = 0.0

    def start(self, timeout: float | None = None) -> None:
        if timeout is not None:
            self.timeout = timeout
        self.last = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(self.last + self.timeout, self._fire)

    def touch(self) -> None:
        self.last = self._loop.time()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def _fire(self) -> None:
        deadline = self.last + self.timeout
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        self._handle = None
        self._callback()

"""Long polls for configuration: the newest version number, and a way to wait for a newer one.

Every service keeps one ``GET /api/v1/config/{id}?after=N&wait=S`` open; the request parks
here until a publish (or rollback) announces a number above ``N``, or ``S`` seconds pass. A
publish wakes every parked request at once, which is how a new version reaches an Access
Point in the DMZ without Admin ever connecting to it.
"""

from __future__ import annotations

import asyncio


class VersionWatch:
    """The newest published version number; wakes waiters when it grows.

    Each announcement replaces the current :class:`asyncio.Event` with a fresh one and sets
    the old one, so a waiter never misses a publish that happens between its check and its
    wait: it checks the number again after every wake-up.
    """

    def __init__(self, latest: int = 0) -> None:
        self._latest = latest
        self._changed = asyncio.Event()
        self._closed = False
        self._waiting = 0

    @property
    def latest(self) -> int:
        return self._latest

    @property
    def waiting(self) -> int:
        """How many requests are parked right now."""
        return self._waiting

    def published(self, number: int) -> None:
        """Announce version ``number``; every waiter wakes and looks again."""
        self._latest = max(self._latest, number)
        self._wake()

    def close(self) -> None:
        """Answer every parked request now (the service is stopping) and park no more."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_newer(self, after: int, timeout: float) -> int | None:
        """The newest number once it is above ``after``; None after ``timeout`` seconds
        without one (or at once when closed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiting += 1
        try:
            while self._latest <= after:
                remaining = deadline - loop.time()
                if self._closed or remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    return None if self._latest <= after else self._latest
            return self._latest
        finally:
            self._waiting -= 1

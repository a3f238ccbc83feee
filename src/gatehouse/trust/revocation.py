"""Revoked certificates, as the Administration service publishes them in every view, and the
connections they must no longer hold.

:class:`Revocations` lives on a service's event loop: the server registers every
authenticated connection with :meth:`track`, and :meth:`update` (called when a view with a
new revocation list is applied) closes the open ones a revoked certificate made, so a revoked
service is cut off at the publish, not at its certificate's expiry. Failover clients
:meth:`~Revocations.watch` it too: one whose endpoint last showed a certificate now revoked
takes that endpoint out of its order at once, with or without a connection open to it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Protocol

from gatehouse.trust.identity import Peer

__all__ = ["Revocations", "Tracked", "Watcher"]

log = logging.getLogger("gatehouse.trust")


class Tracked(Protocol):
    """An open connection with the peer that made it."""

    @property
    def peer(self) -> Peer | None: ...

    def abort(self) -> None: ...


class Watcher(Protocol):
    """Told every new revocation list (a failover client: see :meth:`Revocations.watch`)."""

    def revocations_changed(self, serials: frozenset[int]) -> None: ...


class Revocations:
    def __init__(self, serials: Iterable[int] = ()) -> None:
        self.serials: frozenset[int] = frozenset(serials)
        self._open: set[Tracked] = set()
        #: Weak: a client dropped without being closed leaves no trace here.
        self._watchers: weakref.WeakSet[Watcher] = weakref.WeakSet()

    def revoked(self, peer: Peer | None) -> bool:
        return peer is not None and peer.serial in self.serials

    def track(self, conn: Tracked) -> bool:
        """Register an open connection; False (and nothing registered) if its peer is revoked."""
        if self.revoked(conn.peer):
            return False
        self._open.add(conn)
        return True

    def watch(self, watcher: Watcher) -> None:
        """Tell ``watcher`` every new list :meth:`update` takes (not the same one again),
        after the connections it revokes are closed."""
        self._watchers.add(watcher)

    def forget(self, conn: Tracked) -> None:
        self._open.discard(conn)

    def update(self, serials: Iterable[int]) -> int:
        """Take a new revocation list; abort every open connection it revokes. Returns how
        many were closed."""
        previous, self.serials = self.serials, frozenset(serials)
        closing = [conn for conn in self._open if self.revoked(conn.peer)]
        for conn in closing:
            peer = conn.peer
            log.warning(
                "closing a connection of revoked %s (serial %x)",
                peer.identity if peer else "?",
                peer.serial if peer else 0,
            )
            self._open.discard(conn)
            conn.abort()
        if self.serials != previous:
            for watcher in list(self._watchers):
                watcher.revocations_changed(self.serials)
        return len(closing)

    def __len__(self) -> int:
        return len(self._open)

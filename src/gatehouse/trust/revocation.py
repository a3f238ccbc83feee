"""Revoked certificates, as the Administration service publishes them in every view, and the
connections they must no longer hold.

:class:`Revocations` lives on a service's event loop: the server registers every
authenticated connection with :meth:`track`, and :meth:`update` (called when a view with a
new revocation list is applied) closes the open ones a revoked certificate made, so a revoked
service is cut off at the publish, not at its certificate's expiry.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from gatehouse.trust.identity import Peer

__all__ = ["Revocations", "Tracked"]

log = logging.getLogger("gatehouse.trust")


class Tracked(Protocol):
    """An open connection with the peer that made it."""

    @property
    def peer(self) -> Peer | None: ...

    def abort(self) -> None: ...


class Revocations:
    def __init__(self, serials: Iterable[int] = ()) -> None:
        self.serials: frozenset[int] = frozenset(serials)
        self._open: set[Tracked] = set()

    def revoked(self, peer: Peer | None) -> bool:
        return peer is not None and peer.serial in self.serials

    def track(self, conn: Tracked) -> bool:
        """Register an open connection; False (and nothing registered) if its peer is revoked."""
        if self.revoked(conn.peer):
            return False
        self._open.add(conn)
        return True

    def forget(self, conn: Tracked) -> None:
        self._open.discard(conn)

    def update(self, serials: Iterable[int]) -> int:
        """Take a new revocation list; abort every open connection it revokes. Returns how
        many were closed."""
        self.serials = frozenset(serials)
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
        return len(closing)

    def __len__(self) -> int:
        return len(self._open)

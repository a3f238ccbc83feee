"""Revocations in process: which connections an update closes, and whom it tells."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gatehouse.trust.identity import POLICY, Identity, Peer
from gatehouse.trust.revocation import Revocations


@dataclass(eq=False)
class Conn:
    peer: Peer | None
    aborted: bool = False

    def abort(self) -> None:
        self.aborted = True


@dataclass(eq=False)
class Watcher:
    told: list[frozenset[int]] = field(default_factory=list)

    def revocations_changed(self, serials: frozenset[int]) -> None:
        self.told.append(serials)


def _peer(serial: int) -> Peer:
    return Peer(Identity(POLICY, f"ps{serial}"), serial, datetime(2030, 1, 1, tzinfo=UTC))


def test_an_update_closes_the_revoked_connections_and_refuses_them_later() -> None:
    revocations = Revocations()
    one, two = Conn(_peer(1)), Conn(_peer(2))
    assert revocations.track(one)
    assert revocations.track(two)
    assert revocations.update({2}) == 1
    assert (one.aborted, two.aborted) == (False, True)
    assert len(revocations) == 1
    assert not revocations.track(Conn(_peer(2)))  # a new connection of serial 2: refused


def test_watchers_hear_each_new_list_once_and_are_not_kept_alive() -> None:
    revocations = Revocations()
    watcher = Watcher()
    revocations.watch(watcher)
    revocations.update({1})
    revocations.update({1})  # the same list again (a reload): nothing new to tell
    revocations.update({1, 2})
    revocations.update(())
    assert watcher.told == [frozenset({1}), frozenset({1, 2}), frozenset()]
    dropped = weakref.ref(watcher)
    del watcher
    gc.collect()
    assert dropped() is None  # the list does not keep a dropped client alive
    revocations.update({3})

"""Who called: the authenticated TLS peer an internal server puts in each request's ASGI
scope (:mod:`gatehouse.internal.hosting`), read by the call declarations. A leaf module with
no web framework in it, so clients (the Access Point) import the declarations without it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatehouse.trust.identity import Peer

__all__ = ["PEER_KEY", "scope_peer"]

#: Where an internal server puts the authenticated peer (``Peer``, or None without a
#: Gatehouse certificate) in each request's ASGI scope. Absent: a plaintext listener.
PEER_KEY = "gatehouse.peer"


def scope_peer(scope: Mapping[str, Any]) -> tuple[bool, Peer | None]:
    """``(tls, peer)`` of a request: whether it came over an authenticated listener, and
    who its certificate names."""
    if PEER_KEY not in scope:
        return False, None
    peer: Peer | None = scope[PEER_KEY]
    return True, peer

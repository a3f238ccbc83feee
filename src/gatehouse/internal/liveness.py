"""Whether the peer of an idle pooled connection has already closed it.

A server that dies (or closes a kept-alive connection) sends a FIN or a RST that the kernel
has received before the event loop gets round to it; a request sent on that connection
meanwhile fails after it was written, and one that cannot be resent (a POST with its body
streamed, a call that is not retry-safe) then fails for the user. One ``recv`` with
``MSG_PEEK`` asks the kernel directly (about 4 µs), so callers that could not resend a
request check the connection they are about to reuse.
"""

from __future__ import annotations

import asyncio
import socket

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def peer_has_closed(transport: asyncio.BaseTransport | None) -> bool:
    """True when the idle connection's peer closed it, reset it or sent something (an idle
    HTTP/1.1 connection must be silent: anything there makes it unusable)."""
    if transport is None or transport.is_closing():
        return True
    raw = transport.get_extra_info("socket")
    if raw is None:
        return False
    fd = raw.fileno()
    if fd < 0:
        return True
    # The loop's socket objects refuse recv(); a temporary object on the same descriptor,
    # detached afterwards, does not close or change it.
    sock = socket.socket(fileno=fd)
    try:
        sock.recv(1, _PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.detach()
    return True

"""Parsers that belong to no connection: what a lost connection keeps instead of its own.

An httptools parser holds bound methods of the protocol it calls back, so a connection and
its parser form a reference cycle that only the cyclic garbage collector frees, together with
everything the connection still reaches (for a TLS connection, about 30 objects: its SSL
protocol, transport, SSL object and memory BIOs). A connection that swaps its parser for one
of these when it is lost is freed by reference counting at once; the attribute keeps its type.
"""

from __future__ import annotations

import httptools


class _NoCallbacks:
    """A protocol with no llhttp callbacks: the parser calls nothing on it."""


DETACHED_REQUEST_PARSER = httptools.HttpRequestParser(_NoCallbacks())
DETACHED_RESPONSE_PARSER = httptools.HttpResponseParser(_NoCallbacks())

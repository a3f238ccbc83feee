"""Why a client connection stops reading, as bits of ``ClientConnection.paused``: shared by the
connection and its exchanges (a leaf module, so that neither imports the other for them)."""

from __future__ import annotations

PAUSE_UPSTREAM = 1  # the backend's socket buffer is full
PAUSE_BUFFER = 2  # request body waiting for a backend connection
PAUSE_PIPELINE = 4  # too many pipelined requests queued
PAUSE_INPUT_DONE = 8  # no more requests will be read on this connection

"""Metric names, label values and histogram buckets shared by every service.

Conventions (https://prometheus.io/docs/practices/naming/): the ``gatehouse_`` prefix, base
units (seconds, bytes), ``_total`` for counters, and labels whose values are bounded by the
configuration (resource ids, backend URLs, service endpoints) or by the code (methods,
status codes, outcomes) — never user names, session ids or request paths.
"""

from __future__ import annotations

PREFIX = "gatehouse_"

#: Request and call durations: sub-millisecond steps where an Access Point answers from its
#: decision cache, up to the seconds of a slow backend.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: Request methods counted by name; any other is counted as ``OTHER``.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
OTHER_METHOD = "OTHER"
#: The resource label of a request that matched no resource (404, the AP's own health).
NO_RESOURCE = "none"


def method_label(method: str) -> str:
    """A request method as a label value: one of :data:`METHODS` or ``OTHER``."""
    return method if method in METHODS else OTHER_METHOD

"""The error of the local cluster.

GatehouseError
 └── ClusterError   the cluster cannot do what was asked (already running, a port taken, a
                    service that does not start)
"""

from __future__ import annotations

from gatehouse.errors import GatehouseError


class ClusterError(GatehouseError):
    """The cluster cannot do what was asked: already running, a port taken, a service that
    does not start (the message then ends with the tail of its log)."""

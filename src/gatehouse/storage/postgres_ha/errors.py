"""The error of the local PostgreSQL pair.

GatehouseError
 └── ReplicationError   a PostgreSQL binary is missing or a step failed (the server log's
                        tail is in the message)
"""

from __future__ import annotations

from gatehouse.errors import GatehouseError


class ReplicationError(GatehouseError):
    """A PostgreSQL binary is missing or a step of running the local pair failed."""

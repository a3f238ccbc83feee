"""Storage errors.

GatehouseError
 └── DatabaseUnavailable   the database cannot be reached or cannot take writes right now
                           (connection refused, server shutting down, primary switching);
                           services answer 503 so callers fail over
"""

from __future__ import annotations

from gatehouse.errors import GatehouseError


class DatabaseUnavailable(GatehouseError):
    """The database is down, unreachable, busy or read-only (e.g. during a failover)."""

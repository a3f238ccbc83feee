"""The ``database`` section every service that writes to a database reads: how long work
that needs the database waits for it through a failover (:mod:`gatehouse.storage.retry`)."""

from __future__ import annotations

from pydantic import Field

from gatehouse.config.base import Strict
from gatehouse.config.units import Seconds
from gatehouse.storage.retry import DEFAULT_FAILOVER_WAIT


class DatabaseSettings(Strict):
    """``failover_wait``: seconds a sign-in, a logout, a session touch or a lockout counter
    waits for an unavailable database (a primary being replaced) before answering 503.
    Read at start."""

    failover_wait: Seconds = Field(default=DEFAULT_FAILOVER_WAIT, ge=0, le=300)

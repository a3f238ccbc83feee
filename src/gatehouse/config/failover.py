"""Settings of the failover client (``gatehouse.internal.client``): the timeouts of one
attempt, the background health probes and fail-back. Every service that calls another one
holds one of these per called service (see docs/_draft_failover.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gatehouse.config.base import Strict
from gatehouse.config.units import Seconds

#: Defaults, shared with :class:`gatehouse.internal.client.FailoverClient`'s own arguments.
CONNECT_TIMEOUT = 0.5
TIMEOUT = 2.0
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 1.0
RISE = 2
FALL = 2
RETRY_AFTER = 2.0

PositiveSeconds = Annotated[Seconds, Field(gt=0, allow_inf_nan=False)]


class FailoverSettings(Strict):
    """How one caller fails over between the ordered endpoints of one service.

    The defaults suit services on one LAN, where a healthy endpoint connects in well under a
    millisecond and a failover happens within the user's own request (compare Envoy's
    ``connect_timeout`` and outlier detection, HAProxy's ``timeout connect`` and
    ``check inter 2s rise 2``):

    - ``connect_timeout`` (0.5 s): a dead host that drops packets costs the user at most
      this, once; after that the endpoint is down and calls skip it. Short enough to hide in
      one request, long enough for a busy peer's accept queue.
    - ``timeout`` (2 s): a whole answer, per attempt. A hung endpoint costs one user this
      much before the next endpoint is tried; internal answers take milliseconds.
    - ``probe_interval`` (1 s): how often each *down* endpoint is probed (nothing is probed
      while every endpoint is up). ``null`` turns probes off: fail-back then happens through
      ``retry_after`` trials by real calls.
    - ``probe_timeout`` (1 s): a probe's whole answer (it connects within
      ``connect_timeout``). A node slower than this to say it is healthy is not taken back.
    - ``rise`` (2): passed probes in a row that bring a down endpoint back (fail-back). Two
      filter out a process that answers once while still starting or flapping, and cost only
      ``rise * probe_interval`` of extra time on the secondary.
    - ``fall`` (2): background checks of an *up* endpoint (the refreshes of the warm standby
      connections to the next backup) that time out in a row before it is marked down. On a
      machine too busy to answer a health check within ``probe_timeout``, one slow answer
      would flap the backup down and up again, and every flip costs new TLS handshakes on
      the same busy machine. A refused or reset connection, and any failed call, still mark
      an endpoint down at once. Probes of a *down* endpoint that time out back off: 2, 4, then
      at most 8 intervals apart, until one is refused at once or passes.
    - ``retry_after`` (2 s): only when probes are off: seconds after a failure before one
      call tries the down endpoint again in its preferred place.
    """

    connect_timeout: PositiveSeconds = CONNECT_TIMEOUT
    timeout: PositiveSeconds = TIMEOUT
    probe_interval: PositiveSeconds | None = PROBE_INTERVAL
    probe_timeout: PositiveSeconds = PROBE_TIMEOUT
    rise: int = Field(default=RISE, ge=1, le=100, strict=True)
    fall: int = Field(default=FALL, ge=1, le=100, strict=True)
    retry_after: Annotated[Seconds, Field(ge=0, allow_inf_nan=False)] = RETRY_AFTER

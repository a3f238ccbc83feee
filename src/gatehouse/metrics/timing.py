"""How the Access Point's request path times requests: one clock read per read event, and
histograms whose bucket counts are native integers.

Both are compiled with the request path (:mod:`gatehouse.compiled`), where an
:class:`EventClock` read is an attribute load and an observation in a :class:`Histogram` a
few comparisons of C doubles and one increment of a C integer field: no list, no float
object kept, nothing to fold later.

- :class:`EventClock`: the connections read the clock once when a read event begins (a
  client's request bytes, a backend's response bytes) and every time taken while that event
  is handled is that one reading, as nginx caches its time per event. A request answered
  within one backend read costs two clock reads (its head, the backend's response) instead of
  four (head, sent to the backend, response head, end); what the reading leaves out is the
  Access Point's own handling of that event, microseconds, below the first bucket (0.1 ms) by
  two orders of magnitude. Outside a read event (a decision that came back, a connection
  made, a timeout) :meth:`EventClock.now` reads the clock itself.
- :class:`Histogram`: the buckets of :data:`~gatehouse.metrics.names.DURATION_BUCKETS`
  (``le``: a value equal to a bound counts in that bound's bucket), a decision tree over the
  bounds with the sub-millisecond ones first. :func:`check_bounds` (run by the tests) proves
  the tree agrees with the bounds.
"""

from __future__ import annotations

from bisect import bisect_left
from time import perf_counter

from mypy_extensions import i64

from gatehouse.metrics.names import DURATION_BUCKETS

#: A histogram as plain numbers (snapshots, merging, exposition): one count per bucket of
#: DURATION_BUCKETS, the +Inf bucket's, then the sum of the observed values.
Hist = list[float]
HIST_LEN = len(DURATION_BUCKETS) + 2


class EventClock:
    """The time the read event being handled began (``stamp``), 0.0 between events."""

    def __init__(self) -> None:
        self.stamp = 0.0

    def now(self) -> float:
        """The event's time inside a read event, else the clock's (``time.perf_counter``)."""
        stamp = self.stamp
        if stamp:
            return stamp
        return perf_counter()


class Histogram:
    """Observed durations counted per bucket, in native fields (no list on the hot path)."""

    def __init__(self) -> None:
        self.b0: i64 = 0
        self.b1: i64 = 0
        self.b2: i64 = 0
        self.b3: i64 = 0
        self.b4: i64 = 0
        self.b5: i64 = 0
        self.b6: i64 = 0
        self.b7: i64 = 0
        self.b8: i64 = 0
        self.b9: i64 = 0
        self.b10: i64 = 0
        self.b11: i64 = 0
        self.b12: i64 = 0
        self.b13: i64 = 0
        self.b14: i64 = 0
        self.b15: i64 = 0
        self.inf: i64 = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration (a negative one in the first bucket, NaN in +Inf only)."""
        self.total += seconds
        if seconds <= 0.001:
            if seconds <= 0.00025:
                if seconds <= 0.0001:
                    self.b0 += 1
                else:
                    self.b1 += 1
            elif seconds <= 0.0005:
                self.b2 += 1
            else:
                self.b3 += 1
        elif seconds <= 0.01:
            if seconds <= 0.0025:
                self.b4 += 1
            elif seconds <= 0.005:
                self.b5 += 1
            else:
                self.b6 += 1
        elif seconds <= 0.1:
            if seconds <= 0.025:
                self.b7 += 1
            elif seconds <= 0.05:
                self.b8 += 1
            else:
                self.b9 += 1
        elif seconds <= 1.0:
            if seconds <= 0.25:
                self.b10 += 1
            elif seconds <= 0.5:
                self.b11 += 1
            else:
                self.b12 += 1
        elif seconds <= 2.5:
            self.b13 += 1
        elif seconds <= 5.0:
            self.b14 += 1
        elif seconds <= 10.0:
            self.b15 += 1
        else:
            self.inf += 1

    def count(self) -> int:
        """How many durations were observed."""
        return int(sum(self.values()[:-1]))

    def values(self) -> Hist:
        """The counts of the buckets, the +Inf bucket's and the sum, as plain numbers."""
        return [
            float(self.b0),
            float(self.b1),
            float(self.b2),
            float(self.b3),
            float(self.b4),
            float(self.b5),
            float(self.b6),
            float(self.b7),
            float(self.b8),
            float(self.b9),
            float(self.b10),
            float(self.b11),
            float(self.b12),
            float(self.b13),
            float(self.b14),
            float(self.b15),
            float(self.inf),
            self.total,
        ]


def bucket_of(seconds: float) -> int:
    """The index of the bucket :meth:`Histogram.observe` counts ``seconds`` in."""
    hist = Histogram()
    hist.observe(seconds)
    counts = hist.values()[:-1]
    return counts.index(1.0)


def check_bounds() -> list[str]:
    """Where :meth:`Histogram.observe` disagrees with DURATION_BUCKETS (``le`` buckets, as
    ``bisect_left`` into the bounds): each bound, and the values just below and above it."""
    wrong = []
    if HIST_LEN != 18:
        wrong.append(f"{len(DURATION_BUCKETS)} bounds, the histogram has 16 fields")
    for bound in DURATION_BUCKETS:
        for value in (bound * (1 - 1e-12), bound, bound * (1 + 1e-12)):
            want = bisect_left(DURATION_BUCKETS, value)
            got = bucket_of(value)
            if got != want:
                wrong.append(f"{value!r}: bucket {got}, the bounds say {want}")
    return wrong

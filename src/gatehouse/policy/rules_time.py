"""Time-window conditions: wall-clock windows in an IANA time zone, correct across DST changes.

A :class:`TimeWindow` is active when the local time in its zone is on one of its days, at or
after ``start`` and before ``end``. A window whose end is not after its start crosses midnight
and belongs to the day it started: ``days: [fri], from: "22:00", to: "06:00"`` is active from
Friday 22:00 to Saturday 06:00.

The window is judged on the wall clock: on the day clocks go forward, a boundary inside the
skipped hour takes effect at the jump; on the day they go back, wall times in the repeated hour
occur twice and are judged each time.

Besides its value, a window tells when that value next changes (:meth:`TimeWindow.next_change`)
so that decisions are never cached past an edge. The answer is memoised per condition: within
``[computed at, next change)`` an evaluation costs one time zone conversion.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatehouse.policy.rules import FALSE, TRUE, EvalContext, Verdict

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = frozenset(range(7))
DAY = 86400

_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)(?::([0-5]\d))?$")
# Boundaries are looked for this many local days ahead; a weekly pattern that shows no change
# within a week never changes.
_HORIZON_DAYS = 9
# Zone offsets are sampled this often to find DST transitions (real zones never change twice
# within six hours).
_SAMPLE_SECONDS = 6 * 3600
_FOREVER = datetime.max.replace(tzinfo=UTC)


def parse_day(name: object) -> int:
    """``"mon"`` (or ``"Monday"``) → 0 … ``"sun"`` → 6; ValueError otherwise."""
    if isinstance(name, str):
        key = name.strip().lower()
        if key in DAY_NAMES:
            return DAY_NAMES.index(key)
        if key in _FULL_DAY_NAMES:
            return _FULL_DAY_NAMES.index(key)
    raise ValueError(f"unknown day {name!r} (use {', '.join(DAY_NAMES)})")


def parse_clock(value: object, *, allow_end_of_day: bool = False) -> int:
    """``"08:00"`` or ``"08:00:30"`` → seconds after midnight; ``"24:00"`` only as an end."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 18:00 as the sexagesimal number 1080.
        raise ValueError(f'not a time: {value!r} (write times as quoted strings, e.g. "18:00")')
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'not a time: {value!r} (use "HH:MM", e.g. "08:00")')
    hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
    total = hours * 3600 + minutes * 60 + seconds
    if total > DAY or (total == DAY and not allow_end_of_day):
        limit = '"24:00"' if allow_end_of_day else '"23:59"'
        raise ValueError(f"not a time: {value!r} (the latest is {limit})")
    return total


def load_zone(name: object) -> ZoneInfo:
    """An IANA time zone by name; ValueError when unknown."""
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ValueError(f"unknown time zone {name!r} (use an IANA name, e.g. Europe/Stockholm)")


class _Memo:
    """The last answer of a window: active from ``since`` until ``until`` (UTC)."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state: tuple[datetime, datetime, bool] | None = None


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Active on ``days`` (0 = Monday) from ``start`` to ``end`` seconds after local midnight.

    ``end`` may be ``86400`` (end of day); ``end <= start`` crosses midnight.
    """

    days: frozenset[int]
    start: int
    end: int
    zone: tzinfo
    _memo: _Memo = field(default_factory=_Memo, init=False, repr=False, compare=False)

    def evaluate(self, ctx: EvalContext, /) -> Verdict:
        now = ctx.now.astimezone(UTC)
        state = self._memo.state
        if state is None or not state[0] <= now < state[1]:
            value, change = self._scan(now)
            state = (now, change or _FOREVER, value)
            self._memo.state = state
        if state[1] is not _FOREVER:
            ctx.limit(state[1])
        return TRUE if state[2] else FALSE

    def active_at(self, instant: datetime) -> bool:
        """Whether the window is active at the aware ``instant``."""
        local = instant.astimezone(self.zone)
        return self._active(local.weekday(), local.hour * 3600 + local.minute * 60 + local.second)

    def next_change(self, instant: datetime) -> datetime | None:
        """The first instant after ``instant`` when the value changes (UTC), None if never."""
        return self._scan(instant.astimezone(UTC))[1]

    def _active(self, weekday: int, seconds: int) -> bool:
        if self.start < self.end:
            return self.start <= seconds < self.end and weekday in self.days
        if seconds >= self.start:
            return weekday in self.days
        return seconds < self.end and (weekday - 1) % 7 in self.days

    def _scan(self, now: datetime) -> tuple[bool, datetime | None]:
        # Between two candidates the wall clock runs without crossing a boundary or jumping,
        # so the value is constant there: the first candidate with another value is the edge.
        current = self.active_at(now)
        for candidate in self._candidates(now):
            if self.active_at(candidate) != current:
                return current, candidate
        return current, None

    def _candidates(self, now: datetime) -> list[datetime]:
        found: set[datetime] = set()
        today = now.astimezone(self.zone).date()
        end = self.end if self.start < self.end else self.end + DAY
        for offset in range(-1, _HORIZON_DAYS):
            day: date = today + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            midnight = datetime.combine(day, time())
            for seconds in (self.start, end):
                found.update(_instants(midnight + timedelta(seconds=seconds), self.zone))
        found.update(_transitions(self.zone, now, now + timedelta(days=_HORIZON_DAYS + 1)))
        return sorted(c for c in found if c > now)


def _instants(wall: datetime, zone: tzinfo) -> list[datetime]:
    """The UTC instants whose local time is ``wall``: one, two (clocks back) or none (gap)."""
    out = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            out.append(instant)
    return out


def _offset(zone: tzinfo, timestamp: int) -> timedelta | None:
    return datetime.fromtimestamp(timestamp, zone).utcoffset()


def _transitions(zone: tzinfo, start: datetime, stop: datetime) -> list[datetime]:
    """Instants in ``[start, stop]`` at which the zone's UTC offset changes."""
    out = []
    low = math.floor(start.timestamp())
    last = math.ceil(stop.timestamp())
    offset = _offset(zone, low)
    while low < last:
        high = min(low + _SAMPLE_SECONDS, last)
        later = _offset(zone, high)
        if later != offset:
            a, b = low, high
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(zone, mid) == offset:
                    a = mid
                else:
                    b = mid
            out.append(datetime.fromtimestamp(b, UTC))
            offset = later
        low = high
    return out

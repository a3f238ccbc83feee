"""What one run of a side-by-side benchmark can tell: the interval of its paired ratios.

The benchmarks that compare two systems load them in turns, in blocks (A, B, B, A, ...), so
block ``i`` of one and block ``i`` of the other ran next to each other. The ratio of each such
pair is one estimate of B / A; their mean, with Student's t, gives a 95 % confidence interval.
Where that interval holds values on both sides of a goal, the run cannot tell whether the goal
is met, whatever its medians say.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

#: Student's t for a two-sided 95 % interval, by degrees of freedom (pairs - 1).
T95 = {
    1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
    10: 2.23, 11: 2.20, 12: 2.18, 13: 2.16, 14: 2.14, 15: 2.13, 16: 2.12, 17: 2.11,
    18: 2.10, 19: 2.09, 20: 2.09, 21: 2.08, 22: 2.07, 23: 2.07, 24: 2.06, 25: 2.06,
    26: 2.06, 27: 2.05, 28: 2.05, 29: 2.05,
}  # fmt: skip
#: Past 29 degrees of freedom (30: 2.04; infinity: 1.96).
T95_MORE = 2.05


def pair_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """The 95 % interval of the mean of ``b[i] / a[i]`` over the pairs (pairs with ``a[i]``
    zero left out); None with fewer than two pairs."""
    ratios = [y / x for x, y in zip(a, b, strict=False) if x]
    if len(ratios) < 2:
        return None
    mean = statistics.fmean(ratios)
    half = T95.get(len(ratios) - 1, T95_MORE) * statistics.stdev(ratios) / len(ratios) ** 0.5
    return mean - half, mean + half


def verdict(
    ratio: float, goal: float, bounds: tuple[float, float] | None, by: str = "the medians"
) -> str:
    """``met`` or ``not met`` for ``ratio`` (what ``by`` names) against ``goal`` (at least);
    ``cannot tell`` with what ``ratio`` says when ``bounds`` hold values on both sides of it."""
    said = "met" if ratio >= goal else "not met"
    if bounds is not None and bounds[0] < goal <= bounds[1]:
        return f"cannot tell ({said} by {by})"
    return said

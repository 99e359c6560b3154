"""The one percentile definition of every test and bench report, so their p50s and p95s compare."""
import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least q% of the values at or below it.

    Args:
        values: the samples (any order); at least one.
        q: the percentile, 0 < q <= 100 (0 gives the smallest value).

    Returns:
        One of the samples (never an interpolation between two), so a p95 of 20 latencies is the 19th.

    Raises:
        ValueError: no samples, or q outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be from 0 to 100, got {q}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def median(values: Sequence[float]) -> float:
    """The 50th nearest-rank percentile (a sample, not the mean of the middle two)."""
    return percentile(values, 50)

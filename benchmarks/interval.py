"""A ratio of medians with a bootstrap 95% interval: what every headline ratio carries.

Percentile bootstrap (Efron and Tibshirani, *An Introduction to the Bootstrap*, 1993,
ch. 13): resample each side's repeats with replacement, take the ratio of the medians,
and report the 2.5th and 97.5th percentiles over the resamples. The generator is seeded,
so the same results file always gives the same interval (the README section generated
from it must not change by itself). With fewer than two repeats on a side there is no
interval, and a goal can only be ``undecided``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Ratio:
    value: float  # median of the numerators over median of the denominators
    low: float | None  # None: too few repeats for an interval
    high: float | None
    n_top: int
    n_bottom: int

    def text(self, digits: int = 2) -> str:
        if self.low is None or self.high is None:
            return (
                f"{self.value:.{digits}f} (no interval: {self.n_top} and {self.n_bottom} repeats)"
            )
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def ratio_with_interval(top: Sequence[float], bottom: Sequence[float]) -> Ratio | None:
    """``median(top) / median(bottom)`` with its bootstrap interval; ``None`` if a side is
    empty or the denominator's median is zero."""
    if not top or not bottom or float(np.median(bottom)) == 0.0:
        return None
    value = float(np.median(top)) / float(np.median(bottom))
    if len(top) < 2 or len(bottom) < 2:
        return Ratio(value, None, None, len(top), len(bottom))
    rng = np.random.default_rng(SEED)
    tops = np.asarray(top, dtype=float)
    bottoms = np.asarray(bottom, dtype=float)
    top_medians = np.median(tops[rng.integers(0, tops.size, (RESAMPLES, tops.size))], axis=1)
    bottom_medians = np.median(
        bottoms[rng.integers(0, bottoms.size, (RESAMPLES, bottoms.size))], axis=1
    )
    ratios = top_medians[bottom_medians > 0] / bottom_medians[bottom_medians > 0]
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Ratio(value, float(low), float(high), len(top), len(bottom))

"""Statistics that fit a sweep's sample: a few repeats per point, on a noisy machine.

A point has 1 to ~10 repeats. With so few, a standard deviation or a normal-theory
interval says little; what we report instead:

- the **median** of the repeats (robust to the one repeat a background job disturbed),
  with the **min-max** range (every repeat is inside it, nothing is hidden);
- a **percentile-bootstrap 95% interval of the median** (Efron & Tibshirani, *An
  Introduction to the Bootstrap*, 1993, ch. 13): resample the repeats with replacement,
  take each resample's median, keep the 2.5th and 97.5th percentiles. With 5 repeats the
  interval can only end on sample values, so it is coarse, but it is honest about it;
- for a headline **ratio of medians** (server A over server B), the same bootstrap with
  each side's repeats resampled independently, then a **verdict** against the goal:
  ``met`` when the whole interval satisfies it, ``missed`` when none of it does,
  ``undecided`` when the interval crosses the goal (more repeats, or a quieter machine,
  would decide it).

Every resampling uses a fixed seed, so the same results file always prints the same
intervals. Fewer than :data:`MIN_BOOTSTRAP_N` repeats on a side give no interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000  # the 2.5th percentile of 4000 medians moves < 1% between seeds here
SEED = 20260
MIN_BOOTSTRAP_N = 2  # one repeat has no spread to resample

Verdict = Literal["met", "missed", "undecided"]
Comparison = Literal[">=", "<=", "<", ">"]


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Ratio:
    """A ratio of two medians and its bootstrap interval (``None`` with too few repeats)."""

    value: float
    interval: Interval | None


def _medians_of_resamples(values: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    sample = np.asarray(values, dtype=float)
    picks = rng.integers(0, sample.size, size=(RESAMPLES, sample.size))
    medians: np.ndarray = np.median(sample[picks], axis=1)
    return medians


def _percentiles(values: np.ndarray) -> Interval:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high))


def median_interval(values: Sequence[float], seed: int = SEED) -> Interval | None:
    """Percentile-bootstrap 95% interval of the median of ``values``."""
    if len(values) < MIN_BOOTSTRAP_N:
        return None
    return _percentiles(_medians_of_resamples(values, np.random.default_rng(seed)))


def ratio_of_medians(
    numerator: Sequence[float], denominator: Sequence[float], seed: int = SEED
) -> Ratio:
    """median(numerator) / median(denominator), each side's repeats resampled on its own."""
    if not numerator or not denominator:
        raise ValueError("a ratio needs at least one repeat on each side")
    value = float(np.median(numerator) / np.median(denominator))
    if min(len(numerator), len(denominator)) < MIN_BOOTSTRAP_N:
        return Ratio(value, None)
    rng = np.random.default_rng(seed)
    ratios = _medians_of_resamples(numerator, rng) / _medians_of_resamples(denominator, rng)
    return Ratio(value, _percentiles(ratios))


def _holds(value: float, comparison: Comparison, goal: float) -> bool:
    if comparison == ">=":
        return value >= goal
    if comparison == ">":
        return value > goal
    if comparison == "<=":
        return value <= goal
    return value < goal


def verdict(ratio: Ratio, comparison: Comparison, goal: float) -> Verdict:
    """``met``/``missed`` only when the whole interval is on one side of the goal."""
    if ratio.interval is None:
        return "undecided"
    low_ok = _holds(ratio.interval.low, comparison, goal)
    high_ok = _holds(ratio.interval.high, comparison, goal)
    if low_ok and high_ok:
        return "met"
    if not low_ok and not high_ok:
        return "missed"
    return "undecided"


def ratio_if_defined(numerator: Sequence[float], denominator: Sequence[float]) -> Ratio | None:
    """:func:`ratio_of_medians`, or ``None`` when a side has no repeat or the denominator's
    median is zero (a ratio to nothing is not a result)."""
    if not numerator or not denominator or float(np.median(denominator)) == 0.0:
        return None
    return ratio_of_medians(numerator, denominator)


def ratio_text(ratio: Ratio, digits: int = 2) -> str:
    """The one text form of a ratio: ``0.97 [0.93, 1.01]``, or ``0.97 (no interval)``."""
    if ratio.interval is None:
        return f"{ratio.value:.{digits}f} (no interval)"
    low, high = ratio.interval.low, ratio.interval.high
    return f"{ratio.value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"

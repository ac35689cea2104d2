"""The sweep's statistics on synthetic samples: intervals, ratios and verdicts."""

from __future__ import annotations

import pytest

from benchmarks.stats import Interval, Ratio, median_interval, ratio_of_medians, verdict


def test_median_interval_contains_the_median_and_stays_within_the_sample() -> None:
    values = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 30.0]
    interval = median_interval(values)
    assert interval is not None
    # From 7 repeats the interval runs from the 2nd to the 6th smallest: one outlier
    # cannot drag the median's interval to it.
    assert interval == Interval(11.0, 15.0)


def test_with_five_repeats_the_interval_is_the_whole_range() -> None:
    # A resample of 5 has its median at the largest value with probability 5.8% > 2.5%,
    # so 5 repeats cannot give a 95% interval narrower than min-max (docs/sweep.md).
    assert median_interval([10.0, 11.0, 12.0, 13.0, 30.0]) == Interval(10.0, 30.0)


def test_median_interval_is_reproducible_and_absent_for_one_repeat() -> None:
    values = [5.0, 7.0, 6.0, 9.0, 8.0]
    assert median_interval(values) == median_interval(values)
    assert median_interval([5.0]) is None


def test_identical_repeats_give_a_point_interval() -> None:
    assert median_interval([4.0, 4.0, 4.0]) == Interval(4.0, 4.0)


def test_ratio_of_medians_and_its_interval() -> None:
    ratio = ratio_of_medians([95.0, 96.0, 97.0, 98.0, 99.0], [100.0, 100.0, 101.0, 99.0, 100.0])
    assert ratio.value == pytest.approx(0.97)
    assert ratio.interval is not None and ratio.interval.contains(0.97)
    assert 0.9 < ratio.interval.low < ratio.interval.high < 1.05


def test_interval_crossing_the_goal_is_undecided() -> None:
    # Medians 0.92 apart but noisy on both sides: some resamples fall under 0.9.
    noisy = ratio_of_medians([80.0, 88.0, 92.0, 97.0, 105.0], [95.0, 99.0, 100.0, 104.0, 110.0])
    assert noisy.interval is not None and noisy.interval.contains(0.9)
    assert verdict(noisy, ">=", 0.9) == "undecided"


def test_interval_wholly_on_one_side_is_met_or_missed() -> None:
    tight_high = ratio_of_medians([99.0, 100.0, 101.0], [100.0, 100.5, 99.5])
    tight_low = ratio_of_medians([50.0, 51.0, 49.0], [100.0, 100.5, 99.5])
    assert verdict(tight_high, ">=", 0.9) == "met"
    assert verdict(tight_low, ">=", 0.9) == "missed"
    assert verdict(tight_low, "<", 1.0) == "met"
    assert verdict(tight_high, "<=", 0.5) == "missed"


def test_no_interval_no_verdict() -> None:
    single = ratio_of_medians([50.0], [100.0, 101.0])
    assert single == Ratio(50.0 / 100.5, None)
    assert verdict(single, "<", 1.0) == "undecided"

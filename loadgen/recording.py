"""Latency recording: integer microseconds in an HdrHistogram, batched off the hot path.

``hdrh.HdrHistogram.record_value`` is pure Python (1-2 microseconds per call), which
would be a large share of a request's cost at 100k requests/s. So recording has three
stages, each cheaper per value than the next is per call:

1. the hot loop appends ``latency_us`` to a plain list (tens of nanoseconds);
2. every ~100 ms :meth:`BatchRecorder.flush` counts the list into a dict of
   value -> count (``Counter.update``, a loop in C);
3. :meth:`BatchRecorder.histogram` (at the end, or whenever the dict holds more than
   ``FOLD_DISTINCT`` distinct values) records each distinct value once with its count.

The result is exactly the histogram one ``record_value`` per latency would give. Folding
only per distinct value matters: with 100 connections latencies spread over thousands of
distinct microsecond values, so even a 100 ms batch has nearly as many distinct values as
values, while a whole run has no more distinct values than its latency range in
microseconds, and ``FOLD_DISTINCT`` bounds the dict's memory in any case.

Three significant digits keep the relative error of any recorded value, hence of any
percentile, below 0.1% (the issue asks for 1%). Histograms travel between processes and
into result files in the library's standard compressed encoding (``encode()``), which
:func:`merge_encoded` decodes and adds exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour; longer values are clamped to it
SIGNIFICANT_DIGITS = 3
# A dict of this many value -> count entries takes a few MB and folds in tens of ms.
FOLD_DISTINCT = 50_000
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


class BatchRecorder:
    """A histogram fed in batches from a plain list the hot loop appends to."""

    __slots__ = ("_counts", "_histogram", "pending")

    def __init__(self) -> None:
        self._histogram = new_histogram()
        self._counts: Counter[int] = Counter()
        self.pending: list[int] = []

    def flush(self) -> None:
        """Move the pending latencies into the value -> count table."""
        self._counts.update(self.pending)
        self.pending.clear()
        if len(self._counts) > FOLD_DISTINCT:
            self._fold()

    def discard(self) -> None:
        self.pending.clear()

    def histogram(self) -> HdrHistogram:
        """Everything flushed so far, as a histogram."""
        self._fold()
        return self._histogram

    def encode(self) -> str:
        self.flush()
        return encode(self.histogram())

    def _fold(self) -> None:
        record = self._histogram.record_value
        for value_us, count in self._counts.items():
            record(min(max(value_us, 0), HIGHEST_US), count)
        self._counts.clear()


def merge_encoded(encoded: Iterable[str]) -> HdrHistogram:
    """One histogram holding every value of every encoded histogram in ``encoded``."""
    merged = new_histogram()
    for text in encoded:
        merged.decode_and_add(text)
    return merged


def encode(histogram: HdrHistogram) -> str:
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


@dataclass(frozen=True)
class LatencySummary:
    """Fixed percentiles of one histogram, in integer microseconds (mean is a float)."""

    p50: int
    p90: int
    p99: int
    p99_9: int
    max: int
    mean: float
    count: int

    @classmethod
    def of(cls, histogram: HdrHistogram) -> LatencySummary:
        count = histogram.get_total_count()
        if count == 0:
            return cls(0, 0, 0, 0, 0, 0.0, 0)
        values = histogram.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        by_name = {name: int(values[p]) for name, p in PERCENTILES}
        return cls(
            p50=by_name["p50"],
            p90=by_name["p90"],
            p99=by_name["p99"],
            p99_9=by_name["p99_9"],
            max=int(histogram.get_max_value()),
            mean=round(float(histogram.get_mean_value()), 1),
            count=count,
        )

    def to_json(self) -> dict[str, int | float]:
        return {
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p99_9": self.p99_9,
            "max": self.max,
            "mean": self.mean,
        }

"""Latency recording: integer nanoseconds in an HdrHistogram, batched off the hot path.

Latencies are recorded at the resolution of the clock (``time.monotonic_ns``), 3
significant digits: any recorded value, hence any percentile, is within 0.1% of the
truth (values below 2048 ns exactly; then 1024 to 2048 steps per power of two).
Truncating to whole microseconds, as before, was up to 3% low at loopback's 36 us.

``hdrh.HdrHistogram.record_value`` is pure Python (1-2 microseconds per call), which
would be a large share of a request's cost at 100k requests/s. So recording has three
stages, each cheaper per value than the next is per call:

1. the hot loop appends ``latency_ns`` to a plain list (tens of nanoseconds);
2. every ~100 ms :meth:`BatchRecorder.flush` turns the list into a numpy array, maps
   each value to its histogram bucket (values the histogram cannot tell apart share one)
   and adds the batch to a numpy array of counts per bucket (``numpy.bincount``);
3. :meth:`BatchRecorder.histogram` (at the end) records each bucket once with its count.

The result is exactly the histogram one ``record_value`` per latency would give. Nearly
every nanosecond value is distinct, so counting raw values in a dict (as the microsecond
version did with ``Counter.update``) would fold as many values as it recorded; there are
only 33,792 buckets over the whole range, however many values.

Histograms travel between processes and into result files in the library's standard
compressed encoding (``encode()``), which :func:`merge_encoded` decodes and adds exactly.
Their unit is the nanosecond; the result file's ``latency_us`` figures are microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

LOWEST_NS = 1
HIGHEST_NS = 3_600_000_000_000  # one hour; longer values are clamped to it
SIGNIFICANT_DIGITS = 3
# 3 significant digits: 2 x 10^3 values at unit resolution, rounded up to a power of two,
# 2048 = 2^11 (HdrHistogram's sub_bucket_count). A value of bit length b > 11 lands in a
# bucket whose values share their top 11 bits: its lowest value is v >> (b - 11) << (b - 11).
SUB_BUCKET_BITS = 11
HALF_BUCKET = 1 << (SUB_BUCKET_BITS - 1)
# Bucket s >= 1 holds values of bit length 11 + s; index (s << 10) + (v >> s) numbers the
# buckets' slots without gaps from the exact values 0..2047 (s = 0) on.
MAX_SHIFT = HIGHEST_NS.bit_length() - SUB_BUCKET_BITS
SLOTS = (MAX_SHIFT + 2) * HALF_BUCKET
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)


def slot_index(values_ns: list[int]) -> np.ndarray:
    """Each value's histogram slot, after clamping it to the histogram's range."""
    values = np.clip(np.array(values_ns, dtype=np.int64), 0, HIGHEST_NS)
    # frexp's exponent is the bit length, exactly: values below 2^53 convert to float64
    # without rounding.
    _, bit_length = np.frexp(values.astype(np.float64))
    shift = np.maximum(bit_length - SUB_BUCKET_BITS, 0)
    index: np.ndarray = (shift << (SUB_BUCKET_BITS - 1)) + (values >> shift)
    return index


def slot_value(index: int) -> int:
    """The lowest value of slot ``index`` (HdrHistogram's ``get_lowest_equivalent_value``)."""
    shift = max(0, index // HALF_BUCKET - 1)
    return (index - (shift << (SUB_BUCKET_BITS - 1))) << shift


class BatchRecorder:
    """A histogram fed in batches from a plain list the hot loop appends to."""

    __slots__ = ("_counts", "_histogram", "pending")

    def __init__(self) -> None:
        self._histogram = new_histogram()
        self._counts = np.zeros(SLOTS, dtype=np.int64)
        self.pending: list[int] = []

    def flush(self) -> None:
        """Move the pending latencies into the per-slot counts."""
        if not self.pending:
            return
        self._counts += np.bincount(slot_index(self.pending), minlength=SLOTS)
        self.pending.clear()

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
        for index in np.flatnonzero(self._counts).tolist():
            record(slot_value(index), int(self._counts[index]))
        self._counts[:] = 0


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
    """Fixed percentiles of one nanosecond histogram, in microseconds (floats)."""

    p50: float
    p90: float
    p99: float
    p99_9: float
    max: float
    mean: float
    count: int

    @classmethod
    def of(cls, histogram: HdrHistogram) -> LatencySummary:
        count = histogram.get_total_count()
        if count == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
        values = histogram.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        by_name = {name: values[p] / 1000 for name, p in PERCENTILES}
        return cls(
            p50=by_name["p50"],
            p90=by_name["p90"],
            p99=by_name["p99"],
            p99_9=by_name["p99_9"],
            max=histogram.get_max_value() / 1000,
            mean=float(histogram.get_mean_value()) / 1000,
            count=count,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any], count: int) -> LatencySummary:
        """Read back :meth:`to_json` (``count`` is not in it: it is the histogram's)."""
        return cls(
            p50=float(data["p50"]),
            p90=float(data["p90"]),
            p99=float(data["p99"]),
            p99_9=float(data["p99_9"]),
            max=float(data["max"]),
            mean=float(data["mean"]),
            count=count,
        )

    def to_json(self) -> dict[str, float]:
        # Three decimals: the nanosecond the values were recorded in.
        return {
            "p50": round(self.p50, 3),
            "p90": round(self.p90, 3),
            "p99": round(self.p99, 3),
            "p99_9": round(self.p99_9, 3),
            "max": round(self.max, 3),
            "mean": round(self.mean, 3),
        }

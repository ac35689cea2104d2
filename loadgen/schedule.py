"""When things happen: the run's phases, paced starts, and how work splits over workers.

All times are ``time.monotonic_ns()`` values. On Linux that is ``CLOCK_MONOTONIC``, one
clock for every process on the machine (``clock_gettime(2)``), so the parent can hand
absolute phase boundaries to its workers and they all cut the window at the same instant.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phases:
    """Warm-up from ``warmup_start_ns``; the measurement window is [measure_start, end)."""

    warmup_start_ns: int
    measure_start_ns: int
    end_ns: int

    @classmethod
    def starting_at(cls, start_ns: int, warmup_s: float, duration_s: float) -> Phases:
        measure_start_ns = start_ns + round(warmup_s * 1e9)
        return cls(start_ns, measure_start_ns, measure_start_ns + round(duration_s * 1e9))


class Pacer:
    """Slot ``n`` is due at ``start_ns + n / rate``: a constant rate with no drift.

    Slots are computed from the start, never from the previous slot, so a late wake-up
    makes the following slots due at once instead of shifting the whole schedule (the
    wrk2 way of not hiding a stall: the requests it delayed still count from when they
    were due).
    """

    __slots__ = ("interval_ns", "next_due_ns", "slot", "start_ns")

    def __init__(self, start_ns: int, rate_per_s: float) -> None:
        self.start_ns = start_ns
        self.interval_ns = 1e9 / rate_per_s
        self.slot = 0
        self.next_due_ns = start_ns

    def advance(self) -> int:
        """Take the due slot; return its due time."""
        due = self.next_due_ns
        self.slot += 1
        self.next_due_ns = self.start_ns + int(self.slot * self.interval_ns)
        return due


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` items over ``parts`` workers, sizes differing by at most one."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]

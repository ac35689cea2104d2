"""The measurement window of one worker: where it opens and closes, what it counted.

The parent hands every worker the same absolute :class:`~loadgen.schedule.Phases`; each
worker opens its window at ``measure_start_ns`` and closes it at ``end_ns`` (or at a stop),
on its own clock reading, so all windows cut at the same instant (``CLOCK_MONOTONIC`` is
one clock for the machine, ``clock_gettime(2)``). Latencies recorded outside the window
(warm-up, drain) are discarded; inside it they are flushed into the histograms on every
tick. At each edge the window reads the worker's running totals and its CPU time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from loadgen.recording import BatchRecorder
from loadgen.schedule import Phases


@dataclass(frozen=True)
class Totals:
    """The worker's running totals at one instant (the hot loop keeps them in locals)."""

    requests: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True)
class WindowCounts:
    """What happened between the window's edges."""

    requests: int
    bytes_in: int
    bytes_out: int
    cpu_s: float  # user + system CPU time of this process
    window_ns: int  # the window's length on the phase clock, cut short by a stop
    cpu_wall_ns: int  # wall time between the two CPU readings


NOTHING = WindowCounts(0, 0, 0, 0.0, 0, 0)


class Window:
    """One worker's window; ``recorder_uncorrected`` exists in open loop only."""

    def __init__(self, phases: Phases, open_loop: bool) -> None:
        self.phases = phases
        self.recorder = BatchRecorder()
        self.recorder_uncorrected = BatchRecorder() if open_loop else None
        self.measuring = False
        self.closed = False
        self.counts = NOTHING
        duration_ns = phases.end_ns - phases.measure_start_ns
        self.per_second = [0] * -(-duration_ns // 1_000_000_000)  # completions per second
        self._start = Totals(0, 0, 0)
        self._cpu_start_ns = self._wall_start_ns = 0

    def contains(self, t_ns: int) -> bool:
        return self.phases.measure_start_ns <= t_ns < self.phases.end_ns

    def due_to_open(self, now: int) -> bool:
        return not self.measuring and not self.closed and now >= self.phases.measure_start_ns

    def due_to_close(self, now: int) -> bool:
        return self.measuring and now >= self.phases.end_ns

    def next_edge_ns(self) -> int:
        return self.phases.end_ns if self.measuring else self.phases.measure_start_ns

    def open(self, totals: Totals) -> None:
        self.discard()
        self.measuring = True
        self._start = totals
        # CPU time at the window's edges, to the nanosecond (clock_gettime(2),
        # CLOCK_PROCESS_CPUTIME_ID), not os.times()'s 10 ms ticks: a 1 s window would
        # carry a 1% error per edge.
        self._cpu_start_ns, self._wall_start_ns = time.process_time_ns(), time.monotonic_ns()

    def close(self, now: int, totals: Totals) -> bool:
        """Close at ``now``; True when the window had opened (its counts are then set)."""
        if self.closed:
            return False
        self.closed = True
        if not self.measuring:
            return False  # stopped during the warm-up: an empty window
        self.measuring = False
        cpu_ns, wall_ns = time.process_time_ns(), time.monotonic_ns()
        start = self._start
        self.counts = WindowCounts(
            requests=totals.requests - start.requests,
            bytes_in=totals.bytes_in - start.bytes_in,
            bytes_out=totals.bytes_out - start.bytes_out,
            cpu_s=(cpu_ns - self._cpu_start_ns) / 1e9,
            window_ns=self.end_or(now) - self.phases.measure_start_ns,
            cpu_wall_ns=wall_ns - self._wall_start_ns,
        )
        return True

    def end_or(self, now: int) -> int:
        """Where a window closed at ``now`` ends: at ``now`` if stopped early."""
        return min(now, self.phases.end_ns)

    def flush(self) -> None:
        self.recorder.flush()
        if self.recorder_uncorrected is not None:
            self.recorder_uncorrected.flush()

    def discard(self) -> None:
        self.recorder.discard()
        if self.recorder_uncorrected is not None:
            self.recorder_uncorrected.discard()

    def seconds(self) -> list[int]:
        """Completions per whole second of the window."""
        return self.per_second[: max(0, self.counts.window_ns) // 1_000_000_000]

"""Stub load generators for the open-loop kinds: given an offered rate, a known answer.

A stub server has a knee: below ``knee_rps`` it keeps up with p99 ``fast_p99_us``; above,
it achieves ``knee_rps`` and its p99 is ``slow_p99_us``. ``slo_knee_rps`` makes the p99
cross the objective at a lower rate than the throughput knee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.experiments import ExperimentSpec, OpenLoopSpec, PointSpec, SweepPlan
from benchmarks.open_loop import Step
from benchmarks.results import ResultsFile


def step(
    offered: float,
    achieved: float,
    p99_us: float,
    *,
    repeat: int = 1,
    client_bound: bool = False,
) -> Step:
    return Step(
        offered_rps=offered,
        achieved_rps=achieved,
        sent_rps=offered,
        p50_us=p99_us / 4,
        p99_us=p99_us,
        p999_us=p99_us * 2,
        max_us=p99_us * 3,
        late=0,
        refused=0,
        errors=0,
        client_bound=client_bound,
        loadgen_status=0,
        loadgen_json=f"loadgen/stub-{offered:g}-r{repeat}.json",
        server_cpu_util=0.5,
        cpu_us_per_request=5.0,
        repeat=repeat,
        started_at="2026-01-01T00:00:00+00:00",
    )


@dataclass(frozen=True)
class StubServer:
    knee_rps: float
    slo_knee_rps: float = math.inf
    fast_p99_us: float = 300.0
    slow_p99_us: float = 50_000.0

    def at(self, offered: float, repeat: int = 1) -> Step:
        achieved = min(offered, self.knee_rps)
        slow = offered > self.knee_rps or offered > self.slo_knee_rps
        return step(
            offered, achieved, self.slow_p99_us if slow else self.fast_p99_us, repeat=repeat
        )


@dataclass
class StubMeasure:
    """A ``Measure`` over one stub server per (impl, idle); records every call."""

    servers: dict[tuple[str, int], StubServer]
    calls: list[PointSpec] = field(default_factory=list)

    def __call__(self, point: PointSpec, repeat: int) -> Step:
        assert point.rate_rps is not None
        self.calls.append(point)
        return self.servers[(point.impl, point.idle)].at(point.rate_rps, repeat)


SPEC = OpenLoopSpec(
    slo_ms=5.0, start_rps=4000.0, factor=2.0, precision=0.05, max_steps=12, overload_steps=1
)
KNEES = {"poll": {0: 60_000.0, 1000: 20_000.0, 10_000: 2_500.0}, "epoll-lt": {0: 64_000.0}}


def knees(impls: tuple[str, ...], colds: tuple[int, ...]) -> dict[tuple[str, int], StubServer]:
    """Knees that fall with cold connections for select and poll, not for epoll."""
    base = {"select": 50_000.0, "poll": 60_000.0, "epoll-lt": 64_000.0, "epoll-et": 58_000.0}
    servers = {}
    for impl in impls:
        for cold in colds:
            falls = impl in ("select", "poll")
            servers[(impl, cold)] = StubServer(
                base[impl] / (1 + cold / 400) if falls else base[impl]
            )
    return servers


def plan_with(*experiments: ExperimentSpec) -> SweepPlan:
    return SweepPlan(experiments, repeats=1, duration_s=1.0, warmup_s=0.5)


def empty_results(run_dir: Path, plan: SweepPlan) -> ResultsFile:
    environment: dict[str, Any] = {"cpu_model": "test", "cpus": 2, "kernel": "6.0"}
    pinning = {"server_cpu": 0, "client_cpus": [1], "loadgen": []}
    return ResultsFile.create(run_dir, "stub", plan, ["muxlab", "sweep"], environment, pinning, [])

"""Open-loop measurements: one step is one run of ``muxlab load --rate R``, kept as data.

The closed-loop experiments keep every connection busy, so what they show at many
connections is saturation: by Little's law the latency of one request is connections over
throughput. The open-loop kinds offer a fixed request rate instead, as wrk2 does, and
record latency from each request's intended send time. A step whose achieved rate falls
short of the offered rate (``overloaded``) is not a bad sample here: past the knee that is
the measurement (Banga and Mogul, USENIX 1998; Gammo, Brecht et al., OLS 2004).

Each step reuses the sweep's run of one point (:func:`benchmarks.sweep.run_point_once`:
server pinned and started, load generator pinned, counters at the phase lines, both
reaped) and reads the load generator's result back as a typed
:class:`~loadgen.result.LoadResult` (:func:`step_from_result`). :func:`step_from_load`
reads a result file of any schema by its keys, for files the typed reader refuses: a
schema 1 file, which has no ``open_loop``, is read as offered = the rate asked for and
achieved = ``rps``.

Results live beside the grid points in ``results.json``: ``capacity`` (one record per
search, every step in it) and ``latency`` (one record per point, every repeat in it), each
saved after every step, so Ctrl-C keeps what was measured and ``--resume`` continues.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from benchmarks.experiments import (
    OPEN_LOOP_KINDS,
    ExperimentSpec,
    OpenLoopSpec,
    PointSpec,
    SweepPlan,
    ceiling_reason,
)
from benchmarks.results import ResultsFile, RunResult
from loadgen.result import LoadResult

if TYPE_CHECKING:
    from benchmarks.sweep import SweepConfig

# A step is overloaded when it achieved less than this fraction of the offered rate: the
# load generator's own threshold (LOAD_CONTRACT, loadgen/result.py), restated here so that
# a schema 1 result file, which has no "overloaded", is judged the same way.
ACHIEVED_FRACTION = 0.99

# Measures one open-loop point (its rate set) for one repeat; raises
# benchmarks.sweep.PointFailed when the run produced no measurement.
Measure = Callable[[PointSpec, int], "Step"]


@dataclass(frozen=True)
class Step:
    """One open-loop run: what was offered, what came back, and how late."""

    offered_rps: float
    achieved_rps: float
    sent_rps: float | None  # None from a schema 1 load generator
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    late: int | None  # due but unanswered at the window's end (schema 2)
    refused: int | None  # due on a connection that had failed (schema 2)
    errors: int
    client_bound: bool
    loadgen_status: int
    loadgen_json: str
    server_cpu_util: float | None
    cpu_us_per_request: float | None
    repeat: int
    started_at: str

    @property
    def overloaded(self) -> bool:
        return self.achieved_rps < ACHIEVED_FRACTION * self.offered_rps

    def good(self, slo_ms: float) -> bool:
        """Kept up with the offered rate, and its p99 met the latency objective."""
        return not self.overloaded and self.p99_us <= slo_ms * 1000.0

    def to_json(self, slo_ms: float | None = None) -> dict[str, Any]:
        data = asdict(self)
        data["overloaded"] = self.overloaded
        if slo_ms is not None:
            data["good"] = self.good(slo_ms)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        return cls(**{f.name: data[f.name] for f in fields(cls)})


def _with_run(run: RunResult, **measured: Any) -> Step:
    """A step: what the load generator measured, and the sweep's record of the run."""
    return Step(
        **measured,
        loadgen_status=run.loadgen_status,
        loadgen_json=run.loadgen_json,
        server_cpu_util=run.metrics.get("server_cpu_util"),
        cpu_us_per_request=run.metrics.get("cpu_us_per_request"),
        repeat=run.repeat,
        started_at=run.started_at,
    )


def step_from_load(point: PointSpec, run: RunResult, load: dict[str, Any]) -> Step:
    """A step from the sweep's run record and the load generator's result file."""
    assert point.rate_rps is not None
    open_loop = load.get("open_loop") or {}
    latency = load["latency_us"]
    sent = open_loop.get("sent_rps")
    return _with_run(
        run,
        offered_rps=float(open_loop.get("offered_rps", point.rate_rps)),
        achieved_rps=float(open_loop.get("achieved_rps", load["rps"])),
        sent_rps=None if sent is None else float(sent),
        p50_us=float(latency["p50"]),
        p99_us=float(latency["p99"]),
        # "p99_9" is the load generator's key; "p999" is accepted as well.
        p999_us=float(latency.get("p99_9", latency.get("p999", latency["max"]))),
        max_us=float(latency["max"]),
        late=open_loop.get("late"),
        refused=open_loop.get("refused"),
        errors=sum(int(v) for v in load["errors"].values()),
        client_bound=bool(load.get("client_bound", run.client_bound)),
    )


def step_from_result(point: PointSpec, run: RunResult, load: LoadResult) -> Step:
    """A step from the sweep's run record and the load generator's typed result."""
    assert point.rate_rps is not None
    slots = load.open_loop
    latency = load.latency
    return _with_run(
        run,
        offered_rps=point.rate_rps if slots is None else slots.offered_rps,
        achieved_rps=load.rps if slots is None else slots.achieved_rps,
        sent_rps=None if slots is None else slots.sent_rps,
        p50_us=latency.p50,
        p99_us=latency.p99,
        p999_us=latency.p99_9,
        max_us=latency.max,
        late=None if slots is None else slots.late,
        refused=None if slots is None else slots.refused,
        errors=load.error_count,
        client_bound=load.client_bound,
    )


def sweep_measure(plan: SweepPlan, config: SweepConfig, spec: OpenLoopSpec) -> Measure:
    """The real thing: each step is one sweep run with the open-loop window."""
    from benchmarks import sweep

    window = replace(plan, duration_s=spec.window_s, warmup_s=spec.warmup_s)

    def measure(point: PointSpec, repeat: int) -> Step:
        run = sweep.run_point_once(point, window, config, repeat)
        # run_point_once judged a run only when its result file read back as a LoadResult.
        load = LoadResult.from_json(json.loads((config.run_dir / run.loadgen_json).read_text()))
        return step_from_result(point, run, load)

    return measure


def unavailable(point: PointSpec) -> str | None:
    from benchmarks.sweep import unavailable_reason

    return ceiling_reason(point.impl, point.total_connections) or unavailable_reason(point)


def failures(data: dict[str, Any]) -> list[str]:
    """Every open-loop search or point that failed, with its reason."""
    records = [*data.get("capacity", []), *data.get("latency", [])]
    return [f"{r['key']}: {r['reason']}" for r in records if r["status"] == "failed"]


def run_open_loop(results: ResultsFile, plan: SweepPlan, config: SweepConfig) -> None:
    """Measure every open-loop experiment of the plan, capacity searches first."""
    from benchmarks import capacity, latency

    # kind -> runner, in the order they run: latency takes its rate from the capacities.
    runners: dict[str, Callable[[ResultsFile, ExperimentSpec, Measure], None]] = {
        "capacity": capacity.run_capacity,
        "latency": latency.run_latency,
    }
    assert set(runners) == OPEN_LOOP_KINDS
    for kind, runner in runners.items():
        for experiment in plan.experiments:
            if experiment.kind == kind:
                spec = experiment.open_loop or OpenLoopSpec()
                runner(results, experiment, sweep_measure(plan, config, spec))

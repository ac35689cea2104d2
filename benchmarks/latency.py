"""Fixed-rate latency against connections, wrk2 style: the mechanism without saturation.

One offered rate, held constant, is spread over 10 .. 10,000 connections (and, in a second
experiment, over 10 active connections beside 0 .. 10,000 idle ones). The rate stays below
every backend's capacity, so no queue builds up and the latency measured from each
request's intended send time is what one request costs: the wait call, its dispatch and
the loopback round trip. A closed-loop sweep at 10,000 connections shows instead
connections / throughput (Little's law), whatever the mechanism. The fewest connections
is ``presets.LATENCY_MIN_CONNECTIONS``, not 1: one connection has one request in flight
and carries at most one per round trip, less than the rate chosen here.

The rate, in order of precedence: the experiment's ``rate_rps`` (``--latency-rate``), else
:data:`CAPACITY_FRACTION` of the lowest capacity measured in the same run, else
:data:`DEFAULT_RATE_RPS`. It is chosen once per experiment and stored in every record, so
``--resume`` keeps it.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, replace
from typing import Any

from benchmarks import capacity
from benchmarks.experiments import ExperimentSpec, OpenLoopSpec, PointSpec
from benchmarks.open_loop import Measure, Step, unavailable
from benchmarks.results import ResultsFile

# Half the lowest capacity: far enough below the knee that run-to-run noise in capacity
# (a few percent) cannot push a point into overload.
CAPACITY_FRACTION = 0.5
# Without a capacity search: below poll's closed-loop rate at 10,000 idle connections in
# the reference run (3,045 req/s), so below every backend's capacity there.
DEFAULT_RATE_RPS = 1000.0
PERCENTILES = (("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"))


def records(data: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = data.get("latency", [])
    return found


def choose_rate(data: dict[str, Any], experiment: ExperimentSpec) -> tuple[float, str]:
    """The offered rate of one latency experiment and where it came from."""
    stored = [r for r in records(data) if r["experiment"] == experiment.name]
    if stored:
        return float(stored[0]["spec"]["rate_rps"]), str(stored[0]["rate_source"])
    spec = experiment.open_loop or OpenLoopSpec()
    if spec.rate_rps is not None:
        return spec.rate_rps, "given"
    found = [
        float(s["capacity_rps"])
        for s in capacity.searches(data)
        if s["status"] == "done" and s["capacity_rps"]
    ]
    if found:
        return capacity.round_rate(CAPACITY_FRACTION * min(found)), (
            f"{CAPACITY_FRACTION:g} x the lowest capacity in this run ({min(found):,.0f} req/s)"
        )
    return DEFAULT_RATE_RPS, "default (no capacity search in this run)"


def point_key(experiment: str, point: PointSpec) -> str:
    return f"{experiment}/{point.key}"


def summarize(steps: list[dict[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Median, min and max of each percentile and the achieved rate over the repeats."""
    summary: dict[str, dict[str, float | int]] = {}
    for name in (*(p for p, _ in PERCENTILES), "achieved_rps"):
        values = [float(s[name]) for s in steps]
        summary[name] = {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "n": len(values),
        }
    return summary


def run_latency(results: ResultsFile, experiment: ExperimentSpec, measure: Measure) -> None:
    """Every point of one latency experiment, repeats interleaved across implementations."""
    from benchmarks.sweep import PointFailed

    spec = experiment.open_loop or OpenLoopSpec()
    rate, source = choose_rate(results.data, experiment)
    order = {impl: i for i, impl in enumerate(experiment.impls)}
    cells = sorted(
        experiment.loads(), key=lambda p: (p.connections, p.idle, p.msg_bytes, order[p.impl])
    )
    for round_ in range(1, spec.repeats + 1):
        for cell in cells:
            point = replace(cell, rate_rps=rate)
            record = find_or_add(results.data, experiment.name, point, source)
            # A failed point is measured again in the next round, or when resumed.
            done = len(record["repeats"])
            if record["status"] not in ("pending", "failed") or done >= round_:
                continue
            record.update(status="pending", reason=None)
            repeat = done + 1
            reason = unavailable(point)
            if reason is not None:
                record.update(status="skipped", reason=reason)
                results.save()
                continue
            try:
                step = measure(point, repeat)
            except PointFailed as exc:
                record.update(status="failed", reason=str(exc))
                results.save()
                continue
            add_repeat(record, step, spec.repeats)
            results.save()


def find_or_add(
    data: dict[str, Any], experiment: str, point: PointSpec, source: str
) -> dict[str, Any]:
    key = point_key(experiment, point)
    for found in records(data):
        if found["key"] == key:
            return found
    record: dict[str, Any] = {
        "key": key,
        "experiment": experiment,
        "spec": asdict(point),
        "rate_source": source,
        "status": "pending",
        "reason": None,
        "client_bound": False,
        "overloaded": False,
        "repeats": [],
        "summary": {},
    }
    data.setdefault("latency", []).append(record)
    return record


def add_repeat(record: dict[str, Any], step: Step, repeats_wanted: int) -> None:
    record["repeats"].append(step.to_json())
    record["summary"] = summarize(record["repeats"])
    record["client_bound"] = any(r["client_bound"] for r in record["repeats"])
    # Overloaded at a rate chosen below capacity: the point is kept, and flagged, since a
    # latency measured in overload is queueing, not the mechanism.
    record["overloaded"] = any(r["overloaded"] for r in record["repeats"])
    if len(record["repeats"]) >= repeats_wanted:
        record["status"] = "done"


def format_latency(data: dict[str, Any]) -> list[str]:
    """The summary's fixed-rate latency section: one row per point."""
    mine = records(data)
    if not mine:
        return []
    lines = ["fixed-rate latency, open loop (corrected, from the intended send time; median):"]
    header = (
        f"    {'impl':<12}{'rate':>9}{'conns':>8}{'idle':>8}"
        + "".join(f"{label + ' us':>11}" for _, label in PERCENTILES)
        + "  flags"
    )
    lines.append(header)
    for record in mine:
        spec = record["spec"]
        summary = record["summary"]
        cells = "".join(
            f"{summary[name]['median']:>11,.0f}" if name in summary else f"{'-':>11}"
            for name, _ in PERCENTILES
        )
        flags = [flag for flag in ("overloaded", "client_bound") if record[flag]]
        if record["status"] != "done":
            flags.append(f"{record['status']}: {record['reason'] or 'not measured yet'}")
        lines.append(
            f"    {spec['impl']:<12}{spec['rate_rps']:>9,.0f}{spec['connections']:>8,}"
            f"{spec['idle']:>8,}{cells}" + ("  " + "; ".join(flags) if flags else "")
        )
    return lines

"""Capacity curves: hot connections driven open-loop at stepped rates beside cold ones.

The method of Banga and Mogul (USENIX 1998), Provos and Lever (2000) and Gammo, Brecht
et al. (OLS 2004): a few *hot* connections carry requests at an offered rate while many
*cold* (idle) connections stay open; reply rate and response time are plotted against the
offered rate. Below the knee the server keeps up (achieved = offered, latency flat); past
it, achieved flattens and latency climbs. What the cold connections cost shows up as a
knee that moves left: select and poll pass every registered descriptor to the kernel on
every wait, epoll only the ready ones.

The knee is found adaptively, so a run spends its steps where the curve bends:

1. coarse: offer ``start_rps``, then multiply by ``factor`` while the step is *good*
   (achieved >= 99% of offered and p99 <= the SLO); divide instead while it is bad;
2. bisect: between the highest good rate and the lowest bad rate above it, at their
   geometric midpoint (rates span decades), until ``bad / good - 1 <= precision``;
3. past the knee: ``overload_steps`` more rates, each ``factor`` above the highest
   measured, to draw the plateau;

never more than ``max_steps`` steps. The next rate is a pure function of the steps already
measured (:func:`next_rate`), which makes a search deterministic against a stub and
resumable from ``results.json``. ``capacity`` is the highest offered rate whose step was
good.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

from benchmarks.experiments import ExperimentSpec, OpenLoopSpec, PointSpec
from benchmarks.open_loop import Measure, Step, unavailable
from benchmarks.results import ResultsFile, now_iso
from benchmarks.stats import Ratio, ratio_if_defined, ratio_text
from servers import registry

# The top of the search, in requests/s: far above what one Python server process answers
# on loopback.
MAX_RATE_RPS = 2_000_000.0
# A p99 from fewer samples is mostly the maximum: with 1,000 requests in the window, ten
# lie beyond the p99. So the search does not go below MIN_SAMPLES / window_s: a backend
# that is not good there has a capacity below it, which is what the summary says.
MIN_SAMPLES = 1000
# The headline ratio: capacity of a scanning mechanism (poll) over a ready-list one
# (epoll) at this many cold connections.
RATIO_COLD = 10_000


def ratio_pairs() -> list[tuple[str, str]]:
    """(scanning, ready-list) pairs of the capacity ratio, from the registry's roles."""
    scan = registry.where(lambda r: r.capacity_side == "scan")
    ready = registry.where(lambda r: r.capacity_side == "ready")
    return [(top, bottom) for top in scan for bottom in ready]


def round_rate(rate_rps: float) -> float:
    """Whole requests per second: readable keys and file names, far below the precision."""
    return float(round(rate_rps))


def min_rate(spec: OpenLoopSpec) -> float:
    """The lowest rate a search offers: the window must hold :data:`MIN_SAMPLES` requests."""
    return MIN_SAMPLES / spec.window_s


def next_rate(spec: OpenLoopSpec, start_rps: float, steps: Sequence[Step]) -> float | None:
    """The next offered rate of a search, or ``None`` when it is finished."""
    if len(steps) >= spec.max_steps:
        return None
    if not steps:
        return round_rate(max(start_rps, min_rate(spec)))
    good = [s.offered_rps for s in steps if s.good(spec.slo_ms)]
    bad = [s.offered_rps for s in steps if not s.good(spec.slo_ms)]
    low = max(good, default=None)
    above = [rate for rate in bad if low is None or rate > low]
    if low is None:
        lowest = min(bad)
        if lowest <= min_rate(spec):
            return None
        return round_rate(max(lowest / spec.factor, min_rate(spec)))
    if not above:
        rate = round_rate(low * spec.factor)
        return rate if rate <= MAX_RATE_RPS else None
    high = min(above)
    if high / low - 1 > spec.precision:
        middle = round_rate(math.sqrt(low * high))
        return middle if low < middle < high else None
    past = [s.offered_rps for s in steps if s.offered_rps > high]
    if len(past) >= spec.overload_steps:
        return None
    rate = round_rate(max(s.offered_rps for s in steps) * spec.factor)
    return rate if rate <= MAX_RATE_RPS else None


def capacity_of(steps: Sequence[Step], slo_ms: float) -> float | None:
    """The highest offered rate whose step was good; ``None`` when none was."""
    return max((s.offered_rps for s in steps if s.good(slo_ms)), default=None)


def search(
    spec: OpenLoopSpec,
    start_rps: float,
    measure: Callable[[float], Step],
    steps: Sequence[Step] = (),
) -> list[Step]:
    """Run (or continue) one search with ``measure(rate) -> Step``; every step returned."""
    done = list(steps)
    while (rate := next_rate(spec, start_rps, done)) is not None:
        done.append(measure(rate))
    return done


# -- the search inside a sweep ---------------------------------------------------------


def search_key(experiment: str, point: PointSpec, repeat: int) -> str:
    return f"{experiment}/{point.key}/x{repeat}"


def searches(data: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = data.get("capacity", [])
    return found


def find_search(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((s for s in searches(data) if s["key"] == key), None)


def start_rate(
    data: dict[str, Any], experiment: ExperimentSpec, point: PointSpec, rep: int
) -> float:
    """Where a search starts: the same backend's capacity at the next fewer cold
    connections in this repeat (the knee moves left with cold connections, rarely right),
    or the lowest rate that search offered if none was good; else ``start_rps``."""
    spec = experiment.open_loop or OpenLoopSpec()
    fewer = [
        s
        for s in searches(data)
        if s["experiment"] == experiment.name
        and s["repeat"] == rep
        and s["status"] == "done"
        and s["steps"]
        and {**s["spec"], "idle": point.idle} == asdict(point)
        and s["spec"]["idle"] < point.idle
    ]
    if not fewer:
        return spec.start_rps
    nearest = max(fewer, key=lambda s: s["spec"]["idle"])
    lowest = min(step["offered_rps"] for step in nearest["steps"])
    return float(nearest["capacity_rps"] or lowest)


def new_search(
    data: dict[str, Any], experiment: ExperimentSpec, point: PointSpec, repeat: int
) -> dict[str, Any]:
    spec = experiment.open_loop or OpenLoopSpec()
    record: dict[str, Any] = {
        "key": search_key(experiment.name, point, repeat),
        "experiment": experiment.name,
        "spec": asdict(point),
        "repeat": repeat,
        "slo_ms": spec.slo_ms,
        "start_rps": start_rate(data, experiment, point, repeat),
        "status": "pending",
        "reason": None,
        "steps": [],
        "capacity_rps": None,
        "client_bound": False,
    }
    data.setdefault("capacity", []).append(record)
    return record


def search_cells(experiment: ExperimentSpec) -> list[tuple[int, int, PointSpec]]:
    """(cold, repeat, point) in run order: cold counts ascending, then repeats, then
    implementations interleaved, so slow drift of the machine hits every backend alike."""
    spec = experiment.open_loop or OpenLoopSpec()
    cells = [
        (point.idle, repeat, point)
        for point in experiment.loads()
        for repeat in range(1, spec.repeats + 1)
    ]
    order = {impl: i for i, impl in enumerate(experiment.impls)}
    cells.sort(key=lambda c: (c[0], c[1], c[2].connections, c[2].msg_bytes, order[c[2].impl]))
    return cells


def run_capacity(results: ResultsFile, experiment: ExperimentSpec, measure: Measure) -> None:
    """Every search of one experiment; the results file is saved after every step."""
    from benchmarks.sweep import PointFailed

    spec = experiment.open_loop or OpenLoopSpec()
    for _, repeat, point in search_cells(experiment):
        key = search_key(experiment.name, point, repeat)
        record = find_search(results.data, key) or new_search(
            results.data, experiment, point, repeat
        )
        # A failed search is retried from its last step when the sweep is resumed.
        if record["status"] not in ("pending", "failed"):
            continue
        record.update(status="pending", reason=None)
        reason = unavailable(point)
        if reason is not None:
            record.update(status="skipped", reason=reason)
            results.save()
            continue
        steps = [Step.from_json(s) for s in record["steps"]]
        while (rate := next_rate(spec, record["start_rps"], steps)) is not None:
            try:
                step = measure(replace(point, rate_rps=rate), repeat)
            except PointFailed as exc:
                record.update(status="failed", reason=f"at {rate:,.0f} req/s: {exc}")
                break
            steps.append(step)
            record["steps"].append(step.to_json(spec.slo_ms))
            record["capacity_rps"] = capacity_of(steps, spec.slo_ms)
            record["client_bound"] = any(s.client_bound for s in steps)
            record["updated_at"] = now_iso()
            results.save()
        else:
            record["status"] = "done"
        results.save()


# -- reading the results ---------------------------------------------------------------


def capacities(data: dict[str, Any], impl: str, cold: int) -> list[float]:
    """Capacity of every finished search of ``impl`` at ``cold`` cold connections."""
    return [
        float(s["capacity_rps"])
        for s in searches(data)
        if s["status"] == "done"
        and s["spec"]["impl"] == impl
        and s["spec"]["idle"] == cold
        and s["capacity_rps"] is not None
    ]


def capacity_ratio(data: dict[str, Any], top: str, bottom: str, cold: int) -> Ratio | None:
    return ratio_if_defined(capacities(data, top, cold), capacities(data, bottom, cold))


def format_capacity(data: dict[str, Any]) -> list[str]:
    """The summary's capacity section: per backend at each cold count, then the ratios."""
    done = [s for s in searches(data) if s["status"] in ("done", "skipped", "failed")]
    if not done:
        return []
    slo = sorted({s["slo_ms"] for s in done})
    colds = sorted({s["spec"]["idle"] for s in done})
    impls = list(dict.fromkeys(s["spec"]["impl"] for s in done))
    lines = [
        "capacity, open loop (req/s: highest offered rate with achieved >= 99% and p99 <= "
        f"{'/'.join(f'{v:g}' for v in slo)} ms; median of searches):",
        f"    {'impl':<12}" + "".join(f"{f'{c:,} cold':>16}" for c in colds),
    ]
    for impl in impls:
        cells = []
        for cold in colds:
            mine = [s for s in done if s["spec"]["impl"] == impl and s["spec"]["idle"] == cold]
            cells.append(capacity_cell(data, impl, cold, mine))
        lines.append(f"    {impl:<12}" + "".join(f"{c:>16}" for c in cells))
    if any(s["client_bound"] for s in done):
        lines.append("    * a step was client-bound: the capacity may be the client's")
    for top, bottom in ratio_pairs():
        ratio = capacity_ratio(data, top, bottom, RATIO_COLD)
        if ratio is not None:
            lines.append(f"    {top}/{bottom} at {RATIO_COLD:,} cold: {ratio_text(ratio)}")
    return lines


def capacity_cell(data: dict[str, Any], impl: str, cold: int, mine: list[dict[str, Any]]) -> str:
    if not mine:
        return "-"
    if all(s["status"] == "skipped" for s in mine):
        return "skipped"
    values = sorted(capacities(data, impl, cold))
    if not values:
        if any(s["status"] == "failed" for s in mine):
            return "failed"
        lowest = min(step["offered_rps"] for s in mine for step in s["steps"])
        return f"< {lowest:,.0f}"
    flag = "*" if any(s["client_bound"] for s in mine) else ""
    return f"{statistics.median(values):,.0f}{flag}"

"""The sweep's stdout report: one table row per point, then the headline ratios.

(a) throughput at 10 active + the most idle connections measured, as a fraction of the
    same backend's 0-idle throughput (epoll should stay near 1, poll should collapse);
(b) server CPU per request of each epoll backend over uvloop's, at 100 and 1000
    connections with 1 KiB echo messages;
(c) the same over asyncio's protocol and streams servers;
(d) the LT/ET experiment: server CPU per request of epoll-et with each drain rule
    (``--et-drain strict`` and ``short-read``) over epoll-lt, and short-read over strict,
    at the experiment's most connections and the headline message size. Issue 11's goal
    for short-read is to cost no more than LT (:data:`SHORT_READ_GOAL`).
Which implementations enter each ratio, and the goal each is judged against, are their
roles in the implementation registry (:class:`servers.registry.SweepRoles`).
Every ratio is a ratio of medians over the valid repeats, with a percentile-bootstrap 95%
interval (each side's repeats resampled on their own, fixed seed: benchmarks/stats.py) and
a verdict against its goal: met, missed, or undecided when the interval crosses the goal.
A ratio whose points are not in the run says so instead of printing a number. Failed
points (no valid repeat) are listed, and are in no median and no ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.experiments import IDLE_ACTIVE_CONNECTIONS, RATIO_CONNECTIONS, RATIO_MSG_BYTES
from benchmarks.results import valid_runs
from benchmarks.stats import RESAMPLES, Ratio, ratio_if_defined, ratio_of_medians, verdict
from muxlab.goals import Goal
from servers import registry

INTERVAL_NOTE = (
    "median of the valid repeats; [low-high] = percentile-bootstrap 95% interval of the "
    f"median ({RESAMPLES} resamples, fixed seed); min-max = range of the valid repeats"
)
RATIO_NOTE = (
    "Ratios of medians; [low-high] = percentile-bootstrap 95% interval of the ratio (each "
    "side's repeats resampled, fixed seed); met/missed when the whole interval is on one "
    "side of the goal, undecided when it crosses it."
)


def median(record: dict[str, Any] | None, metric: str) -> float | None:
    if record is None or record["status"] != "done":
        return None
    value = record["summary"].get(metric, {}).get("median")
    return None if value is None else float(value)


def samples(record: dict[str, Any] | None, metric: str) -> list[float]:
    """The metric over the valid repeats of a measured point; empty otherwise."""
    if record is None or record["status"] != "done":
        return []
    values = (run["metrics"].get(metric) for run in valid_runs(record))
    return [float(v) for v in values if v is not None]


def format_ratio(ratio: Ratio, goal: Goal | None) -> str:
    """``0.97 [0.93-1.01] undecided (goal >= 0.9)``; no verdict without a goal."""
    interval = (
        f" [{ratio.interval.low:.2f}-{ratio.interval.high:.2f}]"
        if ratio.interval
        else " [no interval: < 2 repeats]"
    )
    if goal is None:
        return f"{ratio.value:.2f}{interval}"
    judged = verdict(ratio, goal.comparison, goal.bound)
    return f"{ratio.value:.2f}{interval} {judged} (goal {goal.text()})"


def find(data: dict[str, Any], **spec: Any) -> dict[str, Any] | None:
    for record in data["points"]:
        if all(record["spec"][k] == v for k, v in spec.items()):
            found: dict[str, Any] = record
            return found
    return None


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(data: dict[str, Any]) -> str:
    header = (
        f"{'impl':<17}{'proto':<6}{'conns':>7}{'idle':>7}{'bytes':>9}{'req/s':>10}"
        f"{'95% interval':>18}{'min-max':>18}{'p99 us':>9}{'cpu us/req':>11}"
        f"{'srv cpu':>8}{'cli cpu':>8}{'n':>4}  flags"
    )
    lines = [f"req/s: {INTERVAL_NOTE}; cli cpu: busiest load process.", header]
    lines.append("-" * len(header))
    for record in data["points"]:
        spec = record["spec"]
        rps = (record.get("summary") or {}).get("rps", {}) if record["status"] == "done" else {}
        util = [median(record, "server_cpu_util"), median(record, "client_cpu_util")]
        lines.append(
            f"{spec['impl']:<17}{spec['protocol']:<6}{spec['connections']:>7}{spec['idle']:>7}"
            f"{spec['msg_bytes'] or '-':>9}{_fmt(median(record, 'rps')):>10}"
            f"{_span(rps.get('ci_low'), rps.get('ci_high')):>18}"
            f"{_span(rps.get('min'), rps.get('max')):>18}"
            f"{_fmt(median(record, 'p99_us')):>9}"
            f"{_fmt(median(record, 'cpu_us_per_request'), 1):>11}"
            + "".join(f"{'-' if u is None else f'{u:.0%}':>8}" for u in util)
            + f"{len(valid_runs(record)):>4}"
            + ("  " + "; ".join(point_flags(record)) if point_flags(record) else "")
        )
    return "\n".join(lines)


def _span(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{low:,.0f}-{high:,.0f}"


def point_flags(record: dict[str, Any]) -> list[str]:
    flags = []
    if record["client_bound"]:
        flags.append("client-bound")
    invalid = len(record["repeats"]) - len(valid_runs(record))
    if invalid:
        flags.append(f"{invalid} invalid repeat(s) left out")
    if record["status"] != "done" or record["reason"]:
        flags.append(f"{record['status']}: {record['reason'] or 'not measured yet'}")
    return flags


def idle_ratios(data: dict[str, Any]) -> list[str]:
    lines = ["(a) throughput at 10 active + most idle, as a fraction of 0 idle (closed loop):"]
    for entry in registry.entries():
        if not entry.roles.idle_ratio:
            continue
        backend = entry.name
        base = find(
            data,
            impl=backend,
            protocol="echo",
            connections=IDLE_ACTIVE_CONNECTIONS,
            idle=0,
            msg_bytes=RATIO_MSG_BYTES,
        )
        loaded = [
            r
            for r in data["points"]
            if r["spec"]["impl"] == backend
            and r["spec"]["connections"] == IDLE_ACTIVE_CONNECTIONS
            and r["spec"]["idle"] > 0
            and r["spec"]["msg_bytes"] == RATIO_MSG_BYTES
            and r["status"] == "done"
            and samples(r, "rps")
        ]
        base_rps = samples(base, "rps")
        if not loaded or not base_rps:
            lines.append(f"    {backend:<13} n/a (no 0-idle and idle points in this run)")
            continue
        top = max(loaded, key=lambda r: r["spec"]["idle"])
        ratio = ratio_of_medians(samples(top, "rps"), base_rps)
        lines.append(
            f"    {backend:<13} {format_ratio(ratio, entry.roles.idle_goal)}  "
            f"at {top['spec']['idle']:,} idle "
            f"({median(top, 'rps'):,.0f} vs {median(base, 'rps'):,.0f} req/s)"
        )
    return lines


def cpu_ratios(data: dict[str, Any]) -> list[str]:
    lines = [
        "(b, c) server CPU per request, epoll backend / reference "
        f"({RATIO_MSG_BYTES} B echo; < 1 means muxlab is cheaper):"
    ]
    subjects = registry.where(lambda r: r.cpu_subject)
    references = [e for e in registry.entries() if e.roles.cpu_goal is not None]
    for conns in RATIO_CONNECTIONS:
        for entry in references:
            reference = entry.name
            ref = samples(
                find(
                    data,
                    impl=reference,
                    protocol="echo",
                    connections=conns,
                    idle=0,
                    msg_bytes=RATIO_MSG_BYTES,
                ),
                "cpu_us_per_request",
            )
            if not ref:
                continue  # this run did not measure that reference at that count
            goal = entry.roles.cpu_goal
            cells = []
            for backend in subjects:
                own = samples(
                    find(
                        data,
                        impl=backend,
                        protocol="echo",
                        connections=conns,
                        idle=0,
                        msg_bytes=RATIO_MSG_BYTES,
                    ),
                    "cpu_us_per_request",
                )
                cells.append(
                    f"{backend} n/a"
                    if not own
                    else f"{backend} {format_ratio(ratio_of_medians(own, ref), goal)}"
                )
            lines.append(f"    {conns:>5} conns vs {reference:<17} " + "   ".join(cells))
    if len(lines) == 1:
        lines.append("    n/a (no reference peer was measured at these connection counts)")
    return lines


# Issue 11, item 6: "epoll-et short-read <= epoll-lt" in server CPU per request.
SHORT_READ_GOAL = Goal("<=", 1.0)
# An epoll-et point's drain rule: the plain point drains to EAGAIN ("strict"); the
# short-read variant carries et_drain (benchmarks/experiments.py). Results files older
# than the drain rules have no et_drain at all: strict.
STRICT = "strict"
SHORT_READ = "short-read"


def ltet_spec(data: dict[str, Any]) -> dict[str, Any] | None:
    """The LT/ET comparison point: the ltet experiment's most connections, at the headline
    message size if it was measured, else at its largest one."""
    ltet = [e for e in data["plan"]["experiments"] if e["kind"] == "ltet"]
    if not ltet:
        return None
    sizes = ltet[0]["msg_bytes"]
    size = RATIO_MSG_BYTES if RATIO_MSG_BYTES in sizes else max(sizes)
    return {
        "protocol": "echo",
        "idle": 0,
        "connections": max(ltet[0]["connections"]),
        "msg_bytes": size,
    }


def ltet_pair() -> tuple[str, str] | None:
    """The LT/ET experiment's level- and edge-triggered mechanisms: the first of each in
    the registry's order."""
    ltet = [e for e in registry.entries() if e.roles.ltet]
    level = [e.name for e in ltet if not e.edge_triggered]
    edge = [e.name for e in ltet if e.edge_triggered]
    return (level[0], edge[0]) if level and edge else None


def drain_record(
    data: dict[str, Any], impl: str, drain: str | None, spec: dict[str, Any]
) -> dict[str, Any] | None:
    """The done or failed point of ``impl`` at ``spec`` with this drain rule (``None``: a
    backend without one); ``strict`` is the plain point."""
    wanted = None if drain == STRICT else drain
    for record in data["points"]:
        own = record["spec"]
        if (
            own["impl"] == impl
            and own.get("et_drain") == wanted
            and all(own[k] == v for k, v in spec.items())
            and record["status"] in ("done", "failed")
        ):
            found: dict[str, Any] = record
            return found
    return None


@dataclass(frozen=True)
class LtEt:
    """The LT/ET comparison's points: level-triggered, and edge-triggered with each drain
    rule (a point the run lacks is ``None``)."""

    spec: dict[str, Any]
    level: str
    edge: str
    lt: dict[str, Any] | None
    strict: dict[str, Any] | None
    short_read: dict[str, Any] | None

    def cpu(self, record: dict[str, Any] | None) -> list[float]:
        return samples(record, "cpu_us_per_request")

    def strict_over_lt(self) -> Ratio | None:
        return ratio_if_defined(self.cpu(self.strict), self.cpu(self.lt))

    def short_read_over_lt(self) -> Ratio | None:
        return ratio_if_defined(self.cpu(self.short_read), self.cpu(self.lt))

    def short_read_over_strict(self) -> Ratio | None:
        return ratio_if_defined(self.cpu(self.short_read), self.cpu(self.strict))

    def cpu_ratios(self) -> list[tuple[str, Ratio, Goal | None]]:
        """(label, ratio of server CPU per request, goal) for strict / LT, short-read /
        LT and short-read / strict, each where both points have valid repeats."""
        found = [
            (f"{self.edge} {STRICT} / {self.level}", self.strict_over_lt(), None),
            (
                f"{self.edge} {SHORT_READ} / {self.level}",
                self.short_read_over_lt(),
                SHORT_READ_GOAL,
            ),
            (f"{self.edge} {SHORT_READ} / {STRICT}", self.short_read_over_strict(), None),
        ]
        return [(label, ratio, goal) for label, ratio, goal in found if ratio is not None]


def ltet_points(data: dict[str, Any]) -> LtEt | None:
    spec = ltet_spec(data)
    pair = ltet_pair()
    if spec is None or pair is None:
        return None
    level, edge = pair
    return LtEt(
        spec,
        level,
        edge,
        drain_record(data, level, None, spec),
        drain_record(data, edge, STRICT, spec),
        drain_record(data, edge, SHORT_READ, spec),
    )


def ltet_ratios(data: dict[str, Any]) -> list[str]:
    found = ltet_points(data)
    if found is None:
        return []
    spec = found.spec
    lines = [
        f"(d) LT/ET, server CPU per request ({spec['connections']} conns, {spec['msg_bytes']} B "
        "echo; < 1 means the first is cheaper):"
    ]
    ratios = found.cpu_ratios()
    lines += [f"    {label:<32} {format_ratio(ratio, goal)}" for label, ratio, goal in ratios]
    if not ratios:
        lines.append("    n/a (the ltet points were not measured in this run)")
    return lines


def failed_points(data: dict[str, Any]) -> list[str]:
    failed = [r for r in data["points"] if r["status"] == "failed"]
    if not failed:
        return []
    return [
        "",
        f"failed points ({len(failed)}; no valid repeat, left out of every median, ratio "
        "and chart line):",
        *(f"    {r['key']}: {r['reason']}" for r in failed),
    ]


CLOSED_LOOP_HEADING = "closed loop, saturated (latency = connections / throughput, Little's law):"


def format_report(data: dict[str, Any]) -> str:
    from benchmarks.capacity import format_capacity
    from benchmarks.latency import format_latency

    parts = [
        CLOSED_LOOP_HEADING,
        format_table(data),
        "",
        RATIO_NOTE,
        *idle_ratios(data),
        *cpu_ratios(data),
        *ltet_ratios(data),
        *failed_points(data),
    ]
    for section in (format_capacity(data), format_latency(data)):
        if section:
            parts += ["", *section]
    if data["notes"]:
        parts += ["", "notes:", *(f"    {note}" for note in data["notes"])]
    return "\n".join(parts)

"""The headline of the README's results section: the results in words, each sentence
with its numbers from the results file (ratios with their bootstrap 95% intervals)."""

from __future__ import annotations

from typing import Any

from benchmarks import capacity
from benchmarks.experiments import IDLE_ACTIVE_CONNECTIONS, RATIO_MSG_BYTES
from benchmarks.report_points import (
    goal_markdown,
    grid_record,
    judge,
    matching,
    median_text,
    number,
    syscalls_per_request,
    values,
)
from benchmarks.stats import (
    CONFIDENCE,
    Ratio,
    ratio_if_defined,
    ratio_text,
)
from benchmarks.summary import SHORT_READ, SHORT_READ_GOAL, LtEt, ltet_points
from servers import registry

IDLE_BASE = {
    "protocol": "echo",
    "connections": IDLE_ACTIVE_CONNECTIONS,
    "msg_bytes": RATIO_MSG_BYTES,
}


def idle_points(
    data: dict[str, Any], backend: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A backend's point at 0 idle and its measured (done or failed) points with idle > 0."""
    base = grid_record(data, impl=backend, idle=0, **IDLE_BASE)
    loaded = [
        r
        for r in matching(data, impl=backend, **IDLE_BASE)
        if r["spec"]["idle"] > 0 and r["status"] in ("done", "failed")
    ]
    return base, loaded


def idle_ratio(data: dict[str, Any], backend: str) -> tuple[int, Ratio] | None:
    """Throughput kept at the most idle connections measured: (idle, ratio to 0 idle)."""
    base, loaded = idle_points(data, backend)
    if base is None or not loaded:
        return None
    top = max(loaded, key=lambda r: r["spec"]["idle"])
    ratio = ratio_if_defined(values(top, "rps"), values(base, "rps"))
    return None if ratio is None else (top["spec"]["idle"], ratio)


def idle_headline(data: dict[str, Any]) -> list[str]:
    """Ratio (a) of every mechanism without a descriptor ceiling (a ceiling is
    :func:`ceiling_headline`'s)."""
    kept = []
    for entry in registry.entries():
        if not entry.roles.idle_ratio or entry.fd_ceiling is not None:
            continue
        backend = entry.name
        found = idle_ratio(data, backend)
        if found is not None:
            kept.append(f"{backend} {ratio_text(found[1])} at {number(found[0])} idle")
    if not kept:
        return []
    return [
        f"Throughput kept with idle connections beside {IDLE_ACTIVE_CONNECTIONS} active ones "
        f"(ratio to 0 idle, {CONFIDENCE:.0%} interval): " + "; ".join(kept) + "."
    ]


def ceiling_headline(data: dict[str, Any]) -> list[str]:
    """Each mechanism with a descriptor ceiling (select's FD_SETSIZE): its highest measured
    idle point, and the points it could not hold."""
    return [
        line
        for entry in registry.entries()
        if entry.roles.idle_ratio and entry.fd_ceiling is not None
        for line in ceiling_line(data, entry.name)
    ]


def ceiling_line(data: dict[str, Any], impl: str) -> list[str]:
    _, loaded = idle_points(data, impl)
    measured = [r["spec"]["idle"] for r in loaded if r["status"] == "done"]
    if not measured:
        return []
    line = (
        f"{impl} was measured up to {number(max(measured))} idle connections (beside "
        f"{IDLE_ACTIVE_CONNECTIONS} active)"
    )
    skipped = [r for r in matching(data, impl=impl) if r["status"] == "skipped"]
    if skipped:
        # The reason of the smallest skipped idle point says where the ceiling is.
        first = min(skipped, key=lambda r: (r["spec"]["idle"] == 0, r["spec"]["idle"]))
        line += f"; {len(skipped)} points past its ceiling were skipped ({first['reason']})"
    return [line + "."]


def ltet_headline(data: dict[str, Any]) -> list[str]:
    """LT against ET strict, then, where the run has it, ET short-read against both (the
    points and ratios are :mod:`benchmarks.summary`'s)."""
    found = ltet_points(data)
    if found is None:
        return []
    spec, lt, et = found.spec, found.lt, found.strict
    eagain = [median_text(values(r, "reads_eagain_per_request"), "", 2) for r in (et, lt)]
    cpu = found.strict_over_lt()
    if "-" in eagain or cpu is None:
        return []
    line = (
        f"Edge- against level-triggered epoll ({number(spec['connections'])} connections, "
        f"{number(spec['msg_bytes'])} B echo): EAGAIN reads per request {eagain[0]} (ET) "
        f"against {eagain[1]} (LT); server CPU per request "
        f"{median_text(values(et, 'cpu_us_per_request'), ' us', 2)} against "
        f"{median_text(values(lt, 'cpu_us_per_request'), ' us', 2)}, ET/LT {ratio_text(cpu)}"
    )
    return [line + short_read_clause(found) + "."]


def short_read_clause(found: LtEt) -> str:
    """``; with --et-drain short-read: ...`` when the run measured that point."""
    short = found.short_read
    to_lt = found.short_read_over_lt()
    to_strict = found.short_read_over_strict()
    if short is None or to_lt is None or to_strict is None:
        return ""
    judged = f" {judge(SHORT_READ_GOAL, to_lt)} (goal {goal_markdown(SHORT_READ_GOAL)})"
    return (
        f"; with `--et-drain {SHORT_READ}`: EAGAIN reads per request "
        f"{median_text(values(short, 'reads_eagain_per_request'), '', 2)}, server CPU per "
        f"request {median_text(values(short, 'cpu_us_per_request'), ' us', 2)}, "
        f"short-read/LT {ratio_text(to_lt)}{judged}, short-read/strict "
        f"{ratio_text(to_strict)}"
    )


def capacity_headline(data: dict[str, Any]) -> list[str]:
    ratios = [
        f"{top} / {bottom} {ratio_text(ratio)}"
        for top, bottom in capacity.ratio_pairs()
        if (ratio := capacity.capacity_ratio(data, top, bottom, capacity.RATIO_COLD)) is not None
    ]
    if not ratios:
        return []
    return [
        f"Capacity at {number(capacity.RATIO_COLD)} cold connections: " + "; ".join(ratios) + "."
    ]


def uring_headline(data: dict[str, Any]) -> list[str]:
    """Each completion loop (io_uring) against the registry's baseline (epoll-lt)."""
    baseline = registry.where(lambda r: r.uring_baseline)
    if not baseline:
        return []
    return [
        line
        for loop in registry.names("completion loop")
        for line in completion_line(data, loop, baseline[0])
    ]


def completion_line(data: dict[str, Any], loop: str, baseline: str) -> list[str]:
    """``loop`` against ``baseline`` at the most connections where both were measured."""
    pairs = []
    for record in matching(data, impl=loop, protocol="echo", idle=0, msg_bytes=RATIO_MSG_BYTES):
        spec = {k: v for k, v in record["spec"].items() if k != "impl"}
        epoll = grid_record(data, impl=baseline, **spec)
        if record["status"] == "done" and epoll is not None and epoll["status"] == "done":
            pairs.append((record["spec"]["connections"], record, epoll))
    if not pairs:
        return []
    conns, uring, epoll = max(pairs, key=lambda p: p[0])
    cpu = ratio_if_defined(values(uring, "cpu_us_per_request"), values(epoll, "cpu_us_per_request"))
    if cpu is None:
        return []
    line = (
        f"{loop} against {baseline} ({number(conns)} connections, {number(RATIO_MSG_BYTES)} B "
        f"echo): server CPU per request ratio {ratio_text(cpu)}"
    )
    calls = [median_text(syscalls_per_request(r), "", 2) for r in (uring, epoll)]
    if "-" not in calls:
        line += f"; system calls per request {calls[0]} against {calls[1]}"
    return [line + "."]


def headline(data: dict[str, Any]) -> list[str]:
    """The results in words, each with its numbers from the file."""
    lines = [
        *idle_headline(data),
        *ceiling_headline(data),
        *ltet_headline(data),
        *capacity_headline(data),
        *uring_headline(data),
    ]
    return [f"- {line}" for line in lines]

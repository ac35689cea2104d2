"""What the README's results section reads from a results file, and how it prints it.

A point's numbers come from its valid repeats only (:func:`benchmarks.results.valid_runs`);
a point that failed prints as ``failed (reason)``, never as a number. Shared by the
headline (:mod:`benchmarks.report_headline`) and the tables (:mod:`benchmarks.report`).
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.results import valid_runs
from benchmarks.server_cpu_backends import syscalls
from benchmarks.stats import (
    Ratio,
    Verdict,
    verdict,
)
from muxlab.goals import Goal


def judge(goal: Goal, ratio: Ratio) -> Verdict:
    """:func:`benchmarks.stats.verdict` of ``ratio`` against ``goal``."""
    return verdict(ratio, goal.comparison, goal.bound)


def goal_markdown(goal: Goal) -> str:
    return goal.text().replace(">=", "&ge;").replace("<=", "&le;")


def matching(data: dict[str, Any], **spec: Any) -> list[dict[str, Any]]:
    """Every point whose spec has these values, whatever its status."""
    return [r for r in data["points"] if all(r["spec"][k] == v for k, v in spec.items())]


def grid_record(data: dict[str, Any], **spec: Any) -> dict[str, Any] | None:
    """The done or failed point with this spec (pending and skipped ones carry nothing)."""
    for record in matching(data, **spec):
        if record["status"] in ("done", "failed"):
            found: dict[str, Any] = record
            return found
    return None


def values(record: dict[str, Any] | None, metric: str) -> list[float]:
    """One metric over the valid repeats of a point (none for a missing or failed one)."""
    if record is None or record["status"] != "done":
        return []
    found = (run["metrics"].get(metric) for run in valid_runs(record))
    return [float(v) for v in found if v is not None]


def requests_of(run: dict[str, Any]) -> int:
    """Requests the server answered in a repeat's window, as the sweep counts them."""
    replies = run.get("server_replies_window")
    return int(replies if replies is not None else run["requests_ok"])


def syscalls_per_request(record: dict[str, Any] | None) -> list[float]:
    """System calls per request over the valid repeats (:func:`syscalls`'s count), for
    repeats whose counters include the io_uring ones (older files do not)."""
    if record is None or record["status"] != "done":
        return []
    return [
        syscalls(record["spec"]["impl"], run["server_delta"]) / requests_of(run)
        for run in valid_runs(record)
        if "uring_enters" in (run.get("server_delta") or {}) and requests_of(run) > 0
    ]


def failed_text(record: dict[str, Any]) -> str:
    return f"failed ({record.get('reason') or 'no reason recorded'})"


def number(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def median_text(samples: list[float], unit: str = "", digits: int = 0) -> str:
    return "-" if not samples else number(statistics.median(samples), digits) + unit


def metric_cell(record: dict[str, Any] | None, metric: str, unit: str = "", digits: int = 0) -> str:
    if record is not None and record["status"] == "failed":
        return failed_text(record)
    return median_text(values(record, metric), unit, digits)

"""The LT/ET headline (the sweep's ratio (d) and ``muxlab report``'s sentence): epoll-et
with each drain rule against epoll-lt, and short-read against strict, with intervals."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.report_headline import headline
from benchmarks.stats import ratio_of_medians, ratio_text, verdict
from benchmarks.summary import SHORT_READ_GOAL, format_report, ltet_points

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference" / "results.json"
LT = "epoll-lt/echo/c100/i0/s1024/p1"
STRICT = "epoll-et/echo/c100/i0/s1024/p1"
SHORT = "epoll-et/echo/c100/i0/s1024/p1/short-read"


def point(data: dict[str, Any], key: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in data["points"] if r["key"] == key)
    return found


def set_samples(record: dict[str, Any], cpu_us: list[float], eagain: float) -> None:
    """Every repeat valid, with these server CPU per request and EAGAIN reads."""
    record["repeats"] = [copy.deepcopy(record["repeats"][0]) for _ in cpu_us]
    for run, value in zip(record["repeats"], cpu_us, strict=True):
        run.update(valid=True, problems=[])
        run["metrics"].update(cpu_us_per_request=value, reads_eagain_per_request=eagain)


@pytest.fixture
def data() -> dict[str, Any]:
    """The committed reference run, with chosen numbers on the three LT/ET points; the
    short-read point is moved to the front, so a lookup that ignores the drain rule
    would take it for strict."""
    loaded: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    set_samples(point(loaded, LT), [4.0, 4.0, 4.0], 0.0)
    set_samples(point(loaded, STRICT), [5.0, 5.0, 6.0], 1.0)
    set_samples(point(loaded, SHORT), [3.0, 3.5, 3.0], 0.0)
    short = point(loaded, SHORT)
    loaded["points"].remove(short)
    loaded["points"].insert(0, short)
    return loaded


def test_the_drain_rules_are_told_apart(data: dict[str, Any]) -> None:
    found = ltet_points(data)
    assert found is not None
    assert (found.level, found.edge) == ("epoll-lt", "epoll-et")
    assert found.lt is not None and found.lt["key"] == LT
    assert found.strict is not None and found.strict["key"] == STRICT
    assert found.short_read is not None and found.short_read["key"] == SHORT


def test_the_sweep_summary_prints_each_drain_rule_against_lt_and_each_other(
    data: dict[str, Any],
) -> None:
    lines = format_report(data).splitlines()
    start = lines.index(
        "(d) LT/ET, server CPU per request (100 conns, 1024 B echo; < 1 means the first is "
        "cheaper):"
    )
    strict_lt = ratio_of_medians([5.0, 5.0, 6.0], [4.0, 4.0, 4.0])
    short_lt = ratio_of_medians([3.0, 3.5, 3.0], [4.0, 4.0, 4.0])
    short_strict = ratio_of_medians([3.0, 3.5, 3.0], [5.0, 5.0, 6.0])
    assert short_lt.interval is not None and short_lt.interval.high < 1.0
    assert lines[start + 1 : start + 4] == [
        f"    epoll-et strict / epoll-lt       1.25 [{interval(strict_lt)}]",
        f"    epoll-et short-read / epoll-lt   0.75 [{interval(short_lt)}] met (goal <= 1)",
        f"    epoll-et short-read / strict     0.60 [{interval(short_strict)}]",
    ]


def interval(ratio: Any) -> str:
    return f"{ratio.interval.low:.2f}-{ratio.interval.high:.2f}"


def test_the_report_sentence_adds_short_read_with_its_ratios(data: dict[str, Any]) -> None:
    [line] = [line for line in headline(data) if line.startswith("- Edge- against level")]
    strict_lt = ratio_of_medians([5.0, 5.0, 6.0], [4.0, 4.0, 4.0])
    short_lt = ratio_of_medians([3.0, 3.5, 3.0], [4.0, 4.0, 4.0])
    short_strict = ratio_of_medians([3.0, 3.5, 3.0], [5.0, 5.0, 6.0])
    assert verdict(short_lt, SHORT_READ_GOAL.comparison, SHORT_READ_GOAL.bound) == "met"
    assert line == (
        "- Edge- against level-triggered epoll (100 connections, 1,024 B echo): EAGAIN reads "
        "per request 1.00 (ET) against 0.00 (LT); server CPU per request 5.00 us against "
        f"4.00 us, ET/LT {ratio_text(strict_lt)}; with `--et-drain short-read`: EAGAIN "
        "reads per request 0.00, server CPU per request 3.00 us, short-read/LT "
        f"{ratio_text(short_lt)} met (goal &le; 1), short-read/strict "
        f"{ratio_text(short_strict)}."
    )


def test_a_run_without_short_read_keeps_the_strict_sentence(data: dict[str, Any]) -> None:
    data["points"].remove(point(data, SHORT))
    [line] = [line for line in headline(data) if line.startswith("- Edge- against level")]
    assert line.endswith(f"ET/LT {ratio_text(ratio_of_medians([5.0, 5.0, 6.0], [4.0, 4.0, 4.0]))}.")
    summary = format_report(data)
    assert "epoll-et strict / epoll-lt" in summary
    assert "short-read /" not in summary

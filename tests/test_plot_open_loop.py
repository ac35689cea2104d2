"""Capacity and latency charts from a synthetic results file; closed-loop charts say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import capacity, latency
from benchmarks.experiments import ExperimentSpec, OpenLoopSpec
from benchmarks.summary import format_report
from muxlab.cli import main
from tests.open_loop_stubs import StubMeasure, StubServer, empty_results, knees, plan_with
from tests.test_plot import fake_run

SPEC = OpenLoopSpec(start_rps=4000.0, factor=2.0, precision=0.05, max_steps=12, repeats=2)
EXPERIMENTS = (
    ExperimentSpec("active", "active", ("poll", "epoll-lt"), connections=(1, 100)),
    ExperimentSpec(
        "capacity",
        "capacity",
        ("select", "poll", "epoll-lt"),
        connections=(20,),
        idle=(0, 1000, 10_000),
        open_loop=SPEC,
    ),
    ExperimentSpec(
        "latency", "latency", ("poll", "epoll-lt"), connections=(1, 100, 10_000), open_loop=SPEC
    ),
    ExperimentSpec(
        "latency-idle", "latency", ("poll", "epoll-lt"), idle=(0, 1000, 10_000), open_loop=SPEC
    ),
)


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    plan = plan_with(*EXPERIMENTS)
    results = empty_results(tmp_path / "run", plan)
    for point in plan.points():
        results.add_run(point.key, fake_run(point, 1, 10000.0))
    cap = EXPERIMENTS[1]
    capacity.run_capacity(results, cap, StubMeasure(knees(cap.impls, cap.idle)))
    flat = {(impl, idle): StubServer(1e9) for impl in ("poll", "epoll-lt") for idle in cap.idle}
    for experiment in EXPERIMENTS[2:]:
        latency.run_latency(results, experiment, StubMeasure(flat))
    return results.path


def test_plot_draws_capacity_and_latency_charts_from_the_file(stored: Path, tmp_path: Path) -> None:
    out = tmp_path / "charts"
    assert main(["plot", str(stored), "--out", str(out)]) == 0
    names = ("active", "capacity", "latency", "latency-idle")
    expected = {f"{name}{ext}" for name in names for ext in (".png", ".svg")}
    assert {p.name for p in out.iterdir()} == expected
    assert all((out / name).stat().st_size > 1000 for name in expected)
    svg = (out / "capacity.svg").read_text()
    for text in (
        "achieved = offered",
        "SLO",
        "10,000 cold",
        "1,000 cold",
        "0 cold",
        "knee (capacity)",
    ):
        assert text in svg, text
    assert "select" in svg  # drawn at 0 cold, where it fits
    latency_svg = (out / "latency.svg").read_text()
    assert "latency against connections at a fixed" in latency_svg
    assert "p99.9" in latency_svg
    assert "latency against idle connections" in (out / "latency-idle.svg").read_text()


def test_closed_loop_charts_and_summary_are_labelled_saturated(
    stored: Path, tmp_path: Path
) -> None:
    out = tmp_path / "charts"
    assert main(["plot", str(stored), "--out", str(out)]) == 0
    assert "closed loop, saturated" in (out / "active.svg").read_text()
    assert "closed loop, saturated" not in (out / "capacity.svg").read_text()
    from benchmarks.results import ResultsFile

    report = format_report(ResultsFile.load(stored).data)
    assert report.startswith("closed loop, saturated")
    assert "capacity, open loop" in report and "fixed-rate latency, open loop" in report

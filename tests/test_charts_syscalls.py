"""The "system calls per request" chart: drawn from the results file, peers left out."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.experiments import ExperimentSpec, PointSpec, SweepPlan
from benchmarks.results import ResultsFile, RunResult, validate
from muxlab.cli import main
from servers.loop import ET_DRAINS
from tests.test_plot import fake_run

PEER = "uvloop-protocol"


def syscalls_per_request(point: PointSpec) -> float | None:
    """A fake figure per point: none for a peer, as a real sweep records it."""
    if point.impl == PEER:
        return None
    return 3.0 + (point.et_drain is None and point.impl == "epoll-et")


def run_with_syscalls(point: PointSpec, repeat: int) -> RunResult:
    run = fake_run(point, repeat, 10000.0 + repeat)
    metrics = {**run.metrics, "syscalls_per_request": syscalls_per_request(point)}
    return replace(run, metrics=metrics)


@pytest.fixture
def results_path(tmp_path: Path) -> Path:
    plan = SweepPlan(
        (
            ExperimentSpec(
                "ltet", "ltet", ("epoll-lt", "epoll-et"), msg_bytes=(64, 1024), et_drains=ET_DRAINS
            ),
            ExperimentSpec("peers", "peers", ("epoll-lt", PEER), connections=(10, 100)),
        ),
        repeats=2,
        duration_s=1.0,
        warmup_s=0.5,
    )
    environment = {"cpu_model": "test", "cpus": 2}
    pinning = {"server_cpu": 0, "client_cpus": [1], "loadgen": []}
    results = ResultsFile.create(
        tmp_path / "run", "run", plan, ["muxlab", "sweep"], environment, pinning, []
    )
    for point in plan.points():
        for repeat in (1, 2):
            results.add_run(point.key, run_with_syscalls(point, repeat))
    assert validate(results.data) == []
    return results.path


def test_ltet_measures_strict_short_read_and_lt_as_separate_points(results_path: Path) -> None:
    data = json.loads(results_path.read_text())
    ltet = {(r["spec"]["impl"], r["spec"]["et_drain"]) for r in data["points"]
            if "ltet" in r["experiments"]}  # fmt: skip
    assert ltet == {("epoll-lt", None), ("epoll-et", None), ("epoll-et", "short-read")}
    keys = {r["key"] for r in data["points"]}
    assert "epoll-et/echo/c10/i0/s64/p1/short-read" in keys


def test_chart_draws_syscalls_and_names_the_peers_it_leaves_out(
    results_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "charts"
    assert main(["plot", str(results_path), "--out", str(out)]) == 0
    svg = (out / "syscalls.svg").read_text()
    assert (out / "syscalls.png").stat().st_size > 1000
    assert "system calls per request" in svg
    assert f"Left out, because they count no system calls: {PEER}" in svg
    assert "epoll-et short-read, 10 conns" in svg
    # The ltet chart tells the variants apart too.
    assert "epoll-et short-read" in (out / "ltet.svg").read_text()

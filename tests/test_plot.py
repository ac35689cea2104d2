"""Charts are regenerated from stored files only: a sweep results file, pytest-benchmark JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from benchmarks.experiments import ExperimentSpec, PointSpec, SweepPlan
from benchmarks.results import ResultsFile, RunResult, validate
from muxlab.cli import main


def fake_run(point: PointSpec, repeat: int, rps: float) -> RunResult:
    requests = int(rps)
    return RunResult(
        repeat=repeat,
        started_at="2026-01-01T00:00:00+00:00",
        loadgen_status=0,
        loadgen_json="loadgen/x.json",
        window_s=1.0,
        requests_ok=requests,
        requests_total=requests + 10,
        errors={},
        latency_us={"p50": 100.0, "p99": 900.0},
        client_cpu=(0.5,),
        client_bound=point.connections >= 100,
        server_cpu_s=0.5,
        server_delta={"wait_calls": requests // 2, "events": requests},
        server_replies_window=requests,
        server_replies_total=requests + 10,
        idle_open_at_end=point.idle,
        metrics={
            "rps": rps,
            "mib_per_s": rps / 1024,
            "p50_us": 100.0,
            "p99_us": 900.0 + point.idle,
            "cpu_us_per_request": 5e5 / rps,
            "wait_cpu_us": 1e6 / rps,
            "wait_calls_per_request": 0.5,
            "events_per_wait": 2.0,
            "reads_per_request": 1.0,
            "reads_eagain_per_request": 0.0,
            "server_cpu_util": 0.5,
            "client_cpu_util": 0.5,
        },
    )


@pytest.fixture
def stored_results(tmp_path: Path) -> Path:
    """A small results file made without running anything, as if read from disk."""
    plan = SweepPlan(
        (
            ExperimentSpec("active", "active", ("poll", "epoll-lt"), connections=(1, 100)),
            ExperimentSpec("idle", "idle", ("select", "poll", "epoll-lt"), idle=(0, 100, 2000)),
            ExperimentSpec("ltet", "ltet", ("epoll-lt", "epoll-et"), msg_bytes=(64, 65536)),
            ExperimentSpec("peers", "peers", ("epoll-lt", "asyncio-protocol"), connections=(100,)),
        ),
        repeats=2,
        duration_s=1.0,
        warmup_s=0.5,
        preset=None,
    )
    results = ResultsFile.create(
        tmp_path / "run",
        "run",
        plan,
        ["muxlab", "sweep"],
        {"cpu_model": "test", "cpus": 2},
        {"server_cpu": 0, "client_cpus": [1], "loadgen": []},
        [],
    )
    for point in plan.points():
        reason = point.skip_reason()
        if reason:
            results.mark(point.key, "skipped", reason)
            continue
        for repeat in (1, 2):
            slow = 0.3 if point.impl == "poll" and point.idle >= 1000 else 1.0
            results.add_run(point.key, fake_run(point, repeat, 10000.0 * slow + repeat))
    assert validate(results.data) == []
    return results.path


def test_validate_catches_idle_connections_the_server_never_held(stored_results: Path) -> None:
    data = json.loads(stored_results.read_text())
    record = next(r for r in data["points"] if r["spec"]["idle"] == 100)
    record["repeats"][0]["server_connections_open"] = 50  # 10 active + 100 idle expected
    assert validate(data) == [
        f"{record['key']} repeat 1: the server held 50 connections in the window, not 110"
    ]


def chart_names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_plot_redraws_every_chart_from_the_file(
    stored_results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "charts"
    assert main(["plot", str(stored_results), "--out", str(out)]) == 0
    expected = {
        f"{name}{ext}" for name in ("active", "idle", "ltet", "peers") for ext in (".png", ".svg")
    }
    assert chart_names(out) == expected
    assert all((out / name).stat().st_size > 1000 for name in expected)
    svg = (out / "idle.svg").read_text()
    assert "FD_SETSIZE" in svg  # select's ceiling is marked, not silent
    assert "relative to 0 idle" in svg
    printed = capsys.readouterr().out.split()
    assert sorted(printed) == sorted(str(out / name) for name in expected)


def test_plot_in_another_process_from_a_copy(stored_results: Path, tmp_path: Path) -> None:
    """Nothing but the file is needed: a fresh process draws next to a copy of it."""
    copy = tmp_path / "elsewhere" / "results.json"
    copy.parent.mkdir()
    copy.write_bytes(stored_results.read_bytes())
    subprocess.run(
        [sys.executable, "-m", "muxlab", "plot", str(copy)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    charts = copy.parent / "charts"
    assert {p.suffix for p in charts.iterdir()} == {".png", ".svg"}
    assert len(list(charts.iterdir())) == 8


def benchmark_json() -> dict[str, Any]:
    benches = []
    for backend, per_fd_s in (("poll", 2e-8), ("epoll-lt", 1e-9)):
        for n in (10, 100, 1000):
            t = 1e-6 + per_fd_s * n
            benches.append(
                {
                    "group": "mechanism: K=1 ready",
                    "name": f"test[{backend}-{n}]",
                    "extra_info": {
                        "backend": backend,
                        "n_fds": n,
                        "k_ready": 1,
                        "select_ceiling": 1024,
                        "caption": "test caption",
                    },
                    "stats": {"median": t, "q1": t * 0.9, "q3": t * 1.1, "mean": t},
                }
            )
    return {
        "machine_info": {"cpu": {"brand_raw": "test"}},
        "benchmarks": benches,
        "datetime": "2026-01-01",
    }


def test_plot_reads_pytest_benchmark_json(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(benchmark_json()))
    out = tmp_path / "charts"
    assert main(["plot", str(path), "--out", str(out)]) == 0
    assert chart_names(out) == {"bench-mechanism-K-1-ready.png", "bench-mechanism-K-1-ready.svg"}


def test_plot_skips_benchmark_groups_without_backends(tmp_path: Path) -> None:
    """A full ``pytest --benchmark-only`` file also holds the load generator's benchmarks,
    which compare clients, not backends: they are left out, the mechanism is charted."""
    data = benchmark_json()
    data["benchmarks"].append(
        {
            "group": "loadgen: one client process",
            "name": "test_client_efficiency[100]",
            "extra_info": {"connections": 100, "rps": 150000},
            "stats": {"median": 1.0, "q1": 1.0, "q3": 1.0, "mean": 1.0},
        }
    )
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "charts"
    assert main(["plot", str(path), "--out", str(out)]) == 0
    assert chart_names(out) == {"bench-mechanism-K-1-ready.png", "bench-mechanism-K-1-ready.svg"}


def test_plot_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "something else"}')
    assert main(["plot", str(bad)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["plot", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_failed_point_is_an_x_on_the_bottom_edge_and_not_on_the_line(
    stored_results: Path,
) -> None:
    import matplotlib.pyplot as plt

    from benchmarks.plot import draw_series

    data = json.loads(stored_results.read_text())
    line = [r for r in data["points"] if r["spec"]["impl"] == "poll" and "idle" in r["experiments"]]
    failed = max(line, key=lambda r: r["spec"]["idle"])
    failed["status"], failed["reason"] = "failed", "no valid repeat: load generator exited 1"
    fig, ax = plt.subplots()
    try:
        draw_series(ax, line, lambda r: r["spec"]["idle"], "rps", label="poll", color="red")
        markers = [a for a in ax.lines if a.get_marker() == "x"]
        assert len(markers) == 1
        assert np.asarray(markers[0].get_xdata()).tolist() == [failed["spec"]["idle"]]
        # y in axes fraction: the bottom edge, whatever the data range.
        assert np.asarray(markers[0].get_ydata()).tolist() == [0.02]
        # The line and its error bars run through the other points only.
        (container,) = ax.containers
        assert isinstance(container, ErrorbarContainer)
        data_line = container.lines[0]
        assert data_line is not None
        line_x = np.asarray(data_line.get_xdata()).tolist()
        assert line_x == sorted(r["spec"]["idle"] for r in line if r is not failed)
    finally:
        plt.close(fig)


def test_error_bar_is_the_bootstrap_interval_of_the_median(stored_results: Path) -> None:
    import matplotlib.pyplot as plt

    from benchmarks.plot import draw_series

    data = json.loads(stored_results.read_text())
    record = next(r for r in data["points"] if r["status"] == "done")
    stats = record["summary"]["rps"]
    assert stats["n"] == 2 and stats["ci_low"] is not None
    fig, ax = plt.subplots()
    try:
        draw_series(ax, [record], lambda r: 1.0, "rps", label="x", color="blue")
        (container,) = ax.containers
        assert isinstance(container, ErrorbarContainer)
        segments = container.lines[2][0].get_segments()
        assert [tuple(point[1] for point in segment) for segment in segments] == [
            (stats["ci_low"], stats["ci_high"])
        ]
    finally:
        plt.close(fig)

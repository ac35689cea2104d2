"""The herd and cores experiments: plans, exact counts from one cell, records and charts.

Nothing here asserts that a herd appeared (on 2 CPUs it need not be counted, see
benchmarks/herd.py); what is asserted is that every connection made is accounted for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import herd, plot
from benchmarks.experiments import (
    ExperimentSpec,
    ScalingSpec,
    plan_from_json,
    plan_to_json,
    preset,
)
from benchmarks.results import ResultsFile
from benchmarks.sweep import SweepConfig

TINY = ScalingSpec(workers=(2,), window_s=0.3, warmup_s=0.1, max_connects=200)


def test_default_preset_has_herd_and_cores_and_its_json_keeps_them() -> None:
    plan = preset("default")
    kinds = {e.name: e for e in plan.experiments if e.kind in ("herd", "cores")}
    assert set(kinds) == {"herd", "cores"}
    assert kinds["herd"].scaling is not None
    assert set(kinds["herd"].scaling.balances) == {"shared", "exclusive", "reuseport"}
    assert plan_from_json(json.loads(json.dumps(plan_to_json(plan)))) == plan
    assert not any(e.kind in ("herd", "cores") for e in preset("quick").experiments)
    # Neither kind adds grid points: the sweep's points are the other kinds' only.
    assert all(not e.points() for e in kinds.values())


@pytest.mark.parametrize("balance", ["shared", "exclusive", "reuseport"])
def test_a_herd_cell_accounts_for_every_connection_made(balance: str) -> None:
    cell = herd.measure_herd("epoll-lt", balance, 2, TINY)
    assert cell["connections_made"] > 0
    assert cell["accepted"] == cell["connections_made"]
    assert len(cell["accepted_per_worker"]) == 2
    assert sum(cell["accepted_per_worker"]) == cell["accepted"]
    assert cell["empty_wakeups"] >= 0


def results_in(tmp_path: Path) -> ResultsFile:
    data: dict[str, Any] = {"run_id": "t", "environment": {"cpus": 2, "cpus_available": [0, 1]}}
    return ResultsFile(tmp_path, data)


def test_exclusive_on_poll_is_recorded_as_skipped_with_its_reason(tmp_path: Path) -> None:
    spec = ScalingSpec(workers=(2,), balances=("exclusive",))
    results = results_in(tmp_path)
    herd.run_herd(results, ExperimentSpec("herd", "herd", ("poll",), scaling=spec))
    saved = json.loads((tmp_path / "results.json").read_text())
    (cell,) = saved["herd"]
    assert (cell["key"], cell["status"]) == ("herd/poll/exclusive/w2", "skipped")
    assert "EPOLLEXCLUSIVE" in cell["reason"]


def test_a_cores_cell_measures_throughput_and_server_cpu(tmp_path: Path) -> None:
    config = SweepConfig(run_dir=tmp_path, server_cpu=0, client_cpus=())
    cell = herd.measure_cores("epoll-lt", 4, 2, TINY, config)
    assert cell["rps"] > 0
    assert cell["server_cpu_s"] > 0
    assert cell["server_cpu_per_request_us"] > 0
    assert cell["load_errors"] == {}


def herd_record(balance: str, workers: int) -> dict[str, Any]:
    return {
        "experiment": "herd", "status": "done", "impl": "poll", "balance": balance,
        "workers": workers, "accept_rate_per_s": 1000.0 * workers,
        "worker_wakeups_per_accept": float(workers), "empty_wakeups_per_accept": workers - 1.0,
    }  # fmt: skip


def cores_record(workers: int) -> dict[str, Any]:
    return {
        "experiment": "cores", "status": "done", "impl": "epoll-lt", "connections": 20,
        "workers": workers, "rps": 5000.0 * workers, "server_cpu_per_request_us": 30.0,
    }  # fmt: skip


def test_charts_are_drawn_from_records_and_say_how_many_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data: dict[str, Any] = {
        "run_id": "t",
        "environment": {"cpus": 2, "cpus_available": [0, 1], "cpu_model": "x", "kernel": "6"},
        "herd": [herd_record(b, w) for b in ("shared", "reuseport") for w in (1, 2)],
        "cores": [cores_record(w) for w in (1, 2)],
    }
    titles: list[str] = []
    real_finish = plot.finish

    def spy(fig: Any, title: str, caption: str, out_dir: Path, stem: str) -> list[Path]:
        titles.append(title + " | " + caption)
        return real_finish(fig, title, caption, out_dir, stem)

    monkeypatch.setattr(herd, "finish", spy)
    paths = herd.chart_herd(data, "herd", tmp_path) + herd.chart_cores(data, "cores", tmp_path)
    assert sorted(p.name for p in paths) == ["cores.png", "cores.svg", "herd.png", "herd.svg"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert len(titles) == 2
    assert all("on 2 CPUs" in t and "2 CPUs (2 available" in t for t in titles)

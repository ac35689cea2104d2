"""``muxlab sweep --preset quick``, as CI runs it: every point present, counts consistent."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.experiments import preset
from benchmarks.results import SCHEMA_VERSION, validate
from servers import registry

SWEEP_TIMEOUT_S = 240  # the preset's budget is 2 min; this only stops a hang
SERVED_BY_MUXLAB = ("readiness backend", "completion loop")


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("sweep")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "muxlab",
            "sweep",
            "--preset",
            "quick",
            "--out-dir",
            str(out),
            "--run-id",
            "ci",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )
    return out / "ci", proc


def test_quick_preset_exits_zero_and_prints_the_ratios(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, proc = quick_run
    assert proc.returncode == 0, proc.stderr
    assert "(a) throughput at 10 active" in proc.stdout
    assert "(b, c) server CPU per request" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_quick_results_file_is_complete_and_consistent(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    run_dir, _ = quick_run
    data = json.loads((run_dir / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["state"] == "complete"
    assert data["command"][:2] == ["muxlab", "sweep"]
    assert data["environment"]["fd_limit_hard"] > 0 and data["environment"]["git_commit"]
    provenance = data["provenance"]
    assert len(provenance["git_commit"]) == 40 and isinstance(provenance["git_dirty"], bool)
    assert provenance["muxlab_version"] and provenance["kernel"] and provenance["python"]
    assert provenance["server_cpu"] == data["pinning"]["server_cpu"]
    assert validate(data) == []
    planned = {p.key for p in preset("quick").points()}
    assert {r["key"] for r in data["points"]} == planned
    for record in data["points"]:
        if record["status"] == "skipped":
            assert record["reason"]
            continue
        assert record["status"] == "done", (record["key"], record["reason"])
        valid = [run for run in record["repeats"] if run["valid"]]
        assert len(valid) == record["repeats_wanted"] == data["plan"]["repeats"]
        for run in valid:
            assert run["requests_ok"] > 0
            assert run["loadgen_status"] == 0, run["errors"]
            if registry.get(record["spec"]["impl"]).kind in SERVED_BY_MUXLAB:
                # The server itself held every active and idle connection in the window.
                wanted = record["spec"]["connections"] + record["spec"]["idle"]
                assert run["server_connections_open"] >= wanted
            if run["server_replies_total"] is not None:
                # Exact: the server replied to everything the client counted, plus at most
                # what was in flight when the client stopped.
                extra = run["server_replies_total"] - run["requests_total"]
                assert 0 <= extra <= record["spec"]["connections"] * record["spec"]["pipeline"]


def test_select_is_skipped_past_its_ceiling_with_the_reason(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    run_dir, _ = quick_run
    data = json.loads((run_dir / "results.json").read_text())
    over = [
        r for r in data["points"] if r["spec"]["impl"] == "select" and r["spec"]["idle"] >= 1000
    ]
    assert over and all(r["status"] == "skipped" for r in over)
    assert all("FD_SETSIZE" in r["reason"] for r in over)


def test_quick_run_writes_csv_and_charts(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    run_dir, _ = quick_run
    data = json.loads((run_dir / "results.json").read_text())
    with open(run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["key"] for row in rows] == [r["key"] for r in data["points"]]
    for experiment in data["plan"]["experiments"]:
        for suffix in (".png", ".svg"):
            chart = run_dir / "charts" / f"{experiment['name']}{suffix}"
            assert chart.stat().st_size > 1000, chart

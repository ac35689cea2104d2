"""No silent bad samples: an invalid repeat is retried, kept out of every median and ratio,
and a point with no valid repeat fails the sweep with exit status 3 (issue 8 item 1)."""

from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from benchmarks import sweep
from benchmarks.experiments import PointSpec
from benchmarks.validity import RULES, STRICT, RepeatEvidence, repeat_problems, rules_for
from muxlab.cli import main
from tests.test_loadgen_units import summary_result

STUB = Path(__file__).resolve().parent / "stub_loadgen.py"


# -- the rules, on synthetic evidence ----------------------------------------------------


def load_result(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "schema_version": 1,
        "config": {"rate_rps": None},
        "requests_ok": 1000,
        "requests_total": 1500,
        "rps": 1000.0,
        "errors": {},
        "worker_failures": [],
        "connections": {"active": 10, "idle": 5, "idle_open_at_end": 5},
    }
    result.update(changes)
    return result


GOOD = RepeatEvidence(
    connections=10,
    idle=5,
    pipeline=1,
    loadgen_status=0,
    load=load_result(),
    window_s=1.0,
    snapshot_lags_s=(0.001, 0.002),
    server_connections_open=15,
    server_replies_window=1003,
    server_replies_total=1505,
)
OPEN_LOOP_SHORT = {"offered_rps": 2000.0, "achieved_rps": 1000.0}


def test_a_clean_repeat_is_valid() -> None:
    assert repeat_problems(GOOD, STRICT) == ()


@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (replace(GOOD, loadgen_status=1), "load generator exited 1"),
        (replace(GOOD, load=load_result(errors={"timeout": 2})), "2 client errors (2 timeout)"),
        (replace(GOOD, load=load_result(worker_failures=["w1 died"])), "lost 1 load worker"),
        (
            replace(GOOD, load=load_result(connections={"idle_open_at_end": 4})),
            "4 of 5 idle connections still open at the end",
        ),
        (replace(GOOD, server_connections_open=14), "the server held 14 connections"),
        (replace(GOOD, server_connections_open=17), "the server held 17 connections"),
        (replace(GOOD, load=load_result(open_loop=OPEN_LOOP_SHORT)), "achieved 1,000 of 2,000"),
        (
            replace(GOOD, load=load_result(config={"rate_rps": 2000.0})),
            "achieved 1,000 of 2,000",
        ),
        (replace(GOOD, snapshot_lags_s=(0.001, 0.2)), "server snapshot 200 ms after"),
        (replace(GOOD, server_replies_window=700), "700 replies in the server's window"),
        (replace(GOOD, server_replies_total=1400), "server replied 1400 times"),
    ],
)
def test_each_fault_makes_the_repeat_invalid(evidence: RepeatEvidence, reason: str) -> None:
    problems = repeat_problems(evidence, STRICT)
    assert len(problems) == 1 and problems[0].startswith(reason), problems


def test_overload_is_the_measurement_only_in_a_capacity_experiment() -> None:
    overloaded = replace(GOOD, loadgen_status=3, load=load_result(open_loop=OPEN_LOOP_SHORT))
    assert repeat_problems(overloaded, RULES["capacity"]) == ()
    assert len(repeat_problems(overloaded, rules_for(["active"]))) == 2  # exit 3 and the rate
    # A point shared with a strict experiment obeys the strict rules.
    assert rules_for(["capacity", "peers"]) == STRICT
    # Errors are never the measurement.
    failing = replace(overloaded, load=load_result(open_loop=OPEN_LOOP_SHORT, errors={"x": 1}))
    assert repeat_problems(failing, RULES["capacity"]) == ("1 client errors (1 x)",)


# -- client-bound, per process -----------------------------------------------------------


def test_client_bound_is_per_process_not_the_mean() -> None:
    # The sweep's run takes the load generator's own verdict (LoadResult.client_bound, the
    # parent process included) and the busiest process's utilisation, never the mean.
    point = PointSpec("epoll-lt", "echo", 10, 0, 64, 1)
    counters = {"cpu_user_s": 0.0, "cpu_system_s": 0.0}
    before = sweep.Snapshot(0, counters)
    after = sweep.Snapshot(10**9, {"cpu_user_s": 0.5, "cpu_system_s": 0.1})
    cases = [((0.95, 0.05), 0.1, True), ((0.85, 0.85), 0.1, False), ((0.1,), 0.95, True)]
    for client_cpu, parent_cpu, bound in cases:
        load = replace(summary_result(client_cpu), parent_cpu=parent_cpu)
        run = sweep.build_result(point, 1, "t", 0, "x.json", before, after, None, load)
        assert run.client_bound is bound
        assert run.metrics["client_cpu_util"] == max(*client_cpu, parent_cpu)
        assert run.requests_ok == load.requests_ok and run.errors == load.errors


# -- end to end, with a misbehaving load generator ---------------------------------------

PLAN = """\
repeats = {repeats}
retries = {retries}
duration_s = 0.3
warmup_s = 0.1

[[experiments]]
name = "idle"
kind = "idle"
impls = {impls}
connections = [2]
idle = {idle}
"""


def run_sweep(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    faults: str,
    *,
    repeats: int,
    retries: int,
    impls: str = '["epoll-lt"]',
    idle: str = "[2]",
    charts: bool = False,
) -> tuple[int, dict[str, Any], list[str], str]:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN.format(repeats=repeats, retries=retries, impls=impls, idle=idle))
    state = tmp_path / "stub-calls"
    status = main(
        [
            "sweep",
            "--config",
            str(plan),
            "--loadgen",
            f"{sys.executable} {STUB} {state} {faults}",
            "--out-dir",
            str(tmp_path / "runs"),
            "--run-id",
            "r",
            "--quiet",
            *([] if charts else ["--no-charts"]),
        ]
    )
    out, err = capsys.readouterr()
    data = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
    return status, data, state.read_text().splitlines(), out + err


def test_invalid_repeats_are_retried_and_only_valid_ones_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Slot 1: errors, then a clean run. Slot 2: lost idle connection, then half the rate:
    # two invalid attempts with retries = 1, so that slot is given up.
    status, data, calls, output = run_sweep(
        tmp_path, capsys, "errors,ok,lost-idle,under-rate", repeats=2, retries=1
    )
    assert status == 0, output
    assert [c.split()[1] for c in calls] == ["errors", "ok", "lost-idle", "under-rate"]
    (record,) = data["points"]
    assert record["status"] == "done"
    assert record["reason"].startswith("1 of 2 repeats valid")
    attempts = [(r["repeat"], r["attempt"], r["valid"]) for r in record["repeats"]]
    assert attempts == [(1, 1, False), (1, 2, True), (2, 1, False), (2, 2, False)]
    problems = [r["problems"] for r in record["repeats"]]
    assert problems[0] == ["3 client errors (1 reset, 2 timeout)"]
    assert problems[1] == []
    assert problems[2] == ["1 of 2 idle connections still open at the end (client)"]
    assert problems[3] == ["load generator exited 3", problems[3][1]]
    assert problems[3][1].startswith("achieved")
    valid_rps = record["repeats"][1]["metrics"]["rps"]
    assert record["summary"]["rps"]["n"] == 1
    assert record["summary"]["rps"]["median"] == valid_rps
    assert record["repeats_valid"] == 1
    with open(tmp_path / "runs" / "r" / "repeats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["status"], row["client_errors"]) for row in rows] == [
        ("invalid", "3"),
        ("valid", "0"),
        ("invalid", "0"),
        ("invalid", "0"),
    ]
    assert rows[0]["reason"] == "3 client errors (1 reset, 2 timeout)"
    assert rows[0]["errors_by_kind"] == "reset=1 timeout=2"
    with open(tmp_path / "runs" / "r" / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["repeats"], row["invalid_repeats"], row["client_errors"]) == ("1", "3", "3")


def test_a_point_without_a_valid_repeat_fails_the_sweep_with_status_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Round-robin order: poll at 0 idle (clean), then poll at 2 idle: exit 1, a lost worker.
    status, data, calls, output = run_sweep(
        tmp_path,
        capsys,
        "ok,exit1,worker-lost",
        repeats=1,
        retries=1,
        impls='["poll"]',
        idle="[0, 2]",
        charts=True,
    )
    assert status == 3, output
    assert len(calls) == 3
    base, loaded = data["points"]
    assert base["status"] == "done" and base["summary"]["rps"]["n"] == 1
    assert loaded["status"] == "failed"
    assert loaded["reason"].startswith("no valid repeat: load generator exited 1")
    assert "lost 1 load worker(s)" in loaded["reason"]
    assert loaded["summary"]["rps"]["n"] == 0 and loaded["summary"]["rps"]["median"] is None
    # In no ratio: poll's idle ratio has no loaded point to divide.
    assert re.search(r"^ +poll +n/a", output, re.M)  # columns follow the longest name
    assert "failed points (1; no valid repeat" in output
    assert f"    {loaded['key']}: no valid repeat" in output
    assert "1 point(s) failed" in output
    charts = tmp_path / "runs" / "r" / "charts"
    assert (charts / "idle.png").stat().st_size > 1000


def test_repeats_run_round_robin_over_the_points_of_an_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, data, calls, output = run_sweep(
        tmp_path, capsys, "ok", repeats=2, retries=0, impls='["epoll-lt", "poll"]', idle="[0]"
    )
    assert status == 0, output
    order = [c.split()[0] for c in calls]
    assert order == [
        "epoll-lt_echo_c2_i0_s1024_p1-r1.json",
        "poll_echo_c2_i0_s1024_p1-r1.json",
        "epoll-lt_echo_c2_i0_s1024_p1-r2.json",
        "poll_echo_c2_i0_s1024_p1-r2.json",
    ]
    assert [r["status"] for r in data["points"]] == ["done", "done"]

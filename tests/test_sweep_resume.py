"""Ctrl-C keeps every finished run; ``--resume`` measures the rest and repeats none."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from muxlab.cpu import proc_stat_fields

PLAN = """\
repeats = 2
duration_s = 0.3
warmup_s = 0.1

[[experiments]]
name = "active"
kind = "active"
impls = ["epoll-lt", "poll"]
connections = [1, 4]
"""


def sweep(*args: str) -> list[str]:
    return [sys.executable, "-m", "muxlab", "sweep", "--quiet", "--no-charts", *args]


def finished_runs(results: Path) -> dict[tuple[str, int], dict[str, object]]:
    try:
        data = json.loads(results.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {
        (r["key"], run["repeat"]): run
        for r in data["points"]
        for run in r["repeats"]
        if run["valid"]
    }


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (``proc(5)``, /proc/PID/task/TID/children)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def alive(pid: int) -> bool:
    try:
        state = proc_stat_fields(pid)[0]
    except OSError:
        return False
    return state != "Z"


# SIGTERM is what ``timeout``, ``kill`` and a CI cancellation send: it must stop a sweep
# as cleanly as Ctrl-C does.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_then_resume_loses_no_point_and_repeats_none(
    tmp_path: Path, sig: signal.Signals
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    results = tmp_path / "runs" / "r" / "results.json"
    proc = subprocess.Popen(
        sweep("--config", str(plan), "--out-dir", str(tmp_path / "runs"), "--run-id", "r"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(finished_runs(results)) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        while not children_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # interrupt it while a server and a load generator run
        children = children_of(proc.pid)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert children and not [pid for pid in children if alive(pid)], "children outlived it"
    assert "--resume" in stderr and "Traceback" not in stderr
    before = finished_runs(results)
    interrupted = json.loads(results.read_text())
    assert interrupted["state"] == "interrupted"
    assert 2 <= len(before) < 8

    resumed = subprocess.run(
        sweep("--resume", "r", "--out-dir", str(tmp_path / "runs")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads(results.read_text())
    after = finished_runs(results)
    assert data["state"] == "complete"
    assert len(data["resumed"]) == 1
    assert set(after) == {(r["key"], n) for r in data["points"] for n in (1, 2)}
    for record in data["points"]:
        assert record["status"] == "done"
        assert [run["repeat"] for run in record["repeats"] if run["valid"]] == [1, 2]
    for key, run in before.items():
        assert after[key] == run, f"{key} was measured again"

"""``muxlab demo uring-syscalls``: what it counts, asserted on counts (never on time).

The generic demo tests (tests/test_demos.py) check that it reproduces and that swapping
io_uring into epoll-lt's slot is not a reproduction; these check the counts themselves,
the one function that turns counters into system calls, and the refusal where io_uring
cannot run. Here, unlike there, an unavailable io_uring fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from lab.demos import DemoReport, Outcome, run_demo
from lab.demos import uring_syscalls as demo
from tests.conftest import require_available

REQUESTS = demo.WORKLOAD.requests
CONNECTIONS = demo.WORKLOAD.connections


@pytest.fixture(scope="module")
def report() -> DemoReport:
    require_available("io_uring", demo.unavailable())
    return run_demo(demo.DEMO)


def counts_of(report: DemoReport) -> dict[str, dict[str, Any]]:
    return {o.label: o.counts for o in report.outcomes}


def test_completion_loop_makes_fewer_system_calls_per_request_than_epoll_lt(
    report: DemoReport,
) -> None:
    counts = counts_of(report)
    assert counts["io_uring"]["total"] < counts["epoll-lt"]["total"], report.text
    assert report.reproduced and report.exit_status == 0
    assert "io_uring made" in report.text and ", fewer:" in report.text


def test_every_implementation_served_the_same_fixed_request_count(report: DemoReport) -> None:
    counts = counts_of(report)
    assert list(counts) == ["epoll-lt", "io_uring", "io_uring-poll"]
    for label, c in counts.items():
        assert c["requests"] == REQUESTS, label
        # One receive and one send per request, plus the accepts: whoever performs them.
        ops = 2 + CONNECTIONS / REQUESTS
        assert c["socket_operations"] == pytest.approx(ops, abs=0.001), label


def test_readiness_calls_recv_and_send_per_request_and_completion_calls_neither(
    report: DemoReport,
) -> None:
    counts = counts_of(report)
    lt, uring, uring_poll = counts["epoll-lt"], counts["io_uring"], counts["io_uring-poll"]
    # LT: exactly one recv and one send per request (one request in flight per connection).
    assert (lt["recv"], lt["send"], lt["io_uring_enter"]) == (1.0, 1.0, 0.0)
    assert lt["wait"] > 0 and lt["accept"] >= CONNECTIONS / REQUESTS
    # Completion: the kernel receives, sends and accepts; io_uring_enter is every call.
    assert (uring["wait"], uring["recv"], uring["send"], uring["accept"]) == (0, 0, 0, 0)
    assert uring["io_uring_enter"] == uring["total"] > 0
    # io_uring-poll is readiness: its waits are io_uring_enter, and it still calls recv
    # (draining to EAGAIN, edge-like) and send itself.
    assert uring_poll["wait"] == 0 and uring_poll["io_uring_enter"] > 0
    assert uring_poll["recv"] >= 1.0 and uring_poll["send"] >= 1.0
    assert uring_poll["total"] >= uring_poll["socket_operations"]


def test_the_table_shows_every_row_for_every_implementation(report: DemoReport) -> None:
    table = report.text.split("system calls per request, side by side:\n")[1]
    for label, _ in demo.ROWS:
        row = next(line for line in table.splitlines() if line.startswith(f"  {label} "))
        assert len(row.split()) - len(label.split()) == 3, row


def delta(**values: int) -> dict[str, int]:
    zero = ("wait_calls", "reads", "reads_eagain", "writes", "writes_eagain", "accepts",
            "accepts_eagain", "uring_enters")  # fmt: skip
    return {**dict.fromkeys(zero, 0), **values}


def test_system_calls_of_readiness_are_its_waits_and_every_socket_call() -> None:
    d = delta(wait_calls=7, reads=10, reads_eagain=3, writes=10, writes_eagain=1, accepts=2,
              accepts_eagain=1)  # fmt: skip
    calls = demo.system_calls("epoll-et", d)
    assert calls == demo.SystemCalls(7, 13, 11, 3, None, 0)
    assert calls.total == 34
    # A ring used for readiness: the waits are io_uring_enter calls, counted once.
    ring = demo.system_calls("io_uring-poll", {**d, "uring_enters": 7})
    assert (ring.wait, ring.io_uring_enter, ring.total) == (0, 7, 34)
    # Where the server counts epoll_ctl, it is read and added.
    assert demo.system_calls("epoll-lt", {**d, "ctl_calls": 4}).total == 38


def test_system_calls_of_the_completion_loop_are_only_io_uring_enter() -> None:
    d = delta(wait_calls=5, reads=10, writes=10, accepts=2, uring_enters=6)
    assert demo.system_calls("io_uring", d) == demo.SystemCalls(0, 0, 0, 0, None, 6)


def outcome(label: str, total: float) -> Outcome:
    counts = {field: 0.0 for _, field in demo.ROWS} | {"total": total}
    return Outcome(label, "naive", counts, shows_bug=False)


@pytest.mark.parametrize(("uring_total", "verdict"), [(0.5, ", fewer:"), (2.5, ", NOT fewer:")])
def test_the_summary_says_which_made_fewer_either_way(uring_total: float, verdict: str) -> None:
    text = demo.summarize([outcome("epoll-lt", 2.2), outcome("io_uring", uring_total)])
    assert f"io_uring made {uring_total:.2f} system calls per request and epoll-lt 2.20" in text
    assert verdict in text


def test_refused_in_one_line_where_io_uring_is_unavailable() -> None:
    # The binding pretends to run on 5.10, older than the oldest kernel it supports.
    proc = subprocess.run(
        [sys.executable, "-m", "muxlab", "demo", "uring-syscalls"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MUXLAB_URING_KERNEL": "5.10"},
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "muxlab demo: error: uring-syscalls cannot run here: Linux 5.10 is older than 5.15, "
        "the oldest this binding supports\n"
    )
    assert proc.stdout == ""


def test_a_series_on_one_server_counts_each_workload_alone() -> None:
    # One server, two workloads of different sizes: each is divided by its own request
    # count, and under LT each has exactly one recv and one send per request.
    series = [demo.Workload(10, 5, 64), demo.Workload(20, 3, 100)]
    served = demo.measure_workloads("epoll-lt", series)
    for workload, result in zip(series, served, strict=True):
        counts = result.counts
        assert counts.requests == workload.requests
        assert (counts.recv, counts.send, counts.io_uring_enter) == (1.0, 1.0, 0.0)
        assert counts.accept >= round(workload.connections / workload.requests, 3)
        assert result.cpu_user_us >= 0 and result.cpu_system_us >= 0

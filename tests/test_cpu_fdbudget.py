"""muxlab/cpu.py and muxlab/fdbudget.py: the one CPU-accounting and the one
descriptor-budget module. Limits and pinning are changed only in child processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from muxlab.cpu import (
    parent_pid,
    pin_to_cpu,
    proc_stat_fields,
    process_cpu_times,
    self_usage,
)
from muxlab.errors import UsageError
from muxlab.fdbudget import SERVER_RESERVE, SWEEP_RESERVE, WORKER_RESERVE, worker_descriptors


def run_child(code: str, soft_limit: int | None = None) -> str:
    """Run ``code`` in a fresh interpreter, with RLIMIT_NOFILE's soft limit lowered first."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def lower() -> None:
        if soft_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, hard))

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        timeout=60, preexec_fn=lower,
    ).stdout.strip()  # fmt: skip


def cpu_s() -> float:
    usage = self_usage()
    return usage.user_s + usage.system_s


def test_proc_stat_parse_reads_this_process() -> None:
    fields = proc_stat_fields(os.getpid())
    assert fields[0] == "R"  # reading its own stat, this process is running
    assert parent_pid(os.getpid()) == os.getppid()


def test_proc_and_getrusage_agree_on_this_process_cpu_time() -> None:
    # Burn CPU until getrusage counts at least 0.2 s (bounded: 100,000 steps of ~0.1 ms),
    # then /proc, which rounds down to clock ticks (10 ms at 100 Hz), counts most of it.
    steps = 0
    while cpu_s() < 0.2 and steps < 100_000:
        sum(range(10_000))
        steps += 1
    usage = self_usage()
    times = process_cpu_times(os.getpid())
    assert times.total_s == pytest.approx(times.user_s + times.system_s)
    assert 0.1 <= times.total_s <= usage.user_s + usage.system_s + 0.05
    assert usage.max_rss_kib > 1024  # an interpreter with pytest loaded holds > 1 MiB


def test_proc_stat_of_a_gone_process_raises_oserror() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(OSError):
        process_cpu_times(child.pid)


def test_pin_to_cpu_pins_the_calling_process_only() -> None:
    cpu = max(os.sched_getaffinity(0))
    out = run_child(f"import os; from muxlab.cpu import pin_to_cpu; pin_to_cpu({cpu}); "
                    "print(sorted(os.sched_getaffinity(0)))")  # fmt: skip
    assert out == f"[{cpu}]"


def test_pin_to_an_absent_cpu_is_a_usage_error() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(UsageError, match=r"^cannot pin to CPU 99999: "):
        pin_to_cpu(99999)
    assert os.sched_getaffinity(0) == before


def test_server_budget_is_the_soft_limit_minus_the_server_reserve() -> None:
    out = run_child(
        "from muxlab.fdbudget import server_connection_budget; print(server_connection_budget())",
        soft_limit=300,
    )
    assert int(out) == 300 - SERVER_RESERVE


def test_raise_fd_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = run_child(
        "import resource; from muxlab.fdbudget import raise_fd_limit; r = raise_fd_limit(); "
        "print(r, *resource.getrlimit(resource.RLIMIT_NOFILE))",
        soft_limit=300,
    )
    assert out.split() == [str(hard)] * 3


def test_ensure_fd_limit_raises_the_soft_limit_to_what_is_needed() -> None:
    out = run_child(
        "import resource; from muxlab.fdbudget import ensure_fd_limit; ensure_fd_limit(400); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])",
        soft_limit=300,
    )
    assert int(out) == 400


def test_sweep_budget_leaves_room_for_both_ends() -> None:
    assert SWEEP_RESERVE == SERVER_RESERVE + WORKER_RESERVE
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = run_child(
        "from muxlab.fdbudget import sweep_connection_budget; print(sweep_connection_budget())",
        soft_limit=300,
    )
    planned = int(out)
    assert planned == max(0, hard - SWEEP_RESERVE)
    # A point that large fits a one-process load generator and the server's own cap.
    assert worker_descriptors(planned) <= hard
    assert planned <= hard - SERVER_RESERVE

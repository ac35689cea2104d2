"""Per-operation cost of the two io_uring bindings considered: ours (ctypes + mmap over the
kernel ABI, :mod:`servers.uring.ring`) and the ``liburing`` package on PyPI (Python and
Zig over C liburing; it says it needs Linux 6.14+).

One operation is a submit-and-reap round trip from Python: write one SQE, one
``io_uring_enter`` that submits it and waits for its CQE, read the CQE and move the CQ
head. Two operations: ``NOP`` (the binding's own cost plus the cheapest system call) and
``POLL_ADD`` on a socket that is already readable (what a readiness wait costs). The
decision and its figures are in the header of :mod:`servers.uring.ring`.

Run: ``pytest --benchmark-only benchmarks/test_uring_binding.py`` (each binding timed on
its own), or ``python -m benchmarks.test_uring_binding`` (both interleaved, round by
round, medians with the spread across rounds: the fair comparison on a shared machine).
"""

from __future__ import annotations

import importlib.util
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from servers.uring import abi
from servers.uring.ring import Ring, unavailable_reason

OPS_PER_ROUND = 1000
RoundTrips = Callable[[int], int]


@contextmanager
def ours(op: str) -> Iterator[RoundTrips]:
    ring = Ring(sq_entries=8, cq_entries=16)
    a, b = socket.socketpair()
    b.send(b"x")  # a stays readable: every POLL_ADD completes at once
    prep, enter, completions = ring.prep, ring.enter, ring.completions
    opcode = abi.IORING_OP_NOP if op == "nop" else abi.IORING_OP_POLL_ADD
    fd = -1 if op == "nop" else a.fileno()

    def run(n: int) -> int:
        done = 0
        for i in range(n):
            prep(opcode, fd, i, op_flags=select.POLLIN)
            enter(1, None)
            done += len(completions())
        return done

    try:
        yield run
    finally:
        ring.close()
        a.close()
        b.close()


@contextmanager
def liburing(op: str) -> Iterator[RoundTrips]:
    lib: Any = pytest.importorskip("liburing")
    ring = lib.Ring()
    cqe = lib.Cqe()
    lib.io_uring_queue_init(8, ring)
    a, b = socket.socketpair()
    b.send(b"x")
    get_sqe, submit_and_wait = lib.io_uring_get_sqe, lib.io_uring_submit_and_wait
    wait_cqe, cqe_seen = lib.io_uring_wait_cqe, lib.io_uring_cqe_seen
    prep_nop, prep_poll = lib.io_uring_prep_nop, lib.io_uring_prep_poll_add
    fd = a.fileno()

    def run(n: int) -> int:
        done = 0
        for i in range(n):
            sqe = get_sqe(ring)
            if op == "nop":
                prep_nop(sqe)
            else:
                prep_poll(sqe, fd, select.POLLIN)
            sqe.user_data = i
            submit_and_wait(ring, 1)
            wait_cqe(ring, cqe)
            entry = cqe[0]
            done += entry.user_data == i
            cqe_seen(ring, entry)
        return done

    try:
        yield run
    finally:
        lib.io_uring_queue_exit(ring)
        a.close()
        b.close()


BINDINGS = {"ctypes-mmap": ours, "liburing": liburing}
OPS = ("nop", "poll_add")


@pytest.fixture(autouse=True)
def _io_uring_here() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("binding", list(BINDINGS))
def test_round_trip_cost(benchmark: Any, binding: str, op: str) -> None:
    with BINDINGS[binding](op) as run:
        benchmark.group = f"io_uring binding: {op} round trip"
        benchmark.extra_info.update(binding=binding, op=op, ops_per_round=OPS_PER_ROUND)
        completed = benchmark.pedantic(run, args=(OPS_PER_ROUND,), rounds=20, warmup_rounds=2)
    assert completed == OPS_PER_ROUND


def interleaved_ns_per_op(rounds: int) -> dict[tuple[str, str], list[float]]:
    """ns per round trip, for every binding and operation, the bindings alternating
    round by round so that drift of a shared machine hits both alike."""
    results: dict[tuple[str, str], list[float]] = {}
    for op in OPS:
        with ours(op) as run_ours, liburing(op) as run_lib:
            runs = {"ctypes-mmap": run_ours, "liburing": run_lib}
            for _ in range(rounds):
                for name, run in runs.items():
                    start = time.perf_counter_ns()
                    assert run(OPS_PER_ROUND) == OPS_PER_ROUND
                    per_op = (time.perf_counter_ns() - start) / OPS_PER_ROUND
                    results.setdefault((name, op), []).append(per_op)
    return results


def main() -> int:
    reason = unavailable_reason()
    if reason is not None:
        print(f"io_uring is not available here: {reason}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("liburing") is None:
        print("the liburing package is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    for (name, op), values in interleaved_ns_per_op(rounds=15).items():
        low, high = min(values), max(values)
        print(f"{op:9} {name:12} median {statistics.median(values):7.0f} ns/op "
              f"(min {low:.0f}, max {high:.0f}, {len(values)} rounds)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

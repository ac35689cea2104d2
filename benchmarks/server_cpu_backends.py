"""Server CPU and system calls per request of several backends, side by side, interleaved.

Usage::

    python -m benchmarks.server_cpu_backends --backends epoll-lt,io_uring-poll,io_uring \\
        --size 1024 --connections 100 --rounds 5 --duration 3

Each round starts ``muxlab serve`` for every backend in turn (the order rotates from
round to round), pinned to CPU 0, drives it with ``muxlab load`` (closed loop, echo) and
takes the server's CPU time, requests and system calls from its own counters around the
load run. System calls per request: for a readiness backend every wait, recv, send and
accept the loop made (``epoll_ctl`` is not counted); for the completion loop, its
``io_uring_enter`` calls, since the kernel does the receives and sends itself. It guides
a decision on a shared machine; it publishes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from servers.backends import BACKEND_NAMES, brings_own_loop
from servers.process import ServerProcess

_OPERATIONS = ("reads", "reads_eagain", "writes", "writes_eagain", "accepts", "accepts_eagain")


@dataclass(frozen=True)
class Sample:
    cpu_us_per_request: float
    syscalls_per_request: float


def syscalls(backend: str, counters: dict[str, Any]) -> int:
    """System calls the server made, from its counters (see the module docstring)."""
    waits: int = counters["uring_enters"] or counters["wait_calls"]
    if brings_own_loop(backend):  # type: ignore[arg-type]
        return waits
    return waits + sum(int(counters[name]) for name in _OPERATIONS)


def measure(backend: str, size: int, connections: int, duration_s: float) -> Sample:
    with ServerProcess(backend, "echo", cpu=0) as server:
        before = server.counters()
        subprocess.run(
            [sys.executable, "-m", "muxlab", "load", "--port", str(server.port),
             "--protocol", "echo", "--connections", str(connections), "--cpus", "1",
             "--duration", str(duration_s), "--warmup", "0.5", "--size", str(size),
             "--quiet"],
            check=True, timeout=duration_s + 60,
        )  # fmt: skip
        after = server.counters()
    delta = {k: after[k] - before[k] for k in after if isinstance(after[k], int | float)}
    requests = max(1, int(delta["bytes_in"]) // size)
    cpu_s = delta["cpu_user_s"] + delta["cpu_system_s"]
    return Sample(cpu_s / requests * 1e6, syscalls(backend, delta) / requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="epoll-lt,io_uring-poll,io_uring")
    parser.add_argument("--size", type=int, default=1024, help="echo message, bytes")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    args = parser.parse_args(argv)
    backends = args.backends.split(",")
    unknown = [b for b in backends if b not in BACKEND_NAMES]
    if unknown or args.rounds < 1 or args.size < 1 or args.connections < 1:
        parser.error(f"unknown backend(s) {unknown}" if unknown else "values must be positive")
    samples: dict[str, list[Sample]] = {b: [] for b in backends}
    for round_no in range(args.rounds):
        order = backends[round_no % len(backends) :] + backends[: round_no % len(backends)]
        for backend in order:
            samples[backend].append(measure(backend, args.size, args.connections, args.duration))
    base = statistics.median(s.cpu_us_per_request for s in samples[backends[0]])
    for backend, runs in samples.items():
        cpu = [s.cpu_us_per_request for s in runs]
        calls = [s.syscalls_per_request for s in runs]
        print(
            f"{backend:14} CPU {statistics.median(cpu):6.2f} us/request "
            f"[{min(cpu):.2f}-{max(cpu):.2f}] ({statistics.median(cpu) / base:.2f}x "
            f"{backends[0]})  system calls {statistics.median(calls):5.2f}/request "
            f"[{min(calls):.2f}-{max(calls):.2f}]",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

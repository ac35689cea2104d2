"""Server CPU and system calls per request, side by side with uvloop, interleaved.

Usage::

    python -m benchmarks.server_cpu_backends \\
        --impls epoll-lt,epoll-et,epoll-et/short-read,io_uring,uvloop-protocol \\
        --connections 100,1000 --size 1024 --rounds 5 --duration 3

Each round starts every implementation in turn (the order rotates from round to round),
pinned to CPU 0, drives it with ``muxlab load`` (closed loop, echo) and takes two things
around the load run: the server's CPU time **from outside** (``/proc/PID/stat``, user +
system, so the server's own accounting cannot flatter it) and, from its counters, the
requests it served (``bytes_in`` / size) and its system calls (``syscalls``, the one sum
:meth:`servers.counters.Counters.syscalls` defines; the reference peers count none). An
implementation is named as in the sweep; ``IMPL/short-read`` is epoll-et with
``--et-drain short-read``.

Printed per connection count: each implementation's median CPU per request with its
min-max and bootstrap 95% interval (benchmarks/stats.py), its ratio to the baseline
(``--baseline``, uvloop's protocol server) with the interval of the ratio, its system
calls per request, and the verdict of issue 11's goals. It guides a decision on a shared
machine and publishes nothing: the figures belong to the machine that printed them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.experiments import PointSpec
from benchmarks.stats import (
    Comparison,
    median_interval,
    ratio_if_defined,
    ratio_text,
    verdict,
)
from muxlab.cpu import process_cpu_times
from servers import registry
from servers.backends import BACKENDS, brings_own_loop
from servers.counters import SyscallModel, count_syscalls
from servers.loop import ET_DRAINS
from servers.process import ServerProcess
from servers.registry import takes_et_drain

DEFAULT_IMPLS = "epoll-lt,epoll-et,epoll-et/short-read,io_uring,uvloop-protocol"


@dataclass(frozen=True)
class Sample:
    cpu_us_per_request: float
    syscalls_per_request: float | None  # None: a peer, which counts none


@dataclass(frozen=True)
class Goal:
    """Issue 11 item 6: ``metric(impl) / metric(reference) comparison bound``."""

    impl: str
    reference: str
    metric: str  # "cpu" or "syscalls"
    comparison: Comparison
    bound: float


GOALS = (
    Goal("epoll-lt", "uvloop-protocol", "cpu", "<=", 0.95),
    Goal("epoll-et/short-read", "epoll-lt", "cpu", "<=", 1.0),
    Goal("io_uring", "epoll-lt", "syscalls", "<", 1.0),
)


def syscalls(impl: str, delta: Mapping[str, Any]) -> int:
    """System calls in a counters delta: its ``syscalls``, or for a results file older
    than that counter, the same sum (:func:`servers.counters.count_syscalls`) of the
    counters it has. benchmarks/report.py reads old reference runs through this."""
    if "syscalls" in delta:
        return int(delta["syscalls"])
    ring = impl in BACKENDS and brings_own_loop(impl)
    model: SyscallModel = "completion" if ring else "loop"
    return count_syscalls(delta, model)


def point_of(name: str, connections: int, size: int) -> PointSpec:
    """``epoll-et/short-read`` -> epoll-et with that drain; a plain name as it is."""
    impl, _, drain = name.partition("/")
    return PointSpec(impl, "echo", connections, 0, size, 1, et_drain=drain or None)  # type: ignore[arg-type]


def check_impl(name: str) -> str | None:
    """Why ``name`` is not an implementation this benchmark can run, or None."""
    impl, _, drain = name.partition("/")
    entry = registry.find(impl)
    if entry is None:
        return f"unknown implementation {impl!r} (choose from {', '.join(registry.names())})"
    if "echo" not in entry.protocols:
        return f"{impl} does not serve echo (it serves {', '.join(entry.protocols)})"
    if drain and (drain not in ET_DRAINS or not takes_et_drain(impl)):
        return f"{impl} has no --et-drain {drain}"
    return None


def start(point: PointSpec) -> ServerProcess:
    """The server on CPU 0, as the sweep starts it (its registry entry)."""
    request = registry.ServerRequest("echo", 0, point.total_connections, None,
                                     tuple(point.server_args()))  # fmt: skip
    server = registry.get(point.impl).server(request)
    assert isinstance(server, ServerProcess)  # every echo server is a muxlab process
    return server


def cpu_seconds(pid: int) -> float:
    """The server's CPU time, read from outside it (/proc/PID/stat)."""
    times = process_cpu_times(pid)
    return times.user_s + times.system_s


@dataclass(frozen=True)
class Window:
    """One load run against a server: its CPU time over it and its counters either side."""

    cpu_s: float
    before: dict[str, Any]
    after: dict[str, Any]

    def delta(self, key: str) -> int:
        return int(self.after[key]) - int(self.before[key])


def load_window(
    server: ServerProcess, protocol: str, connections: int, size: int, duration_s: float
) -> Window:
    """``muxlab load`` on CPU 1 against ``server`` (pinned to CPU 0 by its starter)."""
    before = server.counters()
    cpu_before = cpu_seconds(server.pid)
    subprocess.run(
        [sys.executable, "-m", "muxlab", "load", "--port", str(server.port),
         "--protocol", protocol, "--connections", str(connections), "--cpus", "1",
         "--duration", str(duration_s), "--warmup", "0.5", "--size", str(size), "--quiet"],
        check=True, timeout=duration_s + 120,
    )  # fmt: skip
    cpu_s = cpu_seconds(server.pid) - cpu_before
    return Window(cpu_s, before, server.counters())


def measure(name: str, size: int, connections: int, duration_s: float) -> Sample:
    with start(point_of(name, connections, size)) as server:
        window = load_window(server, "echo", connections, size, duration_s)
    requests = max(1, window.delta("bytes_in") // size)
    calls = None
    if "syscalls" in window.after:
        calls = window.delta("syscalls") / requests
    return Sample(window.cpu_s / requests * 1e6, calls)


def describe(values: Sequence[float], unit: str) -> str:
    interval = median_interval(values)
    spread = f"[{min(values):.2f}-{max(values):.2f}]"
    ci = "" if interval is None else f" CI [{interval.low:.2f}, {interval.high:.2f}]"
    return f"{statistics.median(values):6.2f} {unit} {spread}{ci}"


def report(samples: dict[str, list[Sample]], baseline: str) -> None:
    base_cpu = [s.cpu_us_per_request for s in samples.get(baseline, [])]
    for name, runs in samples.items():
        cpu = [s.cpu_us_per_request for s in runs]
        line = f"  {name:22} CPU {describe(cpu, 'us/request')}"
        ratio = ratio_if_defined(cpu, base_cpu) if name != baseline else None
        if ratio is not None:
            line += f"  {ratio_text(ratio)}x {baseline}"
        calls = [s.syscalls_per_request for s in runs if s.syscalls_per_request is not None]
        line += f"  syscalls {describe(calls, '/request')}" if calls else "  syscalls n/a (peer)"
        print(line, flush=True)
    for goal in GOALS:
        if goal.impl not in samples or goal.reference not in samples:
            continue
        ratio = ratio_if_defined(metric_of(samples[goal.impl], goal.metric),
                                 metric_of(samples[goal.reference], goal.metric))  # fmt: skip
        if ratio is None:
            continue
        outcome = verdict(ratio, goal.comparison, goal.bound)
        print(
            f"  goal {goal.metric} {goal.impl} / {goal.reference} {goal.comparison} "
            f"{goal.bound}: {ratio_text(ratio)} -> {outcome}",
            flush=True,
        )


def metric_of(runs: list[Sample], metric: str) -> list[float]:
    if metric == "cpu":
        return [s.cpu_us_per_request for s in runs]
    return [s.syscalls_per_request for s in runs if s.syscalls_per_request is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--impls", default=DEFAULT_IMPLS)
    parser.add_argument("--baseline", default="uvloop-protocol")
    parser.add_argument("--size", type=int, default=1024, help="echo message, bytes")
    parser.add_argument("--connections", default="100,1000", help="comma-separated counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    args = parser.parse_args(argv)
    impls = args.impls.split(",")
    problems = [p for p in map(check_impl, impls) if p]
    try:
        counts = [int(c) for c in args.connections.split(",")]
    except ValueError:
        parser.error("--connections takes comma-separated integers")
    if problems:
        parser.error("; ".join(problems))
    if args.rounds < 1 or args.size < 1 or min(counts) < 1 or args.duration <= 0:
        parser.error("--rounds, --size, --connections and --duration must be positive")
    for connections in counts:
        samples: dict[str, list[Sample]] = {name: [] for name in impls}
        for round_no in range(args.rounds):
            shift = round_no % len(impls)
            for name in impls[shift:] + impls[:shift]:
                samples[name].append(measure(name, args.size, connections, args.duration))
        print(f"{connections} connections, {args.size} B echo, {args.rounds} rounds:")
        report(samples, args.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())

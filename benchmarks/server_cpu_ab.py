"""Server CPU per request of two source trees, side by side, interleaved (A/B).

Usage::

    git archive <commit> | tar -x -C /tmp/before     # the tree to compare against
    python -m benchmarks.server_cpu_ab /tmp/before . \\
        --impls epoll-lt,epoll-et/short-read --connections 100,1000 --rounds 8

Each round starts ``muxlab serve`` from each tree in turn (same backend, protocol, CPU 0),
drives it with this tree's ``muxlab load`` (closed loop, on CPU 1) and takes the server's
CPU time from outside (``/proc/PID/stat``, as benchmarks/server_cpu_backends.py does) and
the requests it served from its counters, around the load run. The order alternates from
round to round (AB, BA, ...), so that drift of a shared machine hits both alike. Printed
per implementation and connection count: each tree's median with its min-max, and the
ratio B/A with its bootstrap 95% interval (benchmarks/stats.py). An implementation is named
as in server_cpu_backends (``epoll-et/short-read`` is epoll-et with
``--et-drain short-read``). It measures one change's cost; it publishes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.server_cpu_backends import load_window
from benchmarks.stats import ratio_if_defined, ratio_text
from servers.backends import BACKENDS
from servers.loop import ET_DRAINS
from servers.process import ServerProcess
from servers.protocols import HTTP_OK, PROTOCOL_NAMES
from servers.registry import takes_et_drain


def server_args(impl: str) -> tuple[str, list[str]]:
    """``epoll-et/short-read`` -> (``epoll-et``, ``["--et-drain", "short-read"]``)."""
    backend, _, drain = impl.partition("/")
    return backend, (["--et-drain", drain] if drain else [])


def check_impl(impl: str) -> str | None:
    """Why ``impl`` is not a muxlab implementation both trees can serve, or None."""
    backend, _, drain = impl.partition("/")
    if backend not in BACKENDS:
        return f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})"
    if drain and (drain not in ET_DRAINS or not takes_et_drain(backend)):
        return f"{backend} has no --et-drain {drain}"
    return None


def cpu_us_per_request(
    tree: Path, impl: str, protocol: str, connections: int, size: int, duration_s: float
) -> float:
    backend, extra = server_args(impl)
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    # Started from the tree's own directory, so ``-m muxlab`` imports that tree.
    with ServerProcess(backend, protocol, cpu=0, env=env, extra_args=extra,
                       command=("-m", "muxlab", "serve"), cwd=tree) as server:  # fmt: skip
        window = load_window(server, protocol, connections, size, duration_s)
    if protocol == "http":
        requests = window.delta("bytes_out") // len(HTTP_OK)
    else:
        requests = window.delta("bytes_in") // size
    return window.cpu_s / max(requests, 1) * 1e6


def describe(values: Sequence[float]) -> str:
    return f"{statistics.median(values):6.2f} us [{min(values):.2f}-{max(values):.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tree_a", type=Path)
    parser.add_argument("tree_b", type=Path)
    parser.add_argument("--impls", default="epoll-lt,epoll-et/short-read")
    parser.add_argument("--protocol", choices=PROTOCOL_NAMES, default="echo")
    parser.add_argument("--connections", default="100,1000", help="comma-separated counts")
    parser.add_argument("--size", type=int, default=1024, help="echo message, bytes")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    args = parser.parse_args(argv)
    impls = args.impls.split(",")
    problems = [p for p in map(check_impl, impls) if p]
    problems += [f"{tree} is not a source tree (no muxlab/)" for tree in
                 (args.tree_a, args.tree_b) if not (tree / "muxlab").is_dir()]  # fmt: skip
    if problems:
        parser.error("; ".join(problems))
    try:
        counts = [int(c) for c in args.connections.split(",")]
    except ValueError:
        parser.error("--connections takes comma-separated integers")
    if args.rounds < 1 or args.size < 1 or min(counts) < 1 or args.duration <= 0:
        parser.error("--rounds, --size, --connections and --duration must be positive")
    for connections in counts:
        for impl in impls:
            trees = (args.tree_a, args.tree_b)
            runs: tuple[list[float], list[float]] = ([], [])
            for round_no in range(args.rounds):
                for side in (0, 1) if round_no % 2 == 0 else (1, 0):
                    runs[side].append(cpu_us_per_request(
                        trees[side], impl, args.protocol, connections, args.size,
                        args.duration))  # fmt: skip
            a, b = runs
            ratio = ratio_if_defined(b, a)
            shown = "n/a" if ratio is None else ratio_text(ratio, 3)
            print(f"{impl:20} {connections:5} conns  A {describe(a)}  B {describe(b)}  "
                  f"B/A {shown}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

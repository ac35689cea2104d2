"""Server CPU per request of two source trees, side by side, interleaved (A/B).

Usage::

    git archive <commit> | tar -x -C /tmp/before     # the tree to compare against
    python -m benchmarks.server_cpu_ab /tmp/before . --rounds 5 --duration 3

Each round starts ``muxlab serve`` from each tree in turn (same backend, protocol, CPU),
drives it with this tree's ``muxlab load`` (closed loop) and takes the server's CPU time
and request count from its own counters around the load run. Rounds alternate A and B so
that drift of a shared machine hits both alike; the spread across rounds is printed with
the medians. It measures one change's cost; it publishes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from servers.process import ServerProcess
from servers.protocols import HTTP_OK

ECHO_SIZE = 64


def cpu_us_per_request(tree: Path, backend: str, protocol: str, duration_s: float) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    # Started from the tree's own directory, so ``-m muxlab`` imports that tree.
    with ServerProcess(backend, protocol, cpu=0, env=env, command=("-m", "muxlab", "serve"),
                       cwd=tree) as server:  # fmt: skip
        before = server.counters()
        subprocess.run(
            [sys.executable, "-m", "muxlab", "load", "--port", str(server.port),
             "--protocol", protocol, "--connections", "50", "--cpus", "1",
             "--duration", str(duration_s), "--warmup", "0.5", "--size", str(ECHO_SIZE),
             "--quiet"],
            check=True, timeout=duration_s + 60,
        )  # fmt: skip
        after = server.counters()
    cpu_s: float = sum(after[k] - before[k] for k in ("cpu_user_s", "cpu_system_s"))
    if protocol == "http":
        requests = (after["bytes_out"] - before["bytes_out"]) // len(HTTP_OK)
    else:
        requests = (after["bytes_in"] - before["bytes_in"]) // ECHO_SIZE
    per_request_us: float = cpu_s / max(requests, 1) * 1e6
    return per_request_us


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tree_a", type=Path)
    parser.add_argument("tree_b", type=Path)
    parser.add_argument("--backends", default="epoll-lt,epoll-et")
    parser.add_argument("--protocols", default="echo,http")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    for backend in args.backends.split(","):
        for protocol in args.protocols.split(","):
            a: list[float] = []
            b: list[float] = []
            for _ in range(args.rounds):
                a.append(cpu_us_per_request(args.tree_a, backend, protocol, args.duration))
                b.append(cpu_us_per_request(args.tree_b, backend, protocol, args.duration))
            ma, mb = statistics.median(a), statistics.median(b)
            print(
                f"{backend:9} {protocol:5} A {ma:6.2f} us [{min(a):.2f}-{max(a):.2f}]  "
                f"B {mb:6.2f} us [{min(b):.2f}-{max(b):.2f}]  B/A {mb / ma:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

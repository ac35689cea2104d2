"""Python CPU per request of the shared loop, the kernel stubbed out: A/B of two trees.

Usage::

    git archive <commit> | tar -x -C /tmp/before
    python -m benchmarks.server_cpu_python /tmp/before . --rounds 9

Why: a 1 KiB echo costs the server about 4.5 us of CPU on a quiet machine, three quarters
of it in the kernel (``recv``, ``send``, ``epoll_wait`` on loopback TCP), so a change of
100 ns in the Python request path is a 2% effect, within the spread of an end-to-end run on
a shared machine (benchmarks/server_cpu_ab.py). This measures the Python part alone: each
tree's own ``Server._loop`` runs in a child process against a stub backend whose ``wait``
returns the same N read events every turn, and stub sockets whose ``recv`` returns 1 KiB and
whose ``send`` takes it all (both Python functions, the same in both trees, so they add a
constant). CPU time (``time.process_time_ns``) over a fixed number of requests, in chunks;
each child reports its fastest chunk (the one the machine disturbed least), rounds alternate
A and B. Printed: ns per request for each tree (median of the rounds, min-max) and the
ratio B/A with its bootstrap interval, for LT and ET short-read at a few events per wait.
It guides a change to servers/loop.py or servers/connection.py; it measures no kernel
and publishes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MODES = ("epoll-lt", "epoll-et/short-read")
MESSAGE = b"x" * 1024
REQUESTS_PER_CHUNK = 50_000
CHUNKS = 7


def child(mode: str, events_per_wait: int) -> list[float]:
    """Runs in the tree under test (its ``servers`` first on ``sys.path``)."""
    import time

    from servers.backends.base import Backend, Event
    from servers.loop import Connection, Server, ServerConfig
    from servers.protocols import PROTOCOLS

    turns_per_chunk = max(1, REQUESTS_PER_CHUNK // events_per_wait)

    class StubSocket:
        __slots__ = ("_fd",)

        def __init__(self, fd: int) -> None:
            self._fd = fd

        def recv(self, size: int) -> bytes:
            return MESSAGE

        def send(self, data: bytes) -> int:
            return len(data)

        def fileno(self) -> int:
            return self._fd

        def close(self) -> None:
            pass

    class StubBackend(Backend):
        name = "stub"
        edge_triggered = mode != "epoll-lt"
        short_read_drain = True

        def __init__(self) -> None:
            self.turns = 0
            self.events: list[Event] = []
            self.server: Server | None = None

        def register(self, fd: int, events: int) -> None:
            pass

        def modify(self, fd: int, events: int) -> None:
            pass

        def unregister(self, fd: int) -> None:
            pass

        def wait(self, timeout_s: float | None) -> list[Event]:
            self.turns += 1
            if self.turns > turns_per_chunk and self.server is not None:
                self.server._stopping = True
                return []
            return self.events

    backend = StubBackend()
    config = ServerConfig(et_drain="strict" if mode == "epoll-lt" else "short-read")
    server = Server(config, backend=backend)
    backend.server = server
    fds = range(1_000_000, 1_000_000 + events_per_wait)  # no real descriptor has these
    for fd in fds:
        sock: object = StubSocket(fd)
        server._conns[fd] = Connection(sock, fd, PROTOCOLS["echo"]())  # type: ignore[arg-type]
    backend.events = [(fd, 1) for fd in fds]  # EPOLLIN
    per_request_ns: list[float] = []
    for _ in range(CHUNKS):
        backend.turns = 0
        server._stopping = False
        start_ns = time.process_time_ns()
        server._loop()
        per_request_ns.append(
            (time.process_time_ns() - start_ns) / (turns_per_chunk * events_per_wait)
        )
    server.listener.close()
    return per_request_ns


def run_child(tree: Path, mode: str, events_per_wait: int) -> float:
    """The tree's fastest chunk, ns per request."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(events_per_wait)],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"server_cpu_python: the child in {tree} failed: {done.stderr.strip()}")
    chunks: list[float] = json.loads(done.stdout)
    return min(chunks)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.stats import ratio_if_defined, ratio_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tree_a", type=Path)
    parser.add_argument("tree_b", type=Path)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--events-per-wait", default="1,4,64", help="comma-separated counts")
    args = parser.parse_args(argv)
    try:
        widths = [int(n) for n in args.events_per_wait.split(",")]
    except ValueError:
        parser.error("--events-per-wait takes comma-separated integers")
    if args.rounds < 1 or min(widths) < 1:
        parser.error("--rounds and --events-per-wait must be positive")
    for tree in (args.tree_a, args.tree_b):
        if not (tree / "servers" / "loop.py").is_file():
            parser.error(f"{tree} is not a source tree (no servers/loop.py)")
    trees = (args.tree_a, args.tree_b)
    for mode in MODES:
        for width in widths:
            runs: tuple[list[float], list[float]] = ([], [])
            for round_no in range(args.rounds):
                for side in (0, 1) if round_no % 2 == 0 else (1, 0):
                    runs[side].append(run_child(trees[side], mode, width))
            a, b = runs
            ratio = ratio_if_defined(b, a)
            shown = "n/a" if ratio is None else ratio_text(ratio, 3)
            print(
                f"{mode:20} {width:3} events/wait  A {statistics.median(a):5.0f} ns "
                f"[{min(a):.0f}-{max(a):.0f}]  B {statistics.median(b):5.0f} ns "
                f"[{min(b):.0f}-{max(b):.0f}]  B/A {shown}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())

"""What one ``connect(2)`` costs as one address pair holds more connections.

Opens N loopback connections from this process to a ``muxlab serve --backend epoll-et``
child (which accepts them; its backlog is ``net.core.somaxconn``), and prints the mean
time of ``connect(2)`` per block of connections: from the kernel's default source
address, or spread round-robin over loopback source addresses the way the load generator
does (``loadgen.connection.start_connect``). Run it in a private network namespace
(``unshare -n``, with ``lo`` up) so nothing else holds ports. Bounded: N connections,
then everything is closed and the server stopped.

Run: ``python -m benchmarks.connect_cost --connections 19936 --sources 1`` (then 3).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Sequence

from loadgen.connection import FIRST_AUTO_SOURCE, start_connect
from muxlab.fdbudget import raise_fd_limit
from servers.process import ServerProcess

BLOCK = 1000


def measure(connections: int, sources: int) -> list[float]:
    """Mean microseconds per connect(2), per block of :data:`BLOCK` connections."""
    addresses = [str(FIRST_AUTO_SOURCE + i) for i in range(sources)] if sources > 1 else [None]
    held: list[socket.socket] = []
    means: list[float] = []
    spent_ns = 0
    with ServerProcess("epoll-et") as server:
        try:
            for i in range(connections):
                started = time.perf_counter_ns()
                sock = start_connect(socket.AF_INET, server.address, addresses[i % len(addresses)])
                spent_ns += time.perf_counter_ns() - started
                held.append(sock)
                if (i + 1) % BLOCK == 0:
                    means.append(spent_ns / BLOCK / 1000)
                    spent_ns = 0
        finally:
            for sock in held:
                sock.close()
    return means


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.connect_cost", description=__doc__)
    parser.add_argument("--connections", type=int, default=19936)
    parser.add_argument("--sources", type=int, default=1, help="loopback source addresses")
    args = parser.parse_args(argv)
    if args.connections < BLOCK or args.sources < 1:
        parser.error(f"--connections must be >= {BLOCK} and --sources >= 1")
    if args.connections + 64 > raise_fd_limit():
        parser.error("--connections: above RLIMIT_NOFILE (ulimit -Hn)")
    for block, mean_us in enumerate(measure(args.connections, args.sources), start=1):
        print(f"{block * BLOCK:7} connections  {mean_us:8.1f} us per connect", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hostile clients and the soak run that sets them on a server next to normal clients.

Each hostile behaviour is one small function run in its own thread until ``stop`` is set
or its own bound (connections, bytes, seconds) is reached, whichever comes first; every
socket it opens is closed before it returns. They only talk to the loopback address they
are given. :func:`soak` starts one ``muxlab serve`` with its limits set low, drives it with
``muxlab load`` in open loop (the normal clients) and, optionally, the hostile clients
at the same time, and reports what a server must survive: crashes, descriptor leaks,
memory growth, the normal clients' p99 and errors, and the server's errors by kind.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from loadgen.child import run_load_in_child
from loadgen.config import LoadConfig
from loadgen.phase_lines import Phase
from loadgen.result import LoadResult
from servers.process import ServerProcess

Address = tuple[str, int]
Hostile = Callable[[Address, threading.Event, Counter[str]], None]

# Each behaviour opens at most this many connections at once (the burst excepted).
MAX_HELD = 20
MAX_OPS_PER_BEHAVIOUR = 100_000


def _connect(address: Address, timeout_s: float = 2.0) -> socket.socket | None:
    try:
        return socket.create_connection(address, timeout=timeout_s)
    except OSError:
        return None


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout turns close() into a reset (RST), socket(7).
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def slowloris(address: Address, stop: threading.Event, stats: Counter[str]) -> None:
    """Request heads dripped one byte at a time, never finished."""
    held: list[socket.socket] = []
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
    position = 0
    try:
        while not stop.is_set():
            while len(held) < MAX_HELD:
                sock = _connect(address)
                if sock is None:
                    break
                held.append(sock)
                stats["slowloris_connections"] += 1
            for sock in list(held):
                try:
                    sock.send(head[position % len(head) : position % len(head) + 1])
                except OSError:  # timed out by the server: expected
                    held.remove(sock)
                    sock.close()
                    stats["slowloris_closed_by_server"] += 1
            position += 1
            stop.wait(0.1)
    finally:
        for sock in held:
            sock.close()


def never_reading(address: Address, stop: threading.Event, stats: Counter[str]) -> None:
    """Send requests without pause and never read a reply, until the server stops reading."""
    held: list[socket.socket] = []
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 256
    try:
        for _ in range(MAX_HELD // 2):
            sock = _connect(address)
            if sock is None:
                continue
            sock.setblocking(False)
            held.append(sock)
        while not stop.is_set():
            for sock in held:
                with contextlib.suppress(OSError):
                    stats["never_reading_bytes"] += sock.send(request)
            stop.wait(0.05)
    finally:
        for sock in held:
            _reset(sock)


def _connections(
    address: Address, stop: threading.Event, pause_s: float = 0.01
) -> Iterator[socket.socket]:
    """One connection at a time, ``pause_s`` apart, until ``stop`` is set or
    :data:`MAX_OPS_PER_BEHAVIOUR` attempts were made; a failed connect waits 50 ms and
    counts as an attempt. The caller closes what it gets."""
    for _ in range(MAX_OPS_PER_BEHAVIOUR):
        if stop.is_set():
            return
        sock = _connect(address)
        if sock is None:
            stop.wait(0.05)
            continue
        yield sock
        stop.wait(pause_s)


def reset_mid_message(address: Address, stop: threading.Event, stats: Counter[str]) -> None:
    for sock in _connections(address, stop):
        with contextlib.suppress(OSError):
            sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 30000)
        _reset(sock)
        stats["resets"] += 1


def half_close(address: Address, stop: threading.Event, stats: Counter[str]) -> None:
    for sock in _connections(address, stop):
        with contextlib.suppress(OSError), sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HT")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
            stats["half_closes"] += 1


def garbage(address: Address, stop: threading.Event, stats: Counter[str]) -> None:
    rng = random.Random(9)
    for sock in _connections(address, stop):
        with contextlib.suppress(OSError), sock:
            sock.sendall(rng.randbytes(rng.randint(1, 20000)))
            sock.settimeout(0.2)
            sock.recv(65536)
            stats["garbage"] += 1


def connect_close_storm(address: Address, stop: threading.Event, stats: Counter[str]) -> None:
    # A storm, not a flood of the whole machine: about 1,000 connections per second.
    for sock in _connections(address, stop, pause_s=0.001):
        sock.close()
        stats["connect_close"] += 1


def burst_past_cap(burst: int) -> Hostile:
    """Every second, open ``burst`` connections at once, hold them briefly, close them."""

    def run(address: Address, stop: threading.Event, stats: Counter[str]) -> None:
        while not stop.is_set():
            held = [s for s in (_connect(address) for _ in range(burst)) if s is not None]
            stats["burst_connections"] += len(held)
            stop.wait(0.3)
            for sock in held:
                sock.close()
            stop.wait(0.7)

    return run


def hostile_clients(burst: int) -> list[Hostile]:
    return [slowloris, never_reading, reset_mid_message, half_close, garbage,
            connect_close_storm, burst_past_cap(burst)]  # fmt: skip


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass(frozen=True)
class SoakResult:
    backend: str
    hostile: bool
    duration_s: float
    crashed: bool
    fd_leak: int
    rss_growth_kib: int
    normal_p99_us: int
    normal_requests: int
    normal_errors: dict[str, int]
    server_errors: dict[str, int]
    hostile_ops: dict[str, int] = field(default_factory=dict)

    def row(self) -> str:
        return (
            f"{self.backend:9} {'yes' if self.hostile else 'no':7} "
            f"{'CRASHED' if self.crashed else 0!s:7} {self.fd_leak:7} "
            f"{self.rss_growth_kib:9} {self.normal_p99_us:9} {self.normal_requests:9} "
            f"{sum(self.normal_errors.values()):6}  "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.server_errors.items()))
        )


TABLE_HEADER = (
    "backend   hostile crashes fd_leak rss_kib+  p99_us    requests  errors  server errors"
)

# Limits set low so the hostile clients meet them within seconds.
SOAK_SERVER_ARGS = [
    "--max-connections", "150", "--header-timeout", "1", "--max-output-bytes", str(8 << 20),
]  # fmt: skip


def soak(
    backend: str, duration_s: float, rate: int, hostile: bool, connections: int = 20
) -> SoakResult:
    """One soak run: ``muxlab load`` in open loop at ``rate`` req/s over ``connections``
    for ``duration_s``, with the hostile clients alongside when ``hostile`` is true."""
    with ServerProcess(backend, "http", extra_args=SOAK_SERVER_ARGS) as server:
        pid = server.pid
        fds_before, rss_before = open_fds(pid), server.rss_kib()
        stop = threading.Event()
        stats: Counter[str] = Counter()
        threads = [
            threading.Thread(target=client, args=(server.address, stop, stats), daemon=True)
            for client in (hostile_clients(burst=200) if hostile else [])
        ]
        with tempfile.TemporaryDirectory() as tmp:
            try:
                load = _normal_clients(server, duration_s, rate, connections, Path(tmp), threads)
            finally:
                stop.set()
                for thread in threads:
                    if thread.is_alive():
                        thread.join(timeout=30)
        crashed = server.returncode is not None
        if not crashed:
            _wait_until_no_connections(server)
        counters = {} if crashed else server.counters()
        fd_leak = 0 if crashed else open_fds(pid) - fds_before
        rss_growth = 0 if crashed else server.rss_kib() - rss_before
    return SoakResult(
        backend=backend, hostile=hostile, duration_s=duration_s, crashed=crashed,
        fd_leak=fd_leak, rss_growth_kib=rss_growth,
        normal_p99_us=int(load.latency.p99), normal_requests=load.requests_ok,
        normal_errors=dict(load.errors), server_errors=dict(counters.get("errors", {})),
        hostile_ops=dict(stats),
    )  # fmt: skip


def _normal_clients(
    server: ServerProcess,
    duration_s: float,
    rate: int,
    connections: int,
    tmp: Path,
    hostile: list[threading.Thread],
) -> LoadResult:
    """``muxlab load`` in open loop against ``server``; the ``hostile`` threads start when
    its measurement window opens. The normal clients connect first: a cap that refused
    them would measure the cap, not the server's survival next to hostile clients."""
    config = LoadConfig(port=server.port, host=server.address[0], protocol="http",
                        connections=connections, rate_rps=float(rate), duration_s=duration_s,
                        warmup_s=0.5, timeout_s=5.0)  # fmt: skip

    def on_phase(phase: Phase) -> None:
        if phase == "measure":
            for thread in hostile:
                thread.start()

    child = run_load_in_child(config, tmp / "load.json", on_phase, deadline_s=duration_s + 120)
    if child.result is None:
        raise RuntimeError(f"muxlab load exited {child.status}: {child.stderr_tail}")
    return child.result


def _wait_until_no_connections(server: ServerProcess, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.counters()["connections_open"]:
        time.sleep(0.1)

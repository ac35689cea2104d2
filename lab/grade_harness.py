"""The grader's harness: the program under test as a process, and the clients that drive it.

The program is started as ``python PATH --host 127.0.0.1 --port PORT`` (or ``PATH --host
...`` when PATH is not a ``.py`` file: a compiled server) on a free loopback port, in its
own session, and is killed and reaped when the ``with`` block ends. Its listening socket
is found in ``/proc/net/tcp``, so it sees no probe connection. The clients are
non-blocking and run under a deadline and a stall limit, so a server that hangs fails a
check and never hangs the grader. The checks themselves are in :mod:`lab.grade`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
STARTUP_S = 10.0
# How long a server may take to close the descriptors of clients that are gone.
SETTLE_S = 3.0
CONNECT_TIMEOUT_S = 5.0
# A server that lets no client send or receive for this long has stopped serving them.
STALL_S = 5.0
TCP_LISTEN = "0A"  # the st column of /proc/net/tcp (include/net/tcp_states.h)


class ServerGone(Exception):
    """The program under test exited, or never listened."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str = ""


PASS = Verdict(True)


@dataclass
class Server:
    """The running program under test."""

    proc: subprocess.Popen[bytes]
    address: tuple[str, int]
    stderr_path: Path
    baseline_fds: int = 0

    def open_fds(self) -> int:
        """Descriptors the server holds (``proc(5)``, ``/proc/PID/fd``)."""
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except FileNotFoundError:
            raise ServerGone(self.exit_reason()) from None

    def exit_reason(self) -> str:
        status = self.proc.poll()
        lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        last = f": {lines[-1][:160]}" if lines else ""
        return f"the server exited with status {status}{last}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def is_listening(port: int) -> bool:
    """True once a socket listens on 127.0.0.1:port, found without connecting to it
    (``proc(5)``, ``/proc/net/tcp``), so the server sees no probe connection."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        for line in itertools.islice(table, 1, None):
            fields = line.split()
            if fields[1] == wanted and fields[3] == TCP_LISTEN:
                return True
    return False


@contextlib.contextmanager
def running_server(path: Path, extra_args: Sequence[str] = ()) -> Iterator[Server]:
    port = free_port()
    # A Python program runs under this interpreter; anything else (a compiled C server)
    # runs as the executable it is.
    program = [sys.executable, str(path)] if path.suffix == ".py" else [str(path.resolve())]
    argv = [*program, "--host", HOST, "--port", str(port), *extra_args]
    with tempfile.TemporaryDirectory(prefix="muxlab-grade-") as tmp:
        stderr_path = Path(tmp) / "stderr"
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=stderr, start_new_session=True)  # fmt: skip
        server = Server(proc, (HOST, port), stderr_path)
        try:
            wait_listening(server, port)
            server.baseline_fds = server.open_fds()
            yield server
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_listening(server: Server, port: int) -> None:
    deadline = time.monotonic() + STARTUP_S
    while not is_listening(port):
        if server.proc.poll() is not None:
            raise ServerGone(server.exit_reason())
        if time.monotonic() > deadline:
            raise ServerGone(f"nothing listened on {HOST}:{port} within {STARTUP_S:.0f} s")
        time.sleep(0.02)


# -- clients ---------------------------------------------------------------------------


@dataclass
class Stream:
    """One client connection: what it sends, in chunks, and what it must get back."""

    sock: socket.socket
    chunks: deque[bytes]
    expected: bytes
    half_close: bool = False
    received: bytearray = field(default_factory=bytearray)
    eof: bool = False
    reset: bool = False

    @property
    def done(self) -> bool:
        if self.reset or self.eof:
            return True
        return len(self.received) >= len(self.expected) and not self.half_close


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=CONNECT_TIMEOUT_S)
    sock.setblocking(False)
    return sock


def split(payload: bytes, rng: random.Random, max_pieces: int) -> deque[bytes]:
    cuts = sorted(rng.sample(range(1, len(payload)), min(max_pieces - 1, len(payload) - 1)))
    bounds = [0, *cuts, len(payload)]
    return deque(payload[i:j] for i, j in itertools.pairwise(bounds))


def exchange(streams: Sequence[Stream], timeout_s: float) -> None:
    """Send every stream's chunks and read its echo at the same time, until every stream
    is done, ``timeout_s`` passed, or nothing moved for ``STALL_S``. Sending and reading
    together is what a client of a server with backpressure must do; waiting on a
    selector keeps every client bounded."""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        for stream in streams:
            sel.register(stream.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, stream)
        pending = sum(1 for s in streams if not s.done)
        while pending and (now := time.monotonic()) < deadline:
            ready_keys = sel.select(timeout=min(STALL_S, deadline - now))
            if not ready_keys:
                return  # a working server always lets some client make progress
            for key, mask in ready_keys:
                ready: Stream = key.data
                was_done = ready.done
                if mask & selectors.EVENT_WRITE:
                    send_some(sel, ready)
                if mask & selectors.EVENT_READ:
                    read_some(ready)
                if ready.done and not was_done:
                    pending -= 1
                    sel.unregister(ready.sock)


def send_some(sel: selectors.BaseSelector, stream: Stream) -> None:
    while stream.chunks:
        chunk = stream.chunks[0]
        try:
            sent = stream.sock.send(chunk)
        except BlockingIOError:
            return
        except ConnectionError:
            stream.reset = True
            return
        if sent < len(chunk):
            stream.chunks[0] = chunk[sent:]
            return
        stream.chunks.popleft()
    if stream.half_close:
        with contextlib.suppress(OSError):
            stream.sock.shutdown(socket.SHUT_WR)
    sel.modify(stream.sock, selectors.EVENT_READ, stream)


def read_some(stream: Stream) -> None:
    try:
        data = stream.sock.recv(1 << 20)
    except BlockingIOError:
        return
    except ConnectionError:
        stream.reset = True
        return
    if data:
        stream.received += data
    else:
        stream.eof = True


def first_wrong(streams: Sequence[Stream]) -> str:
    """One line about the first stream whose echo is wrong, or "" when all are right."""
    for number, s in enumerate(streams, start=1):
        if bytes(s.received) == s.expected and (s.eof or not s.half_close):
            continue
        got = len(s.received)
        if s.reset:
            return f"client {number} was reset after {got} of {len(s.expected)} bytes echoed"
        if got > len(s.expected):
            return f"client {number}: {got - len(s.expected)} bytes more than it sent came back"
        if s.expected[:got] != bytes(s.received):
            pairs = zip(s.expected, s.received, strict=False)
            bad = next(i for i, (a, b) in enumerate(pairs) if a != b)
            return f"client {number}: echo differs from what it sent at byte {bad}"
        if got < len(s.expected):
            return f"client {number}: {got} of {len(s.expected)} bytes echoed before the deadline"
        return f"client {number} half-closed and got its echo, but the server never closed"
    return ""


def close_all(streams: Sequence[Stream]) -> None:
    for stream in streams:
        stream.sock.close()


def echo_verdict(streams: list[Stream], timeout_s: float, what: str) -> Verdict:
    try:
        exchange(streams, timeout_s)
        wrong = first_wrong(streams)
    finally:
        close_all(streams)
    return Verdict(False, f"{what}: {wrong}") if wrong else PASS


def fds_return_to_baseline(server: Server) -> Verdict:
    deadline = time.monotonic() + SETTLE_S
    while (held := server.open_fds() - server.baseline_fds) > 0:
        if time.monotonic() > deadline:
            return Verdict(False, f"{held} descriptors of closed clients still open after "
                                  f"{SETTLE_S:.0f} s (a leak)")  # fmt: skip
        time.sleep(0.05)
    return PASS

"""Grade an echo server: the project's contract checks, run against a student's program.

The program under test runs as a fresh process for every criterion (a server one check
wedged must not cost the others their points), started and reaped by
:mod:`lab.grade_harness`, whose non-blocking clients under a deadline drive it, so a
server that hangs loses the criterion's points and never hangs the grader.

A criterion is all or nothing: it passes, or it names in one line what the server did
wrong. Each is the contract-suite version of a demo (``muxlab demo NAME``) that shows the
bug it catches in isolation; the rubric table in docs/instructor/rubric.md is this
registry, in prose.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.grade_harness import (
    CONNECT_TIMEOUT_S,
    PASS,
    Server,
    ServerGone,
    Stream,
    Verdict,
    close_all,
    connect,
    echo_verdict,
    exchange,
    fds_return_to_baseline,
    first_wrong,
    running_server,
    split,
)

# SO_LINGER on with a zero timeout: close() sends RST (socket(7), tcp(7)).
LINGER_RESET = struct.pack("ii", 1, 0)
MANY_CONNECTIONS = 1100
# Connects complete in the kernel's backlog; a server that does not accept fills it and
# later connects wait for SYN retransmissions (1 s, 3 s, ...).
CONNECT_PHASE_S = 10.0
HOG_RCVBUF_BYTES = 4096
HOG_MESSAGE_BYTES = 1000
HOG_PACE_S = 0.0005
# The grader and the server each hold MANY_CONNECTIONS sockets, plus a few of their own.
FD_HEADROOM = 64


# -- criteria --------------------------------------------------------------------------


def check_echo_chunking(server: Server, rng: random.Random) -> Verdict:
    sizes = [rng.randint(1, 65536) for _ in range(20)] + [1 << 20]
    payload = b"".join(rng.randbytes(n) for n in sizes)
    stream = Stream(connect(server), split(payload, rng, 200), payload)
    return echo_verdict([stream], 20.0, f"{len(payload)} bytes in 200 random chunks")


def check_interleaved(server: Server, rng: random.Random) -> Verdict:
    socks = [connect(server) for _ in range(200)]
    try:
        for round_number in range(1, 6):
            streams = []
            for sock in socks:
                payload = rng.randbytes(rng.randint(1, 4096))
                streams.append(Stream(sock, split(payload, rng, 4), payload))
            exchange(streams, 10.0)
            if wrong := first_wrong(streams):
                return Verdict(False, f"200 clients, round {round_number}: {wrong}")
        return PASS
    finally:
        for sock in socks:
            sock.close()


def check_half_close(server: Server, rng: random.Random) -> Verdict:
    streams = []
    for _ in range(5):
        payload = rng.randbytes(50_000)
        streams.append(Stream(connect(server), split(payload, rng, 10), payload, half_close=True))
    verdict = echo_verdict(streams, 10.0, "5 clients send 50,000 bytes then shut down writing")
    return verdict if not verdict.passed else fds_return_to_baseline(server)


def check_reset(server: Server, rng: random.Random) -> Verdict:
    for number in range(1, 21):
        payload = rng.randbytes(1000)
        sock = connect(server)
        stream = Stream(sock, deque([payload]), payload)
        exchange([stream], 5.0)
        if wrong := first_wrong([stream]):
            sock.close()
            return Verdict(False, f"reset client {number} before its reset: {wrong}")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        sock.close()
    verdict = fds_return_to_baseline(server)
    if not verdict.passed:
        return Verdict(False, f"20 clients reset: {verdict.reason}")
    fresh = Stream(connect(server), deque([b"after the resets"]), b"after the resets")
    return echo_verdict([fresh], 5.0, "a client after 20 resets")


def check_never_reading(server: Server, rng: random.Random) -> Verdict:
    hog = socket.socket()
    # A small receive buffer (socket(7), SO_RCVBUF; set before connect so the window is
    # small from the start) fills after a few echoes, as a slow reader's would.
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, HOG_RCVBUF_BYTES)
    hog.settimeout(CONNECT_TIMEOUT_S)
    hog.connect(server.address)
    hog.setblocking(False)
    try:
        stop_ns = time.monotonic_ns() + 1_000_000_000
        message = rng.randbytes(HOG_MESSAGE_BYTES)
        # Small messages, paced: each is its own arrival, so even a server that reads
        # once per event echoes enough to fill the hog's buffers. For 1 s.
        while time.monotonic_ns() < stop_ns:
            with contextlib.suppress(BlockingIOError):
                hog.send(message)
            time.sleep(HOG_PACE_S)
        streams = []
        other = connect(server)
        for _ in range(20):
            payload = rng.randbytes(100)
            streams.append(Stream(other, deque([payload]), payload))
        served = 0
        deadline = time.monotonic() + 5.0
        for stream in streams:
            exchange([stream], max(0.0, deadline - time.monotonic()))
            if first_wrong([stream]):
                break
            served += 1
        other.close()
    finally:
        hog.close()
    if served < len(streams):
        return Verdict(False, f"while one client never reads, another got {served} of "
                              f"{len(streams)} echoes in 5 s (the loop is blocked)")  # fmt: skip
    return PASS


def check_many_connections(server: Server, rng: random.Random) -> Verdict:
    streams: list[Stream] = []
    deadline = time.monotonic() + CONNECT_PHASE_S
    try:
        for _ in range(MANY_CONNECTIONS):
            payload = rng.randbytes(32)
            streams.append(Stream(connect(server), deque([payload]), payload))
            if time.monotonic() > deadline:
                close_all(streams)
                return Verdict(False, f"only {len(streams)} of {MANY_CONNECTIONS} connections "
                                      f"completed in {CONNECT_PHASE_S:.0f} s")  # fmt: skip
    except OSError as exc:
        close_all(streams)
        return Verdict(False, f"connection {len(streams) + 1} failed: {exc}")
    return echo_verdict(streams, 20.0, f"{MANY_CONNECTIONS} connections open at once")


def check_accept_burst(server: Server, rng: random.Random) -> Verdict:
    # All connects are started at once, non-blocking, and complete in the kernel's
    # backlog before any client sends: arrivals merge into few events for the server,
    # which must accept until EAGAIN.
    socks = burst_connect(server, 100)
    streams = []
    for sock in socks:
        payload = rng.randbytes(32)
        streams.append(Stream(sock, deque([payload]), payload))
    return echo_verdict(streams, 10.0, "100 clients connected in a burst")


def burst_connect(server: Server, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(server.address)  # EINPROGRESS: the handshake finishes in the kernel
        socks.append(sock)
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_WRITE)
        connecting = len(socks)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while connecting and (now := time.monotonic()) < deadline:
            for key, _ in sel.select(deadline - now):
                sel.unregister(key.fileobj)
                connecting -= 1
    return socks


Check = Callable[[Server, random.Random], Verdict]


@dataclass(frozen=True)
class Criterion:
    name: str
    weight: int
    what: str
    demo: str
    """The ``muxlab demo`` that shows, in isolation, the bug this criterion catches."""
    check: Check


RUBRIC: tuple[Criterion, ...] = (
    Criterion("echo-chunking", 20, "byte-exact echo of 1.3 MB in 200 random chunks",
              "et-partial-read", check_echo_chunking),
    Criterion("interleaved-200", 15, "200 clients, 5 rounds of interleaved messages",
              "et-partial-read", check_interleaved),
    Criterion("half-close", 15, "echo then close after the client shuts down writing",
              "exact-event-compare", check_half_close),
    Criterion("reset", 15, "a reset client's descriptor is closed; the server goes on",
              "exact-event-compare", check_reset),
    Criterion("never-reading", 15, "a client that never reads does not block the others",
              "et-blocking", check_never_reading),
    Criterion("connections-1100", 10, f"{MANY_CONNECTIONS:,} connections at once",
              "select-limit", check_many_connections),
    Criterion("accept-burst", 10, "100 connections queued before the server accepts",
              "et-accept-once", check_accept_burst),
)  # fmt: skip
FULL_MARKS = sum(c.weight for c in RUBRIC)


@dataclass(frozen=True)
class Score:
    criterion: Criterion
    points: int
    reason: str


@dataclass(frozen=True)
class GradeReport:
    path: Path
    scores: tuple[Score, ...]

    @property
    def total(self) -> int:
        return sum(s.points for s in self.scores)

    @property
    def possible(self) -> int:
        """The weights of the criteria graded: FULL_MARKS unless some were left out."""
        return sum(s.criterion.weight for s in self.scores)

    @property
    def full_marks(self) -> bool:
        return self.total == self.possible

    def text(self) -> str:
        lines = [header(self.path), *(score_line(s) for s in self.scores)]
        lines.append(f"{'total':<18} {f'{self.total}/{self.possible}':>7}")
        return "\n".join(lines)


def header(path: Path) -> str:
    return f"muxlab grade {path}\n{'criterion':<18} {'score':>7}  reason"


def score_line(score: Score) -> str:
    mark = f"{score.points}/{score.criterion.weight}"
    return f"{score.criterion.name:<18} {mark:>7}  {score.reason or 'ok'}"


def grade_one(path: Path, criterion: Criterion, seed: int, extra_args: Sequence[str]) -> Score:
    rng = random.Random(f"{seed}:{criterion.name}")
    try:
        with running_server(path, extra_args) as server:
            try:
                verdict = criterion.check(server, rng)
            except OSError as exc:
                verdict = Verdict(False, f"{type(exc).__name__}: {exc}")
            if not verdict.passed and server.proc.poll() is not None:
                verdict = Verdict(False, f"{verdict.reason}; {server.exit_reason()}")
    except ServerGone as exc:
        verdict = Verdict(False, str(exc))
    points = criterion.weight if verdict.passed else 0
    reason = "" if verdict.passed else f"(see muxlab demo {criterion.demo}) {verdict.reason}"
    return Score(criterion, points, reason)


def grade(
    path: Path,
    seed: int = 0,
    extra_args: Sequence[str] = (),
    criteria: Sequence[Criterion] = RUBRIC,
    progress: Callable[[Score], None] | None = None,
) -> GradeReport:
    scores = []
    for criterion in criteria:
        score = grade_one(path, criterion, seed, extra_args)
        if progress is not None:
            progress(score)
        scores.append(score)
    return GradeReport(path, tuple(scores))

"""``emfile``: ``accept()`` fails with ``EMFILE`` and a level-triggered loop spins.

``accept(2)`` needs a new descriptor; at the ``RLIMIT_NOFILE`` limit it fails with
``EMFILE`` and leaves the connection in the accept queue. The listener therefore stays
readable, level-triggered epoll reports it again at once, accept fails again: a loop at
full CPU that serves nobody. Two fixes: keep one descriptor in reserve and spend it to
accept and close the connection (the client gets an answer instead of a hang), or stop
watching the listener for a while (what servers/loop.py does).

The experiment runs in a child process, because it lowers the descriptor limit and uses up
every descriptor, which nothing else in the calling process should have to survive.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import resource
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from lab.demos.base import Case, Demo

WINDOW_S = 0.5
WAIT_TIMEOUT_S = 0.05
PAUSE_S = 0.1
CHILD_TIMEOUT_S = 20.0
# An idle loop wakes about WINDOW_S / WAIT_TIMEOUT_S times; a spinning one, thousands.
SPIN_REPORTS = 100
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})


@dataclass
class AcceptState:
    listener: socket.socket
    ep: select.epoll
    reserve_fd: int
    emfile_errors: int = 0
    shed: int = 0
    paused_until_ns: int = 0
    paused: bool = False


Acceptor = Callable[[AcceptState, bool], None]
"""Called after every wait with whether the listener was reported."""


@dataclass(frozen=True)
class Counts:
    window_ms: int
    wait_calls: int
    reports: int
    accept_emfile: int
    connections_shed: int


# The three acceptors repeat their accept and errno check on purpose: each is one whole
# strategy a student compares with the others line by line (lab/demos/__init__.py).
def accept_ignoring_errors(state: AcceptState, reported: bool) -> None:
    """Deliberately wrong: logs-and-continues on EMFILE, so LT reports the listener again."""
    if not reported:
        return
    try:
        conn, _ = state.listener.accept()
    except OSError:
        state.emfile_errors += 1
        return
    conn.close()


def accept_with_reserve(state: AcceptState, reported: bool) -> None:
    if not reported:
        return
    try:
        conn, _ = state.listener.accept()
    except OSError as exc:
        if exc.errno not in _OUT_OF_DESCRIPTORS:
            raise
        state.emfile_errors += 1
        # Free the reserve, take the connection off the queue and close it, re-reserve.
        os.close(state.reserve_fd)
        conn, _ = state.listener.accept()
        conn.close()
        state.shed += 1
        state.reserve_fd = os.open(os.devnull, os.O_RDONLY)
        return
    conn.close()


def accept_or_pause(state: AcceptState, reported: bool) -> None:
    if state.paused:
        if time.monotonic_ns() >= state.paused_until_ns:
            # Registering again re-checks readiness, so the queued connection is reported.
            state.ep.register(state.listener.fileno(), select.EPOLLIN)
            state.paused = False
        return
    if not reported:
        return
    try:
        conn, _ = state.listener.accept()
    except OSError as exc:
        if exc.errno not in _OUT_OF_DESCRIPTORS:
            raise
        state.emfile_errors += 1
        state.ep.unregister(state.listener.fileno())
        state.paused = True
        state.paused_until_ns = time.monotonic_ns() + int(PAUSE_S * 1e9)
        return
    conn.close()


def _use_up_descriptors() -> list[int]:
    """Lower the soft limit just above the highest open descriptor and fill every gap."""
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 8, hard))
    fillers = []
    while True:
        try:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return fillers


def _run_at_limit(accept: Acceptor, results: Connection) -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    listener.setblocking(False)
    client = socket.create_connection(listener.getsockname(), timeout=5)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    state = AcceptState(listener, ep, os.open(os.devnull, os.O_RDONLY))
    _use_up_descriptors()
    wait_calls = reports = 0
    end_ns = time.monotonic_ns() + int(WINDOW_S * 1e9)
    while time.monotonic_ns() < end_ns:
        events = ep.poll(WAIT_TIMEOUT_S)
        wait_calls += 1
        reports += len(events)
        accept(state, bool(events))
    client.close()
    results.send(Counts(int(WINDOW_S * 1000), wait_calls, reports, state.emfile_errors, state.shed))


def measure(accept: Acceptor) -> Counts:
    ctx = multiprocessing.get_context("spawn")
    results_r, results_w = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_at_limit, args=(accept, results_w), daemon=True)
    proc.start()
    try:
        if not results_r.poll(CHILD_TIMEOUT_S):
            raise RuntimeError("the emfile child did not report")
        counts: Counts = results_r.recv()
        return counts
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def shows_bug(counts: Counts) -> bool:
    """The loop kept waking for a listener it could not serve."""
    return counts.reports > SPIN_REPORTS


DEMO = Demo(
    name="emfile",
    summary="accept() at the descriptor limit: an LT loop spins; a reserve fd or a pause fixes it",
    did=(
        "a child process listens on 127.0.0.1, one client connects, then the child lowers "
        "its soft RLIMIT_NOFILE and opens /dev/null until no descriptor is left; a "
        f"level-triggered epoll loop (wait timeout {WAIT_TIMEOUT_S * 1000:.0f} ms) runs the "
        f"accept handler for {WINDOW_S * 1000:.0f} ms and counts wait calls and reports"
    ),
    why=(
        "accept() fails with EMFILE before it takes the connection off the queue, so the "
        "listener stays readable and level-triggered epoll reports it on every wait: a busy "
        "loop. Spending a reserved descriptor lets the server accept and close the "
        "connection (the client learns it was refused); unregistering the listener for "
        f"{PAUSE_S * 1000:.0f} ms turns the spin into one retry per pause."
    ),
    man=(
        "accept(2), ERRORS (EMFILE, ENFILE); getrlimit(2), RLIMIT_NOFILE; "
        'epoll(7), "Level-triggered and edge-triggered"'
    ),
    naive=Case("LT, EMFILE ignored", accept_ignoring_errors),
    fixed=(
        Case("LT, reserved descriptor spent to accept and close", accept_with_reserve),
        Case(f"LT, listener unregistered for {PAUSE_S * 1000:.0f} ms", accept_or_pause),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

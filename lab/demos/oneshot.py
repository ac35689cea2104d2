"""``oneshot``: several worker threads waiting on one epoll instance.

Level-triggered epoll reports a readable descriptor to a waiter and, since it is still
readable, puts it straight back on the ready list and wakes the next waiter: while the
first worker is still busy with the socket, the others get the same event and handle
the same socket at the same time. ``EPOLLONESHOT`` disables the descriptor after one
report until the worker that got it re-arms it with ``EPOLL_CTL_MOD``.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo

WORKERS = 4
MESSAGES = 3
MESSAGE_BYTES = 100
# Each worker holds an event this long before reading, standing in for real work; every
# message is sent only after the previous one was handled (HOLD_S << GAP_S).
HOLD_S = 0.03
GAP_S = 0.12
WAIT_TIMEOUT_S = 0.05
JOIN_TIMEOUT_S = 5.0

Handle = Callable[[select.epoll, socket.socket], int]
"""Handle one reported event; return how many reads hit EAGAIN."""


@dataclass(frozen=True)
class Setup:
    flags: int
    handle: Handle


@dataclass(frozen=True)
class Counts:
    workers: int
    messages: int
    deliveries: int
    max_concurrent_handlers: int
    reads_eagain: int


def drain(sock: socket.socket) -> int:
    eagains = 0
    while True:
        try:
            if not sock.recv(4096):
                return eagains
        except BlockingIOError:
            return eagains + 1


def handle_shared(ep: select.epoll, sock: socket.socket) -> int:
    """Deliberately wrong with several waiters: nothing stops another worker taking it too."""
    return drain(sock)


def handle_and_rearm(ep: select.epoll, sock: socket.socket) -> int:
    eagains = drain(sock)
    # EPOLL_CTL_MOD re-arms a one-shot descriptor and re-checks readiness (epoll_ctl(2)).
    ep.modify(sock.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
    return eagains


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deliveries = 0
        self.active = 0
        self.max_active = 0
        self.eagains = 0


def _worker(
    ep: select.epoll, sock: socket.socket, handle: Handle, tally: _Tally, stop: threading.Event
) -> None:
    while not stop.is_set():
        if not ep.poll(WAIT_TIMEOUT_S, 1):
            continue
        with tally.lock:
            tally.deliveries += 1
            tally.active += 1
            tally.max_active = max(tally.max_active, tally.active)
        time.sleep(HOLD_S)
        eagains = handle(ep, sock)
        with tally.lock:
            tally.active -= 1
            tally.eagains += eagains


def measure(setup: Setup) -> Counts:
    client, server = socket.socketpair()
    tally = _Tally()
    stop = threading.Event()
    with client, server, select.epoll() as ep:
        server.setblocking(False)
        ep.register(server.fileno(), setup.flags)
        workers = [
            threading.Thread(
                target=_worker, args=(ep, server, setup.handle, tally, stop), daemon=True
            )
            for _ in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        try:
            for _ in range(MESSAGES):
                client.sendall(b"m" * MESSAGE_BYTES)
                time.sleep(GAP_S)
        finally:
            stop.set()
            for worker in workers:
                worker.join(JOIN_TIMEOUT_S)
    return Counts(WORKERS, MESSAGES, tally.deliveries, tally.max_active, tally.eagains)


def shows_bug(counts: Counts) -> bool:
    """One message reached more than one worker, or two workers held the socket at once."""
    return counts.deliveries > counts.messages or counts.max_concurrent_handlers > 1


DEMO = Demo(
    name="oneshot",
    summary="workers sharing one epoll: LT hands one event to all; EPOLLONESHOT to one",
    did=(
        f"a socket pair; {WORKERS} threads wait on one epoll instance for the server end "
        f"(maxevents 1); each holds a reported event for {HOLD_S * 1000:.0f} ms, then reads "
        f"until EAGAIN; the client sends {MESSAGES} messages, {GAP_S * 1000:.0f} ms apart"
    ),
    why=(
        "level-triggered epoll puts a descriptor that is still ready back on the ready list "
        "after reporting it and wakes another waiter, so every idle worker receives the "
        "same event while the first is still working on it: duplicated work, reads racing "
        "on one socket, EAGAINs. With EPOLLONESHOT the descriptor is disabled after one "
        "report; the worker re-arms it with EPOLL_CTL_MOD when done, so at most one worker "
        "owns it at a time."
    ),
    man='epoll_ctl(2), EPOLLONESHOT; epoll(7), "Level-triggered and edge-triggered"',
    naive=Case("LT, no EPOLLONESHOT", Setup(select.EPOLLIN, handle_shared)),
    fixed=(
        Case(
            "LT, EPOLLONESHOT, re-armed after handling",
            Setup(select.EPOLLIN | select.EPOLLONESHOT, handle_and_rearm),
        ),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

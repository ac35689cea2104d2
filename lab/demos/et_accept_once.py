"""``et-accept-once``: one ``accept()`` per event on an edge-triggered listening socket.

A burst of connections completes its handshakes before the server waits. Each arrival
puts the listener on the epoll ready list, but arrivals before the next wait merge into
one entry, so the wait reports it once; a handler that accepts one connection per event
leaves the others in the backlog. The next arrival reports the listener again, whether or
not the backlog was empty, and the handler accepts one more.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo

BURST = 5
QUIET_S = 0.05
MAX_WAITS = 32
# Loopback handshakes finish inside connect(); this only guards a slow, busy machine.
SETTLE_S = 0.02

Acceptor = Callable[[socket.socket], list[socket.socket]]


@dataclass(frozen=True)
class Setup:
    edge_triggered: bool
    accept: Acceptor


@dataclass(frozen=True)
class Counts:
    burst: int
    accepted_after_burst: int
    accepted_after_one_more: int
    left_in_backlog: int


def accept_one(listener: socket.socket) -> list[socket.socket]:
    """Deliberately wrong under ET: one ``accept`` per event."""
    try:
        return [listener.accept()[0]]
    except BlockingIOError:
        return []


def accept_until_eagain(listener: socket.socket) -> list[socket.socket]:
    accepted = []
    while True:
        try:
            accepted.append(listener.accept()[0])
        except BlockingIOError:
            return accepted


def serve_until_quiet(
    ep: select.epoll, listener: socket.socket, accept: Acceptor, stack: contextlib.ExitStack
) -> int:
    count = 0
    for _ in range(MAX_WAITS):
        if not ep.poll(QUIET_S):
            break
        for sock in accept(listener):
            stack.enter_context(sock)
            count += 1
    return count


def connect(address: tuple[str, int], stack: contextlib.ExitStack) -> None:
    stack.enter_context(socket.create_connection(address, timeout=5))


def measure(setup: Setup) -> Counts:
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=64))
        listener.setblocking(False)
        ep = stack.enter_context(select.epoll())
        mode = select.EPOLLET if setup.edge_triggered else 0
        ep.register(listener.fileno(), select.EPOLLIN | mode)
        address = listener.getsockname()
        for _ in range(BURST):
            connect(address, stack)
        time.sleep(SETTLE_S)
        after_burst = serve_until_quiet(ep, listener, setup.accept, stack)
        connect(address, stack)
        time.sleep(SETTLE_S)
        after_one_more = serve_until_quiet(ep, listener, setup.accept, stack)
        left = len(accept_until_eagain(listener))
        return Counts(BURST, after_burst, after_one_more, left)


def shows_bug(counts: Counts) -> bool:
    """Connections of the burst were left in the backlog once the listener went quiet."""
    return counts.accepted_after_burst < counts.burst


DEMO = Demo(
    name="et-accept-once",
    summary="ET listener with one accept() per event leaves a burst in the backlog",
    did=(
        f"a listening TCP socket on 127.0.0.1; {BURST} clients connect before the server "
        "waits; the server calls its accept handler once per reported event until a wait "
        f"reports nothing for {QUIET_S * 1000:.0f} ms; then one more client connects and "
        "the server waits again; finally the backlog is counted"
    ),
    why=(
        "a listening socket is readable while its accept queue is non-empty. Edge-triggered "
        "epoll puts it on the ready list on each new arrival, and arrivals before the next "
        "wait merge into one event, so one accept() per event serves one client per wake-up "
        "and the rest wait in the backlog (a later arrival wakes it again even though the "
        "queue was never empty). Accept until EAGAIN with ET; LT reports the listener again "
        "while the queue is non-empty."
    ),
    man=(
        'epoll(7), "Level-triggered and edge-triggered" (wait only after EAGAIN); accept(2), EAGAIN'
    ),
    naive=Case("ET, one accept() per event", Setup(True, accept_one)),
    fixed=(
        Case("LT, one accept() per event", Setup(False, accept_one)),
        Case("ET, accept until EAGAIN", Setup(True, accept_until_eagain)),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

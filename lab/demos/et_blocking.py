"""``et-blocking``: the classic tutorial's blocking sockets under edge-triggered epoll.

ET obliges a handler to read until EAGAIN, and only a non-blocking socket ever says
EAGAIN: on a blocking socket the read after the last byte waits for the peer, and the
whole loop waits with it (``epoll(7)``: ET "with nonblocking file descriptors"). A client
that sent a request and waits for the reply never sends again, so the wait is forever.
The demo bounds it: the blocking socket gets a watchdog timeout of ``HANG_S`` (a
``settimeout`` socket still blocks the caller), and a read that hits it counts as a hang.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo

REQUEST_BYTES = 100
CLIENTS = 2
HANG_S = 0.2
QUIET_S = 0.05
MAX_WAITS = 16

Reader = Callable[[socket.socket], int]
"""Handle one read event; return the bytes read. Raises TimeoutError when the watchdog fires."""


@dataclass(frozen=True)
class Setup:
    edge_triggered: bool
    blocking: bool
    read: Reader


@dataclass(frozen=True)
class Counts:
    clients: int
    events_handled: int
    hangs: int
    """Reads that would have blocked the loop forever (stopped by the watchdog)."""


def read_until_eagain(sock: socket.socket) -> int:
    """Right for ET on a non-blocking socket; hangs on a blocking one (the tutorial's)."""
    total = 0
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return total
        if not data:
            return total
        total += len(data)


def read_once(sock: socket.socket) -> int:
    return len(sock.recv(4096))


def measure(setup: Setup) -> Counts:
    with contextlib.ExitStack() as stack:
        ep = stack.enter_context(select.epoll())
        servers: dict[int, socket.socket] = {}
        for _ in range(CLIENTS):
            client, server = (stack.enter_context(s) for s in socket.socketpair())
            if setup.blocking:
                server.settimeout(HANG_S)  # blocking for the handler, bounded for the demo
            else:
                server.setblocking(False)
            mode = select.EPOLLET if setup.edge_triggered else 0
            ep.register(server.fileno(), select.EPOLLIN | mode)
            servers[server.fileno()] = server
            client.sendall(b"q" * REQUEST_BYTES)  # then waits for the reply: never sends again
        handled = hangs = 0
        for _ in range(MAX_WAITS):
            events = ep.poll(QUIET_S)
            if not events:
                break
            for fd, _ in events:
                handled += 1
                try:
                    setup.read(servers[fd])
                except TimeoutError:
                    hangs += 1
        return Counts(CLIENTS, handled, hangs)


def shows_bug(counts: Counts) -> bool:
    """A read blocked the loop."""
    return counts.hangs > 0


DEMO = Demo(
    name="et-blocking",
    summary="ET with blocking sockets: reading until EAGAIN blocks the whole loop",
    did=(
        f"{CLIENTS} socket pairs; each client sends a {REQUEST_BYTES}-byte request and waits; "
        "the server ends are registered with epoll and read until EAGAIN (blocking sockets "
        f"get a {HANG_S * 1000:.0f} ms watchdog: a read that reaches it counts as a hang)"
    ),
    why=(
        "edge-triggered epoll requires reading until EAGAIN, and a blocking socket never "
        "returns EAGAIN: after the request is read, the next recv waits for bytes the client "
        "will not send before it has its reply, and the single-threaded loop serves no one "
        "else meanwhile. Make every socket non-blocking (socket.setblocking(False), "
        "O_NONBLOCK). LT with one read per event does not hang, because it reads only when "
        "data is known to be there."
    ),
    man='epoll(7), "Level-triggered and edge-triggered" (the suggested use of EPOLLET, item i)',
    naive=Case("ET, blocking sockets, read until EAGAIN", Setup(True, True, read_until_eagain)),
    fixed=(
        Case("ET, non-blocking sockets, read until EAGAIN", Setup(True, False, read_until_eagain)),
        Case("LT, blocking sockets, one recv per event", Setup(False, True, read_once)),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

"""``stale-event``: an event for a descriptor closed earlier in the same batch.

``epoll_wait`` returns a batch. Handling one event may close another connection whose
event is later in the same batch, and a connection opened meanwhile takes the lowest free
descriptor number: the one just closed. The stale event then carries a number that now
names a different, healthy connection. ``epoll(7)``, "Possible pitfalls and ways to avoid
them": with stored events, "make sure to provide a way to mark its closure dynamically
(i.e., caused by a previous event's processing)". Here the stale event is a hang-up, and
the naive loop closes the new connection for it.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.demos.base import Case, Demo

QUIET_S = 0.05
GONE = select.EPOLLHUP | select.EPOLLERR | select.EPOLLRDHUP


@dataclass
class Loop:
    """The server's state: its connections by descriptor number, and, per batch, the
    numbers it closed while handling that batch."""

    ep: select.epoll
    stack: contextlib.ExitStack
    conns: dict[int, tuple[str, socket.socket]] = field(default_factory=dict)
    clients: dict[str, socket.socket] = field(default_factory=dict)
    closed_in_batch: set[int] = field(default_factory=set)
    wrongly_closed: list[str] = field(default_factory=list)

    def open(self, name: str, number: int | None = None) -> int:
        """Open a connection; with ``number``, give its server end that descriptor number
        (``dup2(2)``), as "the lowest free number" would in a process without holes in
        its descriptor table; a test process has holes, so the demo makes it certain."""
        server, client = socket.socketpair()
        if number is not None and server.fileno() != number:
            os.dup2(server.fileno(), number)
            server.close()
            server = socket.socket(fileno=number)
        self.stack.enter_context(server)
        self.stack.enter_context(client)
        client.sendall(f"hello from {name}".encode())  # a healthy client with a request
        self.clients[name] = client
        server.setblocking(False)
        self.ep.register(server.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
        self.conns[server.fileno()] = (name, server)
        return server.fileno()

    def close(self, fd: int) -> None:
        _, sock = self.conns.pop(fd)
        self.ep.unregister(fd)
        sock.close()
        self.closed_in_batch.add(fd)


Handler = Callable[[Loop, int, int], None]


def handle(loop: Loop, fd: int, events: int) -> None:
    """Deliberately wrong: trusts that the number in the event still names its connection."""
    name, sock = loop.conns[fd]
    if name == "a":  # A's request ends session B and starts a new one, C
        sock.recv(4096)
        b_fd = next(n for n, (other, _) in loop.conns.items() if other == "b")
        loop.close(b_fd)
        loop.open("c", b_fd)
    elif events & GONE:
        if name != "b":
            loop.wrongly_closed.append(name)
        loop.close(fd)


def handle_skipping_stale(loop: Loop, fd: int, events: int) -> None:
    if fd in loop.closed_in_batch:
        return  # the connection this event was about is gone; the number may be reused
    handle(loop, fd, events)


@dataclass(frozen=True)
class Counts:
    batch: str
    healthy_connections_closed: int


def measure(handler: Handler) -> Counts:
    with contextlib.ExitStack() as stack:
        loop = Loop(stack.enter_context(select.epoll()), stack)
        a_fd = loop.open("a")
        loop.open("b")
        loop.clients["b"].close()  # B's client hangs up: its event is queued after A's
        batch = loop.ep.poll(QUIET_S)
        loop.closed_in_batch.clear()
        for fd, events in batch:
            if fd in loop.conns or fd in loop.closed_in_batch:
                handler(loop, fd, events)
        names = ", ".join("a" if fd == a_fd else "b" for fd, _ in batch)
        return Counts(names, len(loop.wrongly_closed))


def shows_bug(counts: Counts) -> bool:
    """A healthy connection was closed for another connection's hang-up."""
    return counts.healthy_connections_closed > 0


DEMO = Demo(
    name="stale-event",
    summary="an event for a descriptor closed earlier in its batch hits the number's next owner",
    did=(
        "two socket-pair connections A and B; A's client sends a request, B's client hangs "
        "up; one wait returns both events, A's first; handling A closes B and opens a new "
        "connection C, which gets B's descriptor number (the lowest free one in a process "
        "without holes; dup2 makes it certain here); then B's hang-up event is handled"
    ),
    why=(
        "the events of one epoll_wait were ready when it returned; closing a descriptor "
        "while handling the batch does not remove its event from the array, and a descriptor "
        "number is reused as soon as it is free (open(2): the lowest-numbered unused "
        "descriptor). The naive loop looks the number up and closes C for B's hang-up. Keep "
        "the numbers closed while handling a batch (or a generation per connection, or "
        "epoll_data.ptr to a record marked dead) and skip their events."
    ),
    man='epoll(7), "Possible pitfalls and ways to avoid them"; open(2), "file descriptor"',
    naive=Case("look up the number, act on the event", handle),
    fixed=(Case("skip events for numbers closed in this batch", handle_skipping_stale),),
    measure=measure,
    shows_bug=shows_bug,
)

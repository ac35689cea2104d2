"""Reference solution: the seed's epoll echo server with every bug fixed.

Usage: python solution.py [--host 127.0.0.1] [--port 8888] [--backend epoll|poll]

It is also the reference for the second task: the same loop behind a four-method
interface (``register``, ``modify``, ``unregister``, ``wait``), with edge-triggered epoll
or level-triggered poll(2) behind it, as CPython's selectors module does.

What changed, by the bug numbers of seed_server_annotated.py:

1. Every socket is non-blocking; output goes to a per-connection buffer, sent with
   ``send`` until EAGAIN, the rest when EPOLLOUT reports room (``send(2)``).
2. The listener is accepted until EAGAIN (``epoll(7)``: wait only after EAGAIN).
3. Reads continue until EAGAIN, end of file or the per-event budget (below).
4. and 6. Events are tested by bit: IN, RDHUP, HUP and ERR all mean "read, and find out"
   (``epoll_ctl(2)``); a reset shows up as ConnectionResetError from ``recv`` or ``send``.
5. One ``Connection`` record per descriptor, removed when the connection closes.

Interest follows state, in one place (``update_interest``): read while the connection is
not paused and its end of file not yet read, write while output is queued. Under LT this
is what stops a paused or finished connection from being reported on every wait.

Two limits keep one client from holding the loop. A connection's queued output above
``MAX_OUTBOX_BYTES`` stops reading from it until the client reads (backpressure: a client
that never reads cannot make the server buffer without bound). One event reads at most
``READ_BUDGET_BYTES``; a connection that still has input is kept on a run queue and served
again after the others, with a zero wait timeout, because ET will not report it again.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

READ_BYTES = 65536
READ_BUDGET_BYTES = 256 * 1024
MAX_OUTBOX_BYTES = 1 << 20
ACCEPT_BACKLOG = 1024
# poll(2) and epoll share these bit values (POLLIN == EPOLLIN, ...).
IN = select.EPOLLIN | select.EPOLLRDHUP
OUT = select.EPOLLOUT
# A reason to read: data, end of file, half-close, hang-up, error (epoll_ctl(2)).
READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR


class Backend(Protocol):
    """How interest is registered and waited for; everything else is the server's."""

    def register(self, fd: int, events: int) -> None: ...
    def modify(self, fd: int, events: int) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def wait(self, timeout_s: float | None) -> list[tuple[int, int]]: ...


class EpollBackend:
    """Edge-triggered epoll: each call adds EPOLLET."""

    def __init__(self) -> None:
        self.epoll = select.epoll()

    def register(self, fd: int, events: int) -> None:
        self.epoll.register(fd, events | select.EPOLLET)

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events | select.EPOLLET)

    def unregister(self, fd: int) -> None:
        self.epoll.unregister(fd)

    def wait(self, timeout_s: float | None) -> list[tuple[int, int]]:
        return self.epoll.poll(-1 if timeout_s is None else timeout_s)


class PollBackend:
    """Level-triggered poll(2): the same calls, the interest kept in user space."""

    def __init__(self) -> None:
        self.poller = select.poll()

    def register(self, fd: int, events: int) -> None:
        self.poller.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.poller.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self.poller.unregister(fd)

    def wait(self, timeout_s: float | None) -> list[tuple[int, int]]:
        return self.poller.poll(None if timeout_s is None else timeout_s * 1000)


BACKENDS: dict[str, type[EpollBackend] | type[PollBackend]] = {
    "epoll": EpollBackend,
    "poll": PollBackend,
}


@dataclass
class Connection:
    sock: socket.socket
    outbox: bytearray = field(default_factory=bytearray)
    peer_done: bool = False  # end of file read: close once the outbox is sent
    interest: int = IN


class EchoServer:
    def __init__(self, listener: socket.socket, backend: Backend) -> None:
        self.listener = listener
        self.backend = backend
        self.backend.register(listener.fileno(), select.EPOLLIN)
        self.connections: dict[int, Connection] = {}
        # Connections with input left after their budget, or whose reading resumed: ET
        # will not report them again, so the loop serves them itself, after the others.
        self.runnable: deque[int] = deque()

    def serve_forever(self) -> None:
        while True:
            timeout = 0.0 if self.runnable else None
            for fd, events in self.backend.wait(timeout):
                if fd == self.listener.fileno():
                    self.accept_all()
                elif fd in self.connections:  # a connection closed earlier in this batch
                    self.on_event(fd, events)
            for _ in range(len(self.runnable)):
                fd = self.runnable.popleft()
                if fd in self.connections:
                    self.read(fd)

    def accept_all(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:
                return  # EMFILE and friends: the next arrival reports the listener again
            sock.setblocking(False)
            fd = sock.fileno()
            self.backend.register(fd, IN)
            self.connections[fd] = Connection(sock)

    def on_event(self, fd: int, events: int) -> None:
        if events & select.EPOLLOUT:
            self.flush(fd)
        if fd in self.connections and events & READABLE:
            self.read(fd)

    def read(self, fd: int) -> None:
        conn = self.connections[fd]
        budget = READ_BUDGET_BYTES
        while budget > 0 and len(conn.outbox) < MAX_OUTBOX_BYTES and not conn.peer_done:
            try:
                data = conn.sock.recv(READ_BYTES)
            except BlockingIOError:
                break
            except OSError:
                self.close(fd)
                return
            if not data:
                conn.peer_done = True
                break
            conn.outbox += data
            budget -= len(data)
        else:
            if budget <= 0 and not conn.peer_done and len(conn.outbox) < MAX_OUTBOX_BYTES:
                self.runnable.append(fd)
        self.flush(fd)

    def flush(self, fd: int) -> None:
        conn = self.connections[fd]
        was_full = len(conn.outbox) >= MAX_OUTBOX_BYTES
        while conn.outbox:
            try:
                sent = conn.sock.send(conn.outbox)
            except BlockingIOError:
                break
            except OSError:
                self.close(fd)
                return
            del conn.outbox[:sent]
        if conn.peer_done and not conn.outbox:
            self.close(fd)
            return
        self.update_interest(fd, conn)
        if was_full and len(conn.outbox) < MAX_OUTBOX_BYTES:
            self.runnable.append(fd)  # reading stopped at the bound; ET will not re-report

    def update_interest(self, fd: int, conn: Connection) -> None:
        """The one place interest changes."""
        reading = not conn.peer_done and len(conn.outbox) < MAX_OUTBOX_BYTES
        wanted = (IN if reading else 0) | (OUT if conn.outbox else 0)
        if wanted != conn.interest:
            self.backend.modify(fd, wanted)
            conn.interest = wanted

    def close(self, fd: int) -> None:
        conn = self.connections.pop(fd)
        self.backend.unregister(fd)
        conn.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="epoll echo server (reference solution)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--backend", choices=list(BACKENDS), default="epoll")
    args = parser.parse_args()
    listener = socket.create_server((args.host, args.port), backlog=ACCEPT_BACKLOG)
    listener.setblocking(False)
    with contextlib.suppress(KeyboardInterrupt):
        EchoServer(listener, BACKENDS[args.backend]()).serve_forever()


if __name__ == "__main__":
    main()

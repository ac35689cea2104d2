"""``exact-event-compare``: a handler that tests ``events == EPOLLIN``.

``events`` is a bit mask. A peer that sends its last request and closes makes the socket
readable *and* hung up at once: ``EPOLLIN|EPOLLRDHUP`` after a half-close,
``EPOLLIN|EPOLLHUP|EPOLLRDHUP`` after a full close. An equality test misses both, never
reads the end of file, never closes, and the descriptor leaks.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo
from lab.events import event_names

QUIET_S = 0.05
MAX_WAITS = 16
READ_BYTES = 4096
# The reasons a socket is worth reading: data, end of file, reset (epoll_ctl(2)).
READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR

Handler = Callable[[socket.socket, int], bool]
"""Handle one reported event; return True when the peer is gone and the socket can close."""


@dataclass(frozen=True)
class Counts:
    peers: int
    peers_gone: int
    closed_by_server: int
    events_seen: str


def read_until_eof_or_eagain(sock: socket.socket) -> bool:
    while True:
        try:
            data = sock.recv(READ_BYTES)
        except BlockingIOError:
            return False
        except ConnectionError:
            return True
        if not data:
            return True


def handle_if_equal(sock: socket.socket, events: int) -> bool:
    """Deliberately wrong: compares the whole mask, so IN combined with any other bit is lost."""
    if events == select.EPOLLIN:
        return read_until_eof_or_eagain(sock)
    return False


def handle_if_bit_set(sock: socket.socket, events: int) -> bool:
    if events & READABLE:
        return read_until_eof_or_eagain(sock)
    return False


def measure(handle: Handler) -> Counts:
    with contextlib.ExitStack() as stack:
        ep = stack.enter_context(select.epoll())
        servers: dict[int, socket.socket] = {}
        # Three clients send a request; one stays, one half-closes, one closes.
        for ending in ("stay", "shutdown", "close"):
            client, server = socket.socketpair()
            stack.enter_context(client)
            stack.enter_context(server)
            client.sendall(b"request")
            if ending == "shutdown":
                client.shutdown(socket.SHUT_WR)
            elif ending == "close":
                client.close()
            server.setblocking(False)
            ep.register(server.fileno(), select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
            servers[server.fileno()] = server
        seen: list[str] = []
        closed = 0
        for _ in range(MAX_WAITS):
            events = ep.poll(QUIET_S)
            if not events:
                break
            for fd, mask in events:
                seen.append(event_names(mask))
                if handle(servers[fd], mask):
                    ep.unregister(fd)
                    servers.pop(fd).close()
                    closed += 1
        return Counts(3, 2, closed, ", ".join(sorted(seen)))


def shows_bug(counts: Counts) -> bool:
    """A peer went away but the server kept its socket open: a leaked descriptor."""
    return counts.closed_by_server < counts.peers_gone


DEMO = Demo(
    name="exact-event-compare",
    summary="events == EPOLLIN misses IN|RDHUP and IN|HUP and leaks the connection",
    did=(
        "three socket pairs; each client sends a request, then one stays open, one shuts "
        "down its sending side, one closes; the server ends are registered with "
        "EPOLLIN|EPOLLRDHUP|EPOLLET and handled once per reported event until a wait "
        f"reports nothing for {QUIET_S * 1000:.0f} ms; sockets whose peer is gone should "
        "be closed"
    ),
    why=(
        "the events word is a bit mask and the kernel sets every bit that applies: a peer "
        "that sent data and shut down its side gives EPOLLIN together with EPOLLRDHUP, and "
        "EPOLLHUP too once both directions are shut (a socket pair whose peer closed, a TCP "
        "reset); EPOLLHUP and EPOLLERR are reported even when not requested. "
        "'events == EPOLLIN' is false for those, so the request and the end of file are "
        "never read and the socket is never closed. Test bits: 'events & (EPOLLIN | "
        "EPOLLRDHUP | EPOLLHUP | EPOLLERR)'."
    ),
    man="epoll_ctl(2), EPOLLRDHUP, EPOLLHUP and EPOLLERR; poll(2), POLLHUP",
    naive=Case("events == EPOLLIN", handle_if_equal),
    fixed=(Case("events & (IN|RDHUP|HUP|ERR)", handle_if_bit_set),),
    measure=measure,
    shows_bug=shows_bug,
)

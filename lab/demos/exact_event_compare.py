"""``exact-event-compare``: a handler that tests ``events == EPOLLIN``.

``events`` is a bit mask, and which bits a closing peer sets depends on the transport, on
how the peer ended and on what was registered. Measured on Linux 6.18 with the peer's
request still unread (``muxlab demo exact-event-compare`` prints them for this kernel):

======================  ==================  ==================
peer                    ``EPOLLIN|EPOLLET``  ``... |EPOLLRDHUP``
======================  ==================  ==================
TCP, ``close()``        ``IN``              ``IN|RDHUP``
TCP, reset (linger 0)   ``IN|ERR|HUP``      ``IN|ERR|HUP|RDHUP``
socket pair, close      ``IN|HUP``          ``IN|HUP|RDHUP``
======================  ==================  ==================

So the classic tutorial's registration (``EPOLLIN|EPOLLET``) with ``events == EPOLLIN``
does see a normal TCP close (plain ``IN``; reading returns end of file), and misses a
reset, a closed socket pair, and every close once ``EPOLLRDHUP`` is registered. A missed
end is never read, the socket never closed, and the descriptor leaks.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo
from lab.events import event_names

QUIET_S = 0.05
MAX_WAITS = 16
READ_BYTES = 4096
# The reasons a socket is worth reading: data, end of file, reset (epoll_ctl(2)).
READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
# SO_LINGER on with a zero timeout: close() sends RST instead of FIN (socket(7), tcp(7)).
LINGER_RESET = struct.pack("ii", 1, 0)

Handler = Callable[[socket.socket, int], bool]
"""Handle one reported event; return True when the peer is gone and the socket can close."""


@dataclass(frozen=True)
class Peer:
    """One client: its transport, how it ends after sending, what the server registered."""

    transport: str  # "tcp" or "pair" (AF_UNIX socketpair)
    ending: str  # "stay", "close" or "reset"
    rdhup: bool

    @property
    def label(self) -> str:
        return f"{self.transport} {self.ending}{' +RDHUP' if self.rdhup else ''}"


PEERS = (
    Peer("tcp", "stay", False),
    Peer("tcp", "close", False),
    Peer("tcp", "reset", False),
    Peer("pair", "close", False),
    Peer("tcp", "close", True),
)


@dataclass(frozen=True)
class Counts:
    peers: int
    peers_gone: int
    closed_by_server: int
    events_seen: str
    """Per peer, ``label: mask`` of the first event the server saw."""
    missed: str
    """The peers that were gone but whose socket the server kept open."""


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


def connected_pair(transport: str, stack: contextlib.ExitStack) -> tuple[socket.socket, ...]:
    if transport == "pair":
        pair = socket.socketpair()
    else:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname(), timeout=5)
            pair = (client, listener.accept()[0])
    return tuple(stack.enter_context(s) for s in pair)


def end(client: socket.socket, ending: str) -> None:
    if ending == "reset":
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    if ending != "stay":
        client.close()


def measure(handle: Handler) -> Counts:
    with contextlib.ExitStack() as stack:
        ep = stack.enter_context(select.epoll())
        servers: dict[int, tuple[Peer, socket.socket]] = {}
        for peer in PEERS:
            client, server = connected_pair(peer.transport, stack)
            client.sendall(b"request")  # the client is blocking: sendall is its API
            end(client, peer.ending)
            server.setblocking(False)
            flags = select.EPOLLIN | select.EPOLLET | (select.EPOLLRDHUP if peer.rdhup else 0)
            ep.register(server.fileno(), flags)
            servers[server.fileno()] = (peer, server)
        first: dict[str, str] = {}
        closed = 0
        for _ in range(MAX_WAITS):
            events = ep.poll(QUIET_S)
            if not events:
                break
            for fd, mask in events:
                peer, server = servers[fd]
                first.setdefault(peer.label, event_names(mask))
                if handle(server, mask):
                    ep.unregister(fd)
                    servers.pop(fd)[1].close()
                    closed += 1
        gone = [p for p in PEERS if p.ending != "stay"]
        missed = [peer.label for peer, _ in servers.values() if peer.ending != "stay"]
        seen = "; ".join(f"{p.label}: {first.get(p.label, '-')}" for p in PEERS)
        return Counts(len(PEERS), len(gone), closed, seen, "; ".join(missed) or "none")


def shows_bug(counts: Counts) -> bool:
    """A peer went away but the server kept its socket open: a leaked descriptor."""
    return counts.closed_by_server < counts.peers_gone


DEMO = Demo(
    name="exact-event-compare",
    summary="events == EPOLLIN misses a TCP reset, a closed socket pair and IN|RDHUP",
    did=(
        "five clients each send a request; one TCP client stays, one closes normally, one "
        "resets (SO_LINGER 0), one socket-pair client closes (all four registered as the "
        "classic tutorial does, EPOLLIN|EPOLLET), and one TCP client closes with the server "
        "end registered EPOLLIN|EPOLLRDHUP|EPOLLET; the server handles each reported event "
        f"until a wait reports nothing for {QUIET_S * 1000:.0f} ms; sockets whose peer is "
        "gone should be closed"
    ),
    why=(
        "the events word is a bit mask and the kernel sets every bit that applies. A normal "
        "TCP close is plain EPOLLIN unless EPOLLRDHUP was registered (then IN|RDHUP): the "
        "end of file is data to read. A reset adds EPOLLERR|EPOLLHUP, and a socket pair "
        "whose peer closed adds EPOLLHUP, both reported even when not requested. "
        "'events == EPOLLIN' is false for all but the plain close, so those requests and "
        "ends are never read and the sockets never closed. Test bits: 'events & (EPOLLIN | "
        "EPOLLRDHUP | EPOLLHUP | EPOLLERR)'."
    ),
    man="epoll_ctl(2), EPOLLRDHUP, EPOLLHUP and EPOLLERR; poll(2), POLLHUP; socket(7), SO_LINGER",
    naive=Case("events == EPOLLIN", handle_if_equal),
    fixed=(Case("events & (IN|RDHUP|HUP|ERR)", handle_if_bit_set),),
    measure=measure,
    shows_bug=shows_bug,
)

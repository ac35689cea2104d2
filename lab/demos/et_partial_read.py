"""``et-partial-read``: the tutorial ET echo handler, one fixed-size read per event.

The client sends a 3000-byte request and, like any request/response client, sends the
next one only after the whole reply came back. A naive ET handler reads 1024 bytes per
event, so after the first event nothing is reported again and the client waits forever
(here: until the server has been quiet for ``QUIET_S``).
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo, send_until_eagain, unread_bytes

MESSAGE_BYTES = 3000
READ_BYTES = 1024
MESSAGES = 3
QUIET_S = 0.1
MAX_WAITS = 32

Handler = Callable[[socket.socket], bytes]
"""Read what one reported event allows; return the bytes read, to be echoed."""


@dataclass(frozen=True)
class Setup:
    edge_triggered: bool
    handle: Handler


@dataclass(frozen=True)
class Counts:
    messages_sent: int
    messages_answered: int
    bytes_echoed: int
    bytes_left_unread: int


def read_once(sock: socket.socket) -> bytes:
    """Deliberately wrong under ET: one ``recv`` per event, as in the classic tutorial."""
    return sock.recv(READ_BYTES)


def read_until_eagain(sock: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        try:
            data = sock.recv(READ_BYTES)
        except BlockingIOError:
            return bytes(buf)
        if not data:
            return bytes(buf)
        buf += data


def serve_until_quiet(ep: select.epoll, sock: socket.socket, setup: Setup) -> None:
    """Echo through an output buffer: the socket is non-blocking, so ``send`` may take part
    of it (``send(2)``, EAGAIN); what is left waits for EPOLLOUT, never for ``sendall``."""
    outbox = bytearray()
    mode = select.EPOLLET if setup.edge_triggered else 0
    interest = select.EPOLLIN | mode
    for _ in range(MAX_WAITS):
        events = ep.poll(QUIET_S)
        if not events:
            return
        if events[0][1] & select.EPOLLIN:
            outbox += setup.handle(sock)
        send_until_eagain(sock, outbox)
        wanted = select.EPOLLIN | (select.EPOLLOUT if outbox else 0) | mode
        # Only on a change: EPOLL_CTL_MOD re-checks readiness and would queue a fresh ET
        # event for the unread bytes, hiding the bug this demo shows.
        if wanted != interest:
            ep.modify(sock.fileno(), wanted)
            interest = wanted


def recv_available(sock: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        try:
            chunk = sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return bytes(buf)
        if not chunk:
            return bytes(buf)
        buf += chunk


def measure(setup: Setup) -> Counts:
    client, server = socket.socketpair()
    with client, server, select.epoll() as ep:
        server.setblocking(False)
        mode = select.EPOLLET if setup.edge_triggered else 0
        ep.register(server.fileno(), select.EPOLLIN | mode)
        sent = answered = echoed = 0
        for _ in range(MESSAGES):
            client.sendall(b"r" * MESSAGE_BYTES)  # the client is blocking
            sent += 1
            serve_until_quiet(ep, server, setup)
            reply = recv_available(client)
            echoed += len(reply)
            if len(reply) < MESSAGE_BYTES:
                break  # the client still waits for the rest: it will never send again
            answered += 1
        return Counts(sent, answered, echoed, unread_bytes(server.fileno()))


def shows_bug(counts: Counts) -> bool:
    """A request went unanswered: the server stopped hearing about bytes it never read."""
    return counts.messages_answered < counts.messages_sent


DEMO = Demo(
    name="et-partial-read",
    summary="ET handler with one 1 KiB read per event strands the rest of a 3000-byte request",
    did=(
        f"a socket pair; the client sends up to {MESSAGES} requests of {MESSAGE_BYTES} bytes, "
        "each only after the previous reply is complete; the server echoes with one handler "
        f"call per reported event, {READ_BYTES} bytes per recv; a reply still incomplete "
        f"after the server has been quiet for {QUIET_S * 1000:.0f} ms counts as a hang"
    ),
    why=(
        "edge-triggered epoll reports the socket when new data arrives (arrivals before the "
        "next wait merge into one event); the naive handler reads 1024 bytes and returns, "
        "and no more data arrives, so the remaining bytes are never reported and the "
        "client waits for a reply that never completes. The same handler under LT is "
        "called again while data remains; the ET handler that reads until EAGAIN drains it."
    ),
    man=(
        'epoll(7), "Level-triggered and edge-triggered" (suggested ET use: non-blocking '
        'descriptors, wait only after EAGAIN) and "Questions and answers" (until EAGAIN)'
    ),
    naive=Case("ET, one recv(1024) per event", Setup(True, read_once)),
    fixed=(
        Case("LT, one recv(1024) per event", Setup(False, read_once)),
        Case("ET, recv until EAGAIN", Setup(True, read_until_eagain)),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

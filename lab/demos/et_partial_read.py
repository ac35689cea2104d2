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

from lab.demos.base import Case, Demo, unread_bytes

MESSAGE_BYTES = 3000
READ_BYTES = 1024
MESSAGES = 3
QUIET_S = 0.1
MAX_WAITS = 32

Handler = Callable[[socket.socket], None]


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


def echo_one_read(sock: socket.socket) -> None:
    """Deliberately wrong under ET: one ``recv`` per event, as in the classic tutorial."""
    data = sock.recv(READ_BYTES)
    if data:
        sock.sendall(data)


def echo_until_eagain(sock: socket.socket) -> None:
    while True:
        try:
            data = sock.recv(READ_BYTES)
        except BlockingIOError:
            return
        if not data:
            return
        sock.sendall(data)


def serve_until_quiet(ep: select.epoll, sock: socket.socket, handle: Handler) -> None:
    for _ in range(MAX_WAITS):
        if not ep.poll(QUIET_S):
            return
        handle(sock)


def recv_available(sock: socket.socket) -> bytes:
    buf = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            return bytes(buf)
        if not chunk:
            return bytes(buf)
        buf += chunk


def measure(setup: Setup) -> Counts:
    client, server = socket.socketpair()
    with client, server, select.epoll() as ep:
        client.setblocking(False)
        server.setblocking(False)
        mode = select.EPOLLET if setup.edge_triggered else 0
        ep.register(server.fileno(), select.EPOLLIN | mode)
        sent = answered = echoed = 0
        for _ in range(MESSAGES):
            client.sendall(b"r" * MESSAGE_BYTES)
            sent += 1
            serve_until_quiet(ep, server, setup.handle)
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
        "edge-triggered epoll reports the socket when data arrives, once; the naive handler "
        "reads 1024 bytes and returns, so the remaining bytes are never reported and the "
        "client waits for a reply that never completes. The same handler under LT is "
        "called again while data remains; the ET handler that reads until EAGAIN drains it."
    ),
    man=(
        'epoll(7), "Level-triggered and edge-triggered" (suggested ET use: non-blocking '
        'descriptors, wait only after EAGAIN) and "Questions and answers" (until EAGAIN)'
    ),
    naive=Case("ET, one recv(1024) per event", Setup(True, echo_one_read)),
    fixed=(
        Case("LT, one recv(1024) per event", Setup(False, echo_one_read)),
        Case("ET, recv until EAGAIN", Setup(True, echo_until_eagain)),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

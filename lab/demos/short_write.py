"""``short-write``: a non-blocking ``send`` takes only what fits in the send buffer.

``send(2)`` on a non-blocking socket copies what fits in the kernel's send buffer and
returns that count; the rest is the caller's to keep and send when EPOLLOUT reports room.
A handler that sends a large reply once and ignores the count silently truncates it.
(``sendall`` is no fix on a non-blocking socket: it raises BlockingIOError after sending
an unknown part.)
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo, send_until_eagain

REPLY_BYTES = 4 << 20
QUIET_S = 0.1
MAX_WAITS = 4096

Sender = Callable[[socket.socket, bytearray], int]
"""Start sending ``outbox`` on a non-blocking socket; leave in it what is still to send;
return the bytes the kernel took."""


@dataclass(frozen=True)
class Counts:
    reply_bytes: int
    bytes_received: int
    first_send_bytes: int
    """What the kernel took before the first EAGAIN: the send buffer's room."""


def send_once(sock: socket.socket, outbox: bytearray) -> int:
    """Deliberately wrong: one send, as if it took everything; the buffer is dropped."""
    sent = sock.send(outbox)
    outbox.clear()
    return sent


def send_and_keep_the_rest(sock: socket.socket, outbox: bytearray) -> int:
    return send_until_eagain(sock, outbox)


def measure(start_send: Sender) -> Counts:
    client, server = socket.socketpair()
    with client, server, select.epoll() as ep:
        server.setblocking(False)
        client.setblocking(False)
        outbox = bytearray(b"r" * REPLY_BYTES)
        first = start_send(server, outbox)
        ep.register(server.fileno(), select.EPOLLOUT)
        received = 0
        for _ in range(MAX_WAITS):  # the client reads while the server sends the rest
            received += read_available(client)
            if not outbox or not ep.poll(QUIET_S):
                break
            send_until_eagain(server, outbox)
        # A socket pair delivers at send time: what was sent is queued for the client now.
        received += read_available(client)
    return Counts(REPLY_BYTES, received, first)


def read_available(sock: socket.socket) -> int:
    total = 0
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return total
        if not chunk:
            return total
        total += len(chunk)


def shows_bug(counts: Counts) -> bool:
    """The client got less than the reply."""
    return counts.bytes_received < counts.reply_bytes


DEMO = Demo(
    name="short-write",
    summary="a non-blocking send takes part of a 4 MiB reply; ignoring the count truncates it",
    did=(
        f"a socket pair, both ends non-blocking; the server sends a {REPLY_BYTES >> 20} MiB "
        "reply with the handler under test, then keeps whatever the handler left queued, "
        "sending it on EPOLLOUT while the client reads; the bytes the client receives are "
        "counted"
    ),
    why=(
        "a non-blocking send copies what fits in the socket's send buffer (first_send_bytes) "
        "and returns that count; the handler that ignores it loses the rest. Keep the unsent "
        "bytes per connection, ask for EPOLLOUT while any are left, and send them when it "
        "comes (servers/loop.py does, with sendmsg)."
    ),
    man="send(2), RETURN VALUE and EAGAIN; epoll_ctl(2), EPOLLOUT; socket(7), SO_SNDBUF",
    naive=Case("one send, count ignored", send_once),
    fixed=(Case("send until EAGAIN, the rest on EPOLLOUT", send_and_keep_the_rest),),
    measure=measure,
    shows_bug=shows_bug,
)

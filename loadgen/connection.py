"""One active connection of a worker: the socket and what is owed on it.

Shared by the worker (which opens, reopens and closes connections) and the protocol
clients (which frame and verify the replies); neither owns the other's fields.
"""

from __future__ import annotations

import socket
from collections import deque


class Conn:
    """One active connection; ``sent`` holds send times of requests still unanswered."""

    __slots__ = (
        "backlog",
        "cid",
        "connecting",
        "expect",
        "fd",
        "framer",
        "got",
        "intended",
        "out",
        "out_pos",
        "owed",
        "owed_pos",
        "partial",
        "recv",
        "replies",
        "send",
        "sent",
        "seq",
        "sock",
    )

    def __init__(self, sock: socket.socket, cid: int) -> None:
        self.cid = cid
        # What one recv must return to settle everything owed: one == accepts it. None
        # when nothing is owed (so an EOF's b"" never matches) or when only the slow path
        # can tell (a reply partly received).
        self.expect: bytes | None = None
        # Echo: the bytes owed, as sent (one chunk per send), from owed_pos in the first.
        # A partial reply only moves owed_pos and big messages are never concatenated, so
        # a 16 MiB message read 64 KiB at a time is not copied per read.
        self.owed: deque[bytes] = deque()
        self.owed_pos = 0
        self.sent: deque[int] = deque()
        self.intended: deque[int] = deque()  # open loop: when each request was due
        self.backlog: deque[int] = deque()  # open loop: due slots not yet sent
        self.seq = 0
        self.got = 0  # echo: bytes of the first outstanding message already received
        self.out: deque[bytes] = deque()  # not yet taken by the kernel, from out_pos
        self.out_pos = 0
        self.attach(sock)

    def attach(self, sock: socket.socket, connecting: bool = False) -> None:
        """Use ``sock`` from now on (a new connection, or one reopened after a close)."""
        self.sock = sock
        self.fd = sock.fileno()
        self.recv = sock.recv
        self.send = sock.send
        self.connecting = connecting  # a non-blocking connect(2) not yet confirmed
        self.replies = 0  # complete replies received on this socket
        self.partial = False  # http: part of a reply received, the rest still to come
        self.framer: object | None = None  # http: this socket's reply parser state

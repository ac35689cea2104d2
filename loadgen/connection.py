"""Opening a connection, and one active connection of a worker: the socket and what is owed.

:class:`Conn` is shared by the worker (which opens, reopens and closes connections) and the
protocol clients (which frame and verify the replies); neither owns the other's fields.

Source addresses. Every connection to one server address:port from one source address
needs its own local port from ``net.ipv4.ip_local_port_range`` (``ip(7)``; 28,232
ports by default). ``connect(2)`` picks it (``__inet_hash_connect`` in
net/ipv4/inet_hashtables.c) trying ports of one parity first, the other half only once
that parity is exhausted for this address pair, so past half the range every connect scans
the whole first half before it finds a port: with one source address the ramp's connect
rate collapses at half the range (measured in results/c20k/README.md). Spreading the
connections over several loopback source addresses (all of 127.0.0.0/8 is on ``lo``)
gives every address pair its own port space; ``IP_BIND_ADDRESS_NO_PORT`` binds the
address but leaves the port to ``connect(2)``, which may then reuse a port that another
address pair uses (a plain ``bind(2)`` to port 0 would reserve the port for every
destination).
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket
from collections import deque
from typing import Any

# linux/in.h; Python names it from 3.12 on.
IP_BIND_ADDRESS_NO_PORT: int = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
# Automatic spreading keeps each address pair under a quarter of the port range: half of
# the parity connect(2) tries first, which leaves room for anything else on this machine
# that connects to the same server from the same address.
PORT_RANGE_SHARE = 4
LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
# Automatic source addresses are 127.0.0.2, 127.0.0.3, ...: 127.0.0.1, the address the
# kernel picks by default, stays for everything else.
FIRST_AUTO_SOURCE = ipaddress.ip_address("127.0.0.2")


def connections_per_source(port_range: tuple[int, int]) -> int:
    """Connections automatic spreading puts on one source address."""
    low, high = port_range
    return max(1, (high - low + 1) // PORT_RANGE_SHARE)


def plan_sources(
    family: int,
    sockaddr: tuple[Any, ...],
    total_connections: int,
    port_range: tuple[int, int] | None,
) -> tuple[str, ...]:
    """Automatic source addresses: () (the kernel's choice) unless the server is on IPv4
    loopback and the connections would hold more than a share of the port range on one
    address pair; then as many loopback addresses from 127.0.0.2 on as keep each under it."""
    if family != socket.AF_INET or port_range is None:
        return ()
    if ipaddress.ip_address(sockaddr[0]) not in LOOPBACK_V4:
        return ()
    per_source = connections_per_source(port_range)
    if total_connections <= per_source:
        return ()
    count = math.ceil(total_connections / per_source)
    return tuple(str(FIRST_AUTO_SOURCE + i) for i in range(count))


def bind_source(sock: socket.socket, source: str) -> None:
    """Bind ``sock`` to ``source`` and leave its port to ``connect(2)``."""
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    sock.bind((source, 0))


def start_connect(family: int, sockaddr: tuple[Any, ...], source: str | None) -> socket.socket:
    """A non-blocking socket with its ``connect(2)`` started, from ``source`` if given.

    Raises :class:`OSError` (the socket closed) when the socket cannot be made, bound or
    connected; EINPROGRESS is the normal start of a non-blocking connect, not an error.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            bind_source(sock, source)
        err = sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, errno.errorcode.get(err, str(err)))
    except OSError:
        sock.close()
        raise
    return sock


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

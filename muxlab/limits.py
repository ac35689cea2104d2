"""Process limits every muxlab command that holds many sockets shares."""

from __future__ import annotations

import resource
import socket


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one and return it (``getrlimit(2)``).

    A shell's default soft limit (often 1024) would otherwise cap the connections a server
    or a load generator can hold, and poll and epoll would hit EMFILE where only select
    should stop. Children inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


SOMAXCONN_FILE = "/proc/sys/net/core/somaxconn"


def listen_backlog() -> int:
    """The largest ``listen(2)`` backlog the kernel grants: ``net.core.somaxconn``.

    ``listen(2)`` silently caps a larger backlog at this value, so asking for it is asking
    for the longest accept queue this machine allows, and raising the sysctl takes effect
    at the next start without a flag (Go's net package reads the same file). A connection
    that completes its handshake while the queue is full has its SYN or final ACK dropped
    (TcpExtListenOverflows) and waits out a retransmission, 1 s the first time
    (``tcp(7)``); results/c20k/README.md measures it. Without /proc: ``socket.SOMAXCONN``.
    """
    try:
        with open(SOMAXCONN_FILE) as f:
            return max(1, int(f.read()))
    except (OSError, ValueError):
        return socket.SOMAXCONN

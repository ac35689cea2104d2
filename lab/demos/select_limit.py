"""``select-limit``: a descriptor numbered past ``FD_SETSIZE``.

A server with about a thousand open connections gets descriptor numbers at or above
1024. ``select(2)`` cannot take them: its ``fd_set`` is a fixed bitmap of ``FD_SETSIZE``
bits. CPython refuses with a ``ValueError``; a C program that ignores the limit writes
past the bitmap. ``poll(2)`` and ``epoll(7)`` have no such ceiling.
"""

from __future__ import annotations

import fcntl
import resource
import select
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lab.demos.base import Case, Demo
from servers.backends import FD_SETSIZE

WAIT_S = 0.1

Waiter = Callable[[int], list[int]]
"""Wait up to ``WAIT_S`` for ``fd`` to be readable; return the readable descriptors."""


@dataclass(frozen=True)
class Counts:
    fd: int
    reported_readable: int
    error: str


def wait_with_select(fd: int) -> list[int]:
    readable, _, _ = select.select([fd], [], [], WAIT_S)
    return readable


def wait_with_poll(fd: int) -> list[int]:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return [ready for ready, _ in poller.poll(int(WAIT_S * 1000))]


def wait_with_epoll(fd: int) -> list[int]:
    with select.epoll() as ep:
        ep.register(fd, select.EPOLLIN)
        return [ready for ready, _ in ep.poll(WAIT_S)]


@contextmanager
def soft_fd_limit_above(minimum: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to ``minimum`` for the block, if the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= minimum or (hard != resource.RLIM_INFINITY and hard < minimum):
        yield
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (minimum, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def measure(wait: Waiter) -> Counts:
    peer, sock = socket.socketpair()
    with peer, sock, soft_fd_limit_above(FD_SETSIZE + 64):
        try:
            # The lowest free descriptor number >= FD_SETSIZE (fcntl(2), F_DUPFD).
            high_fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, FD_SETSIZE)
        except OSError as exc:
            return Counts(-1, 0, f"cannot get a descriptor >= {FD_SETSIZE}: {exc.strerror}")
        try:
            peer.send(b"x")
            return Counts(high_fd, len(wait(high_fd)), "none")
        except ValueError as exc:
            return Counts(high_fd, 0, f"ValueError: {exc}")
        finally:
            socket.close(high_fd)


def shows_bug(counts: Counts) -> bool:
    """The readable descriptor was not reported."""
    return counts.reported_readable == 0


DEMO = Demo(
    name="select-limit",
    summary=f"a descriptor >= FD_SETSIZE ({FD_SETSIZE}): select fails, poll and epoll serve it",
    did=(
        f"a socket pair; one end duplicated to the lowest free descriptor >= {FD_SETSIZE} "
        "(as a server with a thousand connections gets); one byte written to the other end; "
        f"then select, poll and epoll each wait up to {WAIT_S * 1000:.0f} ms for it"
    ),
    why=(
        f"select(2) takes fd_set bitmaps of FD_SETSIZE ({FD_SETSIZE}) bits and is undefined "
        "for a descriptor at or above it, so CPython refuses it; poll(2) takes an array of "
        "descriptor numbers and epoll keeps a kernel interest list, neither with a ceiling "
        "below RLIMIT_NOFILE."
    ),
    man="select(2), the WARNING in DESCRIPTION, and BUGS (glibc's FD_SETSIZE); poll(2); epoll(7)",
    naive=Case("select", wait_with_select),
    fixed=(Case("poll", wait_with_poll), Case("epoll", wait_with_epoll)),
    measure=measure,
    shows_bug=shows_bug,
)

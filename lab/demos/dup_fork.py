"""``dup-fork``: epoll watches open file descriptions, not descriptor numbers.

``epoll(7)``, Questions and answers, Q6: closing a descriptor removes it from every
interest list only when it was the last descriptor referring to the open file
description. A duplicate (``dup(2)``, ``fork(2)``'s copy in a child, ``SCM_RIGHTS``)
keeps the interest alive: events keep coming, tagged with the closed number, which the
program may since have given to another socket.
"""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo

QUIET_S = 0.05

Closer = Callable[[select.epoll, socket.socket], None]


@dataclass(frozen=True)
class Counts:
    events_for_the_closed_number: int


def close_only(ep: select.epoll, sock: socket.socket) -> None:
    """Deliberately wrong: relies on close() to remove the interest."""
    sock.close()


def unregister_then_close(ep: select.epoll, sock: socket.socket) -> None:
    ep.unregister(sock.fileno())
    sock.close()


def measure(close: Closer) -> Counts:
    peer, sock = socket.socketpair()
    with peer, select.epoll() as ep:
        ep.register(sock.fileno(), select.EPOLLIN)
        closed_fd = sock.fileno()
        # What a forked child or a library holding a dup() does: a second descriptor on
        # the same open file description.
        duplicate = os.dup(sock.fileno())
        try:
            close(ep, sock)
            peer.sendall(b"after close")
            events = [fd for fd, _ in ep.poll(QUIET_S) if fd == closed_fd]
        finally:
            os.close(duplicate)
    return Counts(len(events))


def shows_bug(counts: Counts) -> bool:
    """epoll reported a descriptor number the program had closed."""
    return counts.events_for_the_closed_number > 0


DEMO = Demo(
    name="dup-fork",
    summary="close() with a dup'd descriptor alive: epoll keeps reporting the closed number",
    did=(
        "a socket pair; one end registered with epoll, then duplicated with dup() (as a "
        "fork()ed child's copy would be), then closed by the handler under test; the peer "
        f"writes and one wait of {QUIET_S * 1000:.0f} ms is made; events for the closed "
        "descriptor number are counted"
    ),
    why=(
        "the interest list holds the open file description, and it is removed automatically "
        "only when every descriptor referring to it is closed. With a duplicate alive, "
        "close() removes nothing, the event arrives tagged with a number the program no "
        "longer owns (or has reused for another connection), and EPOLL_CTL_DEL on that "
        "number is no longer possible. Unregister before closing; mark sockets "
        "close-on-exec and close inherited copies in children."
    ),
    man='epoll(7), "Questions and answers", Q6; dup(2); fork(2)',
    naive=Case("close() only", close_only),
    fixed=(Case("EPOLL_CTL_DEL, then close()", unregister_then_close),),
    measure=measure,
    shows_bug=shows_bug,
)

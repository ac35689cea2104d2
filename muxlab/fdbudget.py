"""Descriptor budgets: how many connections a process may hold (``getrlimit(2)``).

Every socket is a descriptor, and ``RLIMIT_NOFILE`` caps the descriptors of a process,
so the connections a server or a load-generator worker can hold are its limit minus the
descriptors it needs for itself. Each kind of process keeps its own reserve, named here
with what it is for, so a planned sweep point fits both ends of the connection.
"""

from __future__ import annotations

import resource
import sys

# A server process besides its connections: stdin/stdout/stderr, the listener, the
# wake-up socketpair, the backend's own descriptor (epoll instance, io_uring ring), the
# interpreter's files, and room to accept one connection over the cap and close it at
# once (``--max-connections``). The default --max-connections is the soft limit minus it.
SERVER_RESERVE = 32
# A load-generator worker besides its connections: stdio, its epoll instance, the pipe to
# the parent, the interpreter's own files.
WORKER_RESERVE = 32
# A sweep plans at most the hard limit minus both ends' reserves, so a point never meets
# the server's --max-connections nor a one-process load generator's limit.
SWEEP_RESERVE = SERVER_RESERVE + WORKER_RESERVE
# select(2) cannot watch a descriptor numbered FD_SETSIZE or above, and descriptors are
# allocated lowest first: a select server's own descriptors (stdio, listener, wake-up
# pair, about 7) take the lowest numbers, with room to spare, and its connections the rest.
SELECT_RESERVE = 16


def fd_limits() -> tuple[int, int]:
    """The soft and hard ``RLIMIT_NOFILE``, either ``resource.RLIM_INFINITY`` if unlimited."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one and return it.

    A shell's default soft limit (often 1024) would otherwise cap the connections a server
    or a load generator can hold, and poll and epoll would hit EMFILE where only select
    should stop. Children inherit the raised limit."""
    soft, hard = fd_limits()
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def ensure_fd_limit(needed: int) -> None:
    """Raise the soft limit to ``needed`` descriptors, at most to the hard limit; raising
    the soft limit up to the hard one needs no privilege (``getrlimit(2)``)."""
    soft, hard = fd_limits()
    if soft != resource.RLIM_INFINITY and soft < needed:
        limit = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def server_connection_budget() -> int:
    """Connections this server process can hold: the soft limit minus ``SERVER_RESERVE``."""
    soft, _ = fd_limits()
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    return max(1, soft - SERVER_RESERVE)


def sweep_connection_budget() -> int:
    """Connections (active + idle) a sweep point may ask one server to hold: the hard
    limit (which both ends raise their soft limit to) minus ``SWEEP_RESERVE``."""
    soft, hard = fd_limits()
    limit = hard if hard != resource.RLIM_INFINITY else soft
    return max(0, limit - SWEEP_RESERVE)


def worker_descriptors(connections: int) -> int:
    """Descriptors a load-generator worker holding ``connections`` needs."""
    return connections + WORKER_RESERVE

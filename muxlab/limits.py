"""Process limits every muxlab command that holds many sockets shares."""

from __future__ import annotations

import resource


def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard one and return it (``getrlimit(2)``).

    A shell's default soft limit (often 1024) would otherwise cap the connections a server
    or a load generator can hold, and poll and epoll would hit EMFILE where only select
    should stop. Children inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard

"""``lt-write-spin``: interest in writability kept while there is nothing to write.

An idle connected socket has free send-buffer space, so it is writable all the time.
Level-triggered epoll reports it on every wait: the loop wakes at once, finds nothing to
send, and waits again, a wake-up storm that burns a core while serving nobody.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo

WINDOW_S = 0.2
WAIT_TIMEOUT_S = 0.05
# An idle loop wakes once per timeout, a handful of times in the window; a storm wakes
# tens of thousands of times. Anything over this many reports in the window is a storm.
STORM_REPORTS = 100

Interest = Callable[[int], int]
"""Output bytes pending -> epoll event mask to register."""


@dataclass(frozen=True)
class Setup:
    edge_triggered: bool
    interest: Interest


@dataclass(frozen=True)
class Counts:
    window_ms: int
    wait_calls: int
    reports: int
    wait_calls_per_s: int


def always_writable(pending_bytes: int) -> int:
    """Deliberately wrong under LT: EPOLLOUT requested whether or not anything is pending."""
    return select.EPOLLIN | select.EPOLLOUT


def writable_while_pending(pending_bytes: int) -> int:
    return select.EPOLLIN | (select.EPOLLOUT if pending_bytes else 0)


def measure(setup: Setup) -> Counts:
    peer, sock = socket.socketpair()
    with peer, sock, select.epoll() as ep:
        sock.setblocking(False)
        mode = select.EPOLLET if setup.edge_triggered else 0
        ep.register(sock.fileno(), setup.interest(0) | mode)
        wait_calls = reports = 0
        start_ns = time.monotonic_ns()
        end_ns = start_ns + int(WINDOW_S * 1e9)
        while time.monotonic_ns() < end_ns:
            reports += len(ep.poll(WAIT_TIMEOUT_S))
            wait_calls += 1
        elapsed_s = (time.monotonic_ns() - start_ns) / 1e9
    return Counts(int(WINDOW_S * 1000), wait_calls, reports, round(wait_calls / elapsed_s))


def shows_bug(counts: Counts) -> bool:
    """The idle socket kept waking the loop."""
    return counts.reports > STORM_REPORTS


DEMO = Demo(
    name="lt-write-spin",
    summary="LT with EPOLLOUT kept while idle wakes the loop continuously",
    did=(
        "a socket pair, nothing to send and nothing to read; the server end is registered "
        f"with the interest the handler asks for and waited on (timeout "
        f"{WAIT_TIMEOUT_S * 1000:.0f} ms) for {WINDOW_S * 1000:.0f} ms; wait calls and "
        "reported events are counted"
    ),
    why=(
        "a socket is writable while its send buffer has room, which for an idle socket is "
        "always. Level-triggered epoll reports every ready descriptor on every wait, so "
        "asking for EPOLLOUT with nothing to send turns the loop into a busy loop. Ask for "
        "EPOLLOUT only while output is pending (servers/loop.py does); edge-triggered epoll "
        "reports the writable state once and then only when buffer space is freed."
    ),
    man='epoll(7), "Level-triggered and edge-triggered"; epoll_ctl(2) (EPOLLOUT)',
    naive=Case("LT, EPOLLOUT always", Setup(False, always_writable)),
    fixed=(
        Case("LT, EPOLLOUT only while output is pending", Setup(False, writable_while_pending)),
        Case("ET, EPOLLOUT always", Setup(True, always_writable)),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

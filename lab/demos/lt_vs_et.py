"""``lt-vs-et``: the example in ``man 7 epoll``, on a socket pair.

2 KiB are written, the handler reads 1 KiB per event. Level-triggered epoll reports the
descriptor again because data is still there; edge-triggered epoll does not, because no
new data arrived, so 1 KiB sits unread until the peer writes again. That next write is
reported although the buffer was never empty: ET reports arrivals, not the change from
empty to not empty.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo, unread_bytes

MESSAGE_BYTES = 2048
READ_BYTES = 1024
# A wait that reports nothing for this long ends a phase: the bound on "waits forever".
QUIET_S = 0.05
MAX_WAITS = 8

Reader = Callable[[socket.socket], int]


@dataclass(frozen=True)
class Setup:
    edge_triggered: bool
    read: Reader


@dataclass(frozen=True)
class Counts:
    reports: int
    bytes_read: int
    bytes_left_unread: int
    reports_after_new_data: int


def read_once(sock: socket.socket) -> int:
    """Deliberately wrong under ET: one ``recv`` per event, whatever else is queued stays."""
    return len(sock.recv(READ_BYTES))


def read_until_eagain(sock: socket.socket) -> int:
    total = 0
    while True:
        try:
            chunk = sock.recv(READ_BYTES)
        except BlockingIOError:
            return total
        if not chunk:
            return total
        total += len(chunk)


def measure(setup: Setup) -> Counts:
    writer, reader = socket.socketpair()
    with writer, reader, select.epoll() as ep:
        reader.setblocking(False)
        mode = select.EPOLLET if setup.edge_triggered else 0
        ep.register(reader.fileno(), select.EPOLLIN | mode)
        writer.sendall(b"x" * MESSAGE_BYTES)
        reports = bytes_read = 0
        for _ in range(MAX_WAITS):
            if not ep.poll(QUIET_S):
                break
            reports += 1
            bytes_read += setup.read(reader)
        left = unread_bytes(reader.fileno())
        writer.sendall(b"y")
        after = len(ep.poll(QUIET_S))
    return Counts(reports, bytes_read, left, after)


def shows_bug(counts: Counts) -> bool:
    """The descriptor went quiet while data was still waiting to be read."""
    return counts.bytes_left_unread > 0


DEMO = Demo(
    name="lt-vs-et",
    summary="2 KiB written, 1 KiB read per event: LT reports the rest, ET goes quiet",
    did=(
        f"a socket pair; {MESSAGE_BYTES} bytes written to one end; the other end is "
        f"registered with epoll and gets one {READ_BYTES}-byte recv per reported event; "
        f"waits continue until one reports nothing for {QUIET_S * 1000:.0f} ms; then one "
        "more byte is written and one more wait is made"
    ),
    why=(
        "level-triggered epoll puts a reported descriptor back on the ready list and reports "
        "it again while it is still readable; edge-triggered epoll takes it off, and only a "
        "new arrival puts it back (arrivals before the next wait merge into one event), "
        "whether or not unread data was waiting. So the second KiB is not reported until "
        "the peer writes again, and then the descriptor is reported with 1 KiB still "
        "queued. With ET, read until EAGAIN."
    ),
    man='epoll(7), "Level-triggered and edge-triggered" (the 2 kB pipe example)',
    naive=Case("ET, one 1 KiB recv per event", Setup(True, read_once)),
    fixed=(
        Case("LT, one 1 KiB recv per event", Setup(False, read_once)),
        Case("ET, recv until EAGAIN", Setup(True, read_until_eagain)),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

"""``et-starvation``: an ET loop that drains one descriptor while its client keeps sending.

The textbook ET handler reads until EAGAIN. A client that sends at least as fast as the
server reads never lets EAGAIN happen, so the loop never returns to ``epoll_wait`` and
every other ready client waits (``epoll(7)``, "Possible pitfalls and ways to avoid them",
"(o) Starvation (edge-triggered)"). The flooding client is modelled exactly: after each
``recv`` the server makes from it, it writes one more chunk, up to ``FLOOD_CAP_BYTES``
(the bound that stops the demo), so the result is a count, not a race.

The fix the man page suggests: a ready list kept by the application, served in turn, with
a per-event read budget; a connection whose budget ran out goes to the back of it. muxlab's
servers offer the same as ``muxlab serve --et-read-budget BYTES``.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from lab.demos.base import Case, Demo

CHUNK_BYTES = 16 * 1024
FLOOD_CAP_BYTES = 4 << 20
READ_BUDGET_BYTES = 64 * 1024
REQUEST = b"quiet client's request"
QUIET_S = 0.05
MAX_ROUNDS = 1000

Recv = Callable[[], bytes]
"""One ``recv`` on the connection; raises BlockingIOError at EAGAIN."""
Handler = Callable[[Recv], bool]
"""Read what one event allows; True when it stopped with input possibly left."""


@dataclass(frozen=True)
class Setup:
    edge_triggered: bool
    handle: Handler


@dataclass(frozen=True)
class Counts:
    flood_cap_bytes: int
    flood_bytes_before_quiet_served: int
    flood_bytes_read: int
    wait_calls: int


def drain(recv: Recv) -> bool:
    """Deliberately wrong under ET with a fast client: reads until EAGAIN, however long."""
    while True:
        try:
            if not recv():
                return False
        except BlockingIOError:
            return False


def read_with_budget(recv: Recv) -> bool:
    budget = READ_BUDGET_BYTES
    while budget > 0:
        try:
            data = recv()
        except BlockingIOError:
            return False
        if not data:
            return False
        budget -= len(data)
    return True


def read_once(recv: Recv) -> bool:
    with contextlib.suppress(BlockingIOError):
        recv()
    return False


class Flood:
    """The two clients and what the server has read from each."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.flooder, self.flooded = (stack.enter_context(s) for s in socket.socketpair())
        self.quiet_client, self.quiet = (stack.enter_context(s) for s in socket.socketpair())
        self.flooded.setblocking(False)
        self.quiet.setblocking(False)
        self.flooder.setblocking(False)
        self.sent = self.read = 0
        self.read_when_quiet_served = -1
        self.chunk = b"f" * CHUNK_BYTES

    def top_up(self) -> None:
        """The fast client: one more chunk in flight after each server read, to the cap."""
        if self.sent < FLOOD_CAP_BYTES:
            with contextlib.suppress(BlockingIOError):
                self.sent += self.flooder.send(self.chunk)

    def recv_flood(self) -> bytes:
        data = self.flooded.recv(CHUNK_BYTES)
        self.read += len(data)
        self.top_up()
        return data

    def recv_quiet(self) -> bytes:
        data = self.quiet.recv(CHUNK_BYTES)
        if data and self.read_when_quiet_served < 0:
            self.read_when_quiet_served = self.read
        return data


def measure(setup: Setup) -> Counts:
    with contextlib.ExitStack() as stack:
        flood = Flood(stack)
        ep = stack.enter_context(select.epoll())
        mode = select.EPOLLET if setup.edge_triggered else 0
        receivers = {
            flood.flooded.fileno(): flood.recv_flood,
            flood.quiet.fileno(): flood.recv_quiet,
        }
        for fd in receivers:  # the flooder first: its event comes first in the batch
            ep.register(fd, select.EPOLLIN | mode)
        flood.top_up()
        flood.quiet_client.sendall(REQUEST)
        runnable: deque[int] = deque()
        waits = 0
        for _ in range(MAX_ROUNDS):
            events = ep.poll(0 if runnable else QUIET_S)
            waits += 1
            ready = [fd for fd, _ in events] + [runnable.popleft() for _ in range(len(runnable))]
            if not ready:
                break
            for fd in dict.fromkeys(ready):
                if setup.handle(receivers[fd]):
                    runnable.append(fd)
        served_at = flood.read_when_quiet_served
        return Counts(
            FLOOD_CAP_BYTES, served_at if served_at >= 0 else flood.read, flood.read, waits
        )


def shows_bug(counts: Counts) -> bool:
    """The quiet client waited until the flood stopped."""
    return counts.flood_bytes_before_quiet_served >= counts.flood_cap_bytes


DEMO = Demo(
    name="et-starvation",
    summary="ET drain until EAGAIN: one client that never pauses starves every other",
    did=(
        "two socket pairs registered with epoll; one client sends without pause (after each "
        f"server recv it writes another {CHUNK_BYTES // 1024} KiB, up to "
        f"{FLOOD_CAP_BYTES >> 20} MiB), the other sends one short request; the server handles "
        "each reported or still-runnable connection in turn; the flooder's bytes read before "
        "the quiet client's request is read are counted"
    ),
    why=(
        "reading until EAGAIN is what ET requires, but EAGAIN never comes while the client "
        "sends as fast as the server reads, so the loop never waits again and the other "
        "ready client is not served until the flood stops. A per-event read budget, with "
        "connections whose budget ran out kept on the application's own ready list and served "
        "after the others (wait with timeout 0 while it is non-empty), bounds what one client "
        f"can take ({READ_BUDGET_BYTES // 1024} KiB here); LT with one read per event "
        "round-robins by itself."
    ),
    man=(
        'epoll(7), "Possible pitfalls and ways to avoid them", (o) Starvation (edge-triggered); '
        "muxlab serve --et-read-budget"
    ),
    naive=Case("ET, read until EAGAIN", Setup(True, drain)),
    fixed=(
        Case(
            f"ET, {READ_BUDGET_BYTES // 1024} KiB budget per event, round-robin",
            Setup(True, read_with_budget),
        ),
        Case("LT, one recv per event", Setup(False, read_once)),
    ),
    measure=measure,
    shows_bug=shows_bug,
)

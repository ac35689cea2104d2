"""The completion loop's CQE dispatch, driven by hand-made CQEs: no kernel timing decides
the order, so the orders that only a loaded server produces by chance are produced here
on purpose.

The server is built but never run: the test accepts its connections, records every SQE
the loop writes (they are never submitted until the server closes, by then to closed
sockets), puts the bytes where the kernel would have put them (the provided buffer, or
the connection's buffer on the 5.15 path) and hands :meth:`UringServer._dispatch` the
CQEs the kernel would have posted, in the order under test.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from servers import uring_connection
from servers.lifecycle import ServerConfig
from servers.uring import abi
from servers.uring.ring import unavailable_reason
from servers.uring_connection import Conn
from servers.uring_loop import UringServer
from tests.conftest import require_available

F_MORE = abi.IORING_CQE_F_MORE
F_BUFFER = abi.IORING_CQE_F_BUFFER
# Two 1,000-byte echo replies pass it, one does not; it resumes at 3/4 of it (1,125).
MAX_OUTPUT_BYTES = 1500
MESSAGE = b"m" * 1000


@pytest.fixture(autouse=True)
def _io_uring_here() -> None:
    require_available("io_uring", unavailable_reason())


@dataclass
class Harness:
    """A built, never-run server; its SQEs as written, and the CQEs fed to it."""

    server: UringServer
    real_prep: Callable[..., None]
    sqes: list[tuple[int, int, int]] = field(default_factory=list)  # opcode, fd, user_data
    clients: list[socket.socket] = field(default_factory=list)
    ended: dict[int, int] = field(default_factory=dict)  # fd -> final receive CQEs fed
    # fd -> the most receives it had in flight after any batch of CQEs was handled
    peak: dict[int, int] = field(default_factory=dict)

    def prep(self, opcode: int, fd: int, user_data: int, *args: int, **kwargs: int) -> None:
        self.sqes.append((opcode, fd, user_data))
        self.real_prep(opcode, fd, user_data, *args, **kwargs)

    def accept(self) -> Conn:
        """A real connection, accepted through the accept CQE the loop would get."""
        self.clients.append(socket.create_connection(self.server.address, timeout=10))
        accepted, _ = self.server.listener.accept()
        before = set(self.server._conns)
        self.feed((uring_connection.ACCEPT, accepted.detach(), 0))
        [serial] = set(self.server._conns) - before
        return self.server._conns[serial]

    def recvs(self, conn: Conn) -> list[int]:
        """The user_data of every receive SQE written for ``conn``, oldest first."""
        return [ud for op, fd, ud in self.sqes if op == abi.IORING_OP_RECV and fd == conn.fd]

    def in_flight(self, conn: Conn) -> int:
        """Receives submitted for ``conn`` whose final CQE has not been fed yet."""
        return len(self.recvs(conn)) - self.ended.get(conn.fd, 0)

    def feed(self, *cqes: tuple[int, int, int]) -> None:
        for user_data, _, flags in cqes:
            for op, fd, ud in self.sqes:
                if op == abi.IORING_OP_RECV and ud == user_data and not flags & F_MORE:
                    self.ended[fd] = self.ended.get(fd, 0) + 1
                    break
        self.server._dispatch(list(cqes))
        for conn in self.server._conns.values():
            self.peak[conn.fd] = max(self.peak.get(conn.fd, 0), self.in_flight(conn))

    def received(self, conn: Conn, data: bytes, *, last: bool = False) -> tuple[int, int, int]:
        """The CQE of ``conn``'s current receive having read ``data``, which is put where
        the kernel puts it; ``last``: a multishot receive's final CQE (no F_MORE)."""
        return self.received_by(conn, self.recvs(conn)[-1], data, last=last)

    def received_by(
        self, conn: Conn, user_data: int, data: bytes, *, last: bool = False
    ) -> tuple[int, int, int]:
        buffers = self.server._buffers
        if buffers is None:  # single-shot into the connection's buffer: always its last
            assert conn.buf is not None
            conn.buf[: len(data)] = data
            return user_data, len(data), 0
        bid = 1
        buffers.buffers[bid * buffers.size : bid * buffers.size + len(data)] = data
        flags = F_BUFFER | bid << abi.IORING_CQE_BUFFER_SHIFT | (0 if last else F_MORE)
        return user_data, len(data), flags

    def sent(self, conn: Conn) -> tuple[int, int, int]:
        """The CQE of ``conn``'s send in flight having sent all of it."""
        assert conn.sending is not None
        [user_data] = {ud for op, fd, ud in self.sqes if op == abi.IORING_OP_SEND and fd == conn.fd}
        return user_data, len(conn.sending) - conn.send_off, 0


@pytest.fixture(params=["multishot", "5.15"])
def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """Both receive paths: multishot with provided buffers, and the single-shot receive
    into a per-connection buffer of kernels before 6.0 (``MUXLAB_URING_KERNEL=5.15``)."""
    if request.param == "5.15":
        monkeypatch.setenv("MUXLAB_URING_KERNEL", "5.15")
    server = UringServer(ServerConfig(backend="io_uring", max_output_bytes=MAX_OUTPUT_BYTES))
    made = Harness(server, server._ring.prep)
    monkeypatch.setattr(server._ring, "prep", made.prep)
    assert (server._buffers is None) == (request.param == "5.15")
    try:
        yield made
    finally:
        server._close_all()
        for client in made.clients:
            client.close()


def pause_both_under_the_total_output_bound(harness: Harness) -> tuple[Conn, Conn, int]:
    """A echoes 1,000 bytes and reads on; B's 1,000 pass the total output bound, which
    pauses both (A's armed receive is cancelled); both sends complete, which resumes
    both. Returns A, B and the user_data of A's cancelled receive."""
    a, b = harness.accept(), harness.accept()
    harness.feed(harness.received(a, MESSAGE))
    assert a.recv_armed and a.out_bytes == len(MESSAGE)
    cancelled = harness.recvs(a)[-1]
    harness.feed(harness.received(b, MESSAGE))
    assert a.paused and b.paused and not a.recv_armed  # the bound paused A too
    harness.feed(harness.sent(a), harness.sent(b))
    assert not a.paused and not b.paused  # under the bound again: both resumed
    return a, b, cancelled


def test_a_cancelled_receives_late_end_does_not_arm_a_second_receive(harness: Harness) -> None:
    """The fix of fef48c7: the final CQE of A's cancelled receive, arriving after A
    resumed, was taken for the end of the receive armed since, and armed another."""
    a, _, cancelled = pause_both_under_the_total_output_bound(harness)
    harness.feed((cancelled, -errno.ECANCELED, 0))
    assert a.recv_armed
    assert harness.recvs(a)[-1] != cancelled  # the one armed has a generation of its own
    assert harness.in_flight(a) == 1  # the old code had two: the one armed on resume, and
    # the one the stale end armed again


def test_a_stale_end_then_the_current_receives_end_arms_exactly_one(harness: Harness) -> None:
    """After the stale end is ignored, the current receive's own end still re-arms."""
    a, _, cancelled = pause_both_under_the_total_output_bound(harness)
    harness.feed((cancelled, -errno.ECANCELED, 0))
    count = len(harness.recvs(a))
    harness.feed((harness.recvs(a)[-1], -errno.ENOBUFS, 0))  # the buffers ran out: re-armed
    assert len(harness.recvs(a)) == count + 1
    assert a.recv_armed and harness.in_flight(a) == 1


def test_no_receive_is_armed_until_the_cancelled_one_has_ended(harness: Harness) -> None:
    """A cancelled receive may still complete, with data, into the 5.15 path's one buffer
    per connection: resuming arms nothing until its final CQE has come."""
    a, b, cancelled = pause_both_under_the_total_output_bound(harness)
    assert not a.recv_armed and a.recv_ending  # resumed, but waiting for that end
    assert harness.recvs(a)[-1] == cancelled
    harness.feed((cancelled, -errno.ECANCELED, 0))
    assert a.recv_armed and not a.recv_ending
    assert harness.peak[a.fd] == 1 and harness.peak[b.fd] == 1


def test_a_cancelled_receives_late_data_is_echoed_then_the_next_is_armed(
    harness: Harness,
) -> None:
    """The cancellation lost the race: the receive completed with data. The bytes are
    the stream's next ones, echoed whole, and only then is the next receive armed."""
    a, _, cancelled = pause_both_under_the_total_output_bound(harness)
    count = len(harness.recvs(a))
    harness.feed(harness.received_by(a, cancelled, b"late bytes", last=True))
    assert a.sending == b"late bytes"
    assert len(harness.recvs(a)) == count + 1 and a.recv_armed
    assert harness.peak[a.fd] == 1


def test_a_connection_closed_while_its_receive_is_ending_keeps_the_buffer_alive(
    harness: Harness,
) -> None:
    """Until the cancelled receive's final CQE, the kernel may write into its buffer: a
    connection closed meanwhile leaves it with the server, which drops it at that CQE."""
    a, _, cancelled = pause_both_under_the_total_output_bound(harness)
    buffer = a.buf
    harness.server._close(a)
    if buffer is None:  # provided buffers belong to the buffer ring, not to the connection
        assert cancelled not in harness.server._orphans
        return
    assert harness.server._orphans[cancelled] is buffer
    harness.feed((cancelled, -errno.ECANCELED, 0))
    assert cancelled not in harness.server._orphans

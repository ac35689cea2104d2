"""The completion loop's request path, per connection: receive, backpressure, send.

:class:`UringConnections` is what :class:`servers.uring_loop.UringServer` does with a
connection's CQEs once the loop turn has dispatched them (the server adds the ring, the
loop turn, accepting and closing); :class:`Conn` is a connection's state, and the
``user_data`` layout below is how a CQE finds it.

- Receive: one multishot ``IORING_OP_RECV`` per connection (6.0) with a provided-buffer
  ring (5.19): the kernel picks a buffer for each receive, so an idle connection holds
  none; the loop copies the bytes out and gives the buffer back at once. On older
  kernels a single-shot receive into a per-connection buffer is re-armed after each CQE.
  When the ring has no free buffer the kernel ends the multishot receive with
  ``ENOBUFS``; the loop re-arms it (counted as ``errors.recv_ENOBUFS``).
- Send: at most one ``IORING_OP_SEND`` in flight per connection, because two sends on
  one stream socket may complete in either order; what the protocol produces meanwhile
  is queued and sent, joined, when the first completes. A short send is resubmitted
  from where it stopped.
- Backpressure (the readiness loop's policy: high and low water per connection, the
  total output bound) stops reading by cancelling the armed receive and resumes by
  arming a new one once the cancelled one has ended (see ``servers/uring_loop.py``).
"""

from __future__ import annotations

import ctypes
import errno
import socket
from collections import deque

from servers.lifecycle import ServerLifecycle
from servers.protocols import Session
from servers.uring import abi
from servers.uring.buffers import BufferRing, bytes_address
from servers.uring.ring import Ring

# user_data = (serial << 16 | generation) << 3 | operation. Serial 0 is the server's own
# requests. The generation tells a connection's receive requests apart: a cancelled one
# still posts CQEs (its last data, then -ECANCELED), and its end must never be taken for
# a later one's (before fef48c7 it was, once a resume had armed the next: that armed a
# second receive on the socket at every pause and resume; under a hostile soak they
# piled up until each io_uring_enter took ~80 us and normal clients stalled). The next
# receive now waits for that end (Conn.recv_ending); the generation keeps each CQE with
# its own request all the same. Sends and accepts keep generation 0.
_OP_BITS = 3
OP_MASK = 7
_GEN_BITS = 16
_GEN_MASK = (1 << _GEN_BITS) - 1
ID_SHIFT = _OP_BITS + _GEN_BITS
RECV = 1
SEND = 2
ACCEPT = 3
WAKE = 4
# A cancellation's own user_data is its target's with this bit set, so its CQE says what
# to retry (serial numbers never get near it).
CANCELLATION = 1 << 63
BUFFER_GROUP = 1
# Module constants for the per-CQE path (a global is one look-up, abi.X two).
F_BUFFER = abi.IORING_CQE_F_BUFFER
F_MORE = abi.IORING_CQE_F_MORE
BUFFER_SHIFT = abi.IORING_CQE_BUFFER_SHIFT
_OP_SEND = abi.IORING_OP_SEND
_MSG_NOSIGNAL = socket.MSG_NOSIGNAL
_RETRY = frozenset({errno.EAGAIN, errno.EINTR, errno.ENOBUFS})


class Conn:
    """Per-connection state of the completion loop."""

    __slots__ = (
        "buf", "buf_addr", "closed", "eof", "fd", "feed", "held", "id", "mark_ns", "mark_seq",
        "out", "out_bytes", "paused", "recv_armed", "recv_data", "recv_ending", "send_off",
        "sending", "session", "sock",
    )  # fmt: skip

    def __init__(self, serial: int, sock: socket.socket, session: Session) -> None:
        self.id = serial
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.feed = session.data_received
        self.out: deque[bytes] = deque()  # queued behind the send in flight
        self.out_bytes = 0  # in flight and queued
        self.sending: bytes | None = None
        self.send_off = 0
        self.recv_armed = False
        # The receive armed last was cancelled and its final CQE has not come yet: no
        # other is armed until it has (see _stop_reading).
        self.recv_ending = False
        # user_data of the receive armed last (its generation is this connection's now).
        self.recv_data = 0
        # Received after reading was paused, fed to the protocol when it resumes.
        self.held: deque[bytes] = deque()
        self.buf: bytearray | None = None  # the single-shot receive's buffer (old kernels)
        self.buf_addr = 0
        self.paused = False
        self.eof = False
        self.closed = False
        self.mark_seq = -1
        self.mark_ns = 0


class UringConnections(ServerLifecycle[Conn]):
    """Receiving, backpressure and sending on the ring; the server subclass owns the
    ring, the buffers and closing (:meth:`_close`)."""

    _ring: Ring
    _buffers: BufferRing | None

    # -- receiving -----------------------------------------------------------------------

    def _arm_recv(self, conn: Conn) -> None:
        gen = (conn.recv_data >> _OP_BITS) + 1 & _GEN_MASK
        user_data = (conn.id << _GEN_BITS | gen) << _OP_BITS | RECV
        conn.recv_data = user_data
        if self._buffers is not None:
            self._ring.prep(abi.IORING_OP_RECV, conn.fd, user_data,
                            sqe_flags=abi.IOSQE_BUFFER_SELECT, ioprio=abi.IORING_RECV_MULTISHOT,
                            buf_group=BUFFER_GROUP)  # fmt: skip
        else:
            if conn.buf is None:
                conn.buf = bytearray(self.config.read_bytes)
                conn.buf_addr = _bytearray_address(conn.buf)
            self._ring.prep(abi.IORING_OP_RECV, conn.fd, user_data, addr=conn.buf_addr,
                            length=len(conn.buf))  # fmt: skip
        conn.recv_armed = True

    def _on_recv(self, conn: Conn, res: int, flags: int, user_data: int) -> None:
        # The request path: data, protocol, reply. One function for the same reason as
        # servers/loop.py's _on_readable. A CQE of an earlier receive (cancelled, see
        # _GEN_BITS) still carries bytes read from the socket, in order: they are used;
        # only its end says nothing about the receive armed now.
        counters = self.counters
        current = user_data == conn.recv_data
        if not flags & F_MORE and current:
            conn.recv_armed = False
            conn.recv_ending = False
        if res > 0:
            counters.reads += 1
            counters.bytes_in += res
            if flags & F_BUFFER:
                data = self._buffers.take(flags >> BUFFER_SHIFT, res)  # type: ignore[union-attr]
            else:
                data = bytes(memoryview(conn.buf)[:res])  # type: ignore[arg-type]
            if conn.paused or conn.held:
                conn.held.append(data)  # arrived after the pause: see _hold
                return
            self._feed(conn, data)
        elif res == 0:
            counters.reads += 1
            if conn.held:
                conn.held.append(b"")
                return
            self._on_eof(conn)
            return
        else:
            if flags & F_BUFFER and self._buffers is not None:
                self._buffers.give_back(flags >> BUFFER_SHIFT)
            if not current:
                return  # the end of a receive cancelled earlier
            err = -res
            # ECANCELED is ours (backpressure or EOF stopped it): armed again below if
            # reading resumed meanwhile.
            if err not in _RETRY and err != errno.ECANCELED:
                self._close(conn, errno.errorcode.get(err, str(err)))
                return
            if err == errno.ENOBUFS:
                counters.errors["recv_ENOBUFS"] += 1
        if not (conn.recv_armed or conn.recv_ending or conn.paused or conn.eof or conn.closed):
            self._arm_recv(conn)

    def _feed(self, conn: Conn, data: bytes) -> None:
        """Hand received bytes to the protocol and send its reply (b"": the peer's EOF)."""
        if not data:
            self._on_eof(conn)
            return
        reply = conn.feed(data)
        if reply:
            self._send(conn, reply)
        session = conn.session
        if session.attention:
            if session.wants_close:
                self._on_eof(conn)
                return
            if self._header_timeout_ns:
                self._unfinished.add(conn)
        if conn.out_bytes:
            self._over_output_bound(conn)

    def _on_eof(self, conn: Conn) -> None:
        conn.eof = True
        if conn.out_bytes:
            self._stop_reading(conn)  # finish sending what is queued, then close
        else:
            self._close(conn)

    def _stop_reading(self, conn: Conn) -> None:
        # A cancelled receive may still complete, with data, in its buffer: the next is
        # armed only once its final CQE has come (_on_recv), so a connection never has two
        # receives in flight. Two would share the 5.15 path's one buffer (the late one
        # overwriting what the other read) and, on any path, could take the stream's bytes
        # in turns.
        if conn.recv_armed:
            self._cancel(conn.recv_data)
            conn.recv_armed = False
            conn.recv_ending = True

    def _cancel(self, target: int) -> None:
        """Cancel the request whose user_data is ``target`` (``IORING_OP_ASYNC_CANCEL``)."""
        self._ring.prep(abi.IORING_OP_ASYNC_CANCEL, -1, target | CANCELLATION, addr=target)

    # -- backpressure (the same policy as servers/loop.py) -------------------------------

    def _over_output_bound(self, conn: Conn) -> bool:
        if self._total_out > self.config.max_output_bytes:
            if not self._output_paused:
                for other in self._conns.values():
                    if other.out_bytes and not other.paused:
                        self._pause_for_output(other)
            elif not conn.paused:
                self._pause_for_output(conn)
            return True
        if conn.out_bytes > self.config.high_water_bytes:
            conn.paused = True
            self.counters.read_pauses += 1
            self._stop_reading(conn)
            return True
        return False

    def _pause_for_output(self, conn: Conn) -> None:
        # One count per connection paused, as servers/loop.py counts (README: counters).
        self.counters.output_pauses += 1
        conn.paused = True
        self._output_paused.add(conn)
        self._stop_reading(conn)

    def _resume(self, conn: Conn) -> None:
        """Feed what arrived after the pause, then receive again, unless that pauses it
        again."""
        conn.paused = False
        held = conn.held
        while held and not conn.paused and not conn.closed:
            self._feed(conn, held.popleft())
        if not (conn.recv_armed or conn.recv_ending or conn.paused or conn.eof or conn.closed):
            self._arm_recv(conn)

    def _resume_after_total_output(self) -> None:
        # Resuming feeds held bytes, which can pass the bound again and pause connections
        # (this set included): iterate over a copy, and skip any paused meanwhile.
        low_water = self.config.low_water_bytes
        paused = list(self._output_paused)
        self._output_paused.clear()
        for conn in paused:
            if conn.closed or not conn.paused or conn in self._output_paused:
                continue
            if self._total_out > self._output_resume_bytes or conn.out_bytes > low_water:
                self._output_paused.add(conn)  # still over: stays paused for the total
                continue
            self._resume(conn)

    # -- sending -------------------------------------------------------------------------

    def _send(self, conn: Conn, data: bytes) -> None:
        conn.out_bytes += len(data)
        self._total_out += len(data)
        counters = self.counters
        if conn.out_bytes > counters.peak_output_bytes:
            counters.peak_output_bytes = conn.out_bytes
        if self._total_out > counters.peak_total_output_bytes:
            counters.peak_total_output_bytes = self._total_out
        if conn.sending is None:
            self._submit_send(conn, data, 0)
        else:
            conn.out.append(data)

    def _submit_send(self, conn: Conn, data: bytes, offset: int) -> None:
        conn.sending = data
        conn.send_off = offset
        # Positional arguments: this runs once per reply, and keywords cost a dict.
        self._ring.prep(
            _OP_SEND,
            conn.fd,
            conn.id << ID_SHIFT | SEND,
            bytes_address(data) + offset,
            len(data) - offset,
            _MSG_NOSIGNAL,
        )

    def _on_sent(self, conn: Conn, res: int) -> None:
        data = conn.sending
        if data is None:
            return
        conn.sending = None
        if res < 0:
            if -res == errno.ECANCELED:
                return
            self._close(conn, errno.errorcode.get(-res, str(-res)))
            return
        counters = self.counters
        counters.writes += 1
        counters.bytes_out += res
        conn.out_bytes -= res
        self._total_out -= res
        offset = conn.send_off + res
        if offset < len(data):
            counters.partial_writes += 1
            self._submit_send(conn, data, offset)
        elif conn.out:
            out = conn.out
            self._submit_send(conn, out.popleft() if len(out) == 1 else b"".join(out), 0)
            out.clear()
        elif conn.eof:
            self._close(conn)
            return
        if self._output_sent(conn):
            self._resume(conn)


def _bytearray_address(buffer: bytearray) -> int:
    """The address of a bytearray's storage; it never moves, because it is never resized
    (its length is fixed at creation and only its contents change)."""
    view = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    address = ctypes.addressof(view)
    del view
    return address

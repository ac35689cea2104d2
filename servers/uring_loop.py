"""The completion loop (``muxlab serve --backend io_uring``): the kernel reads and writes.

Readiness (``servers/loop.py``) asks the kernel *which* sockets can be read, then reads
each one with its own system call. Completion (the proactor model) asks the kernel *to
read*: accept, receive and send are SQEs, and what comes back is a CQE per finished
operation, with the data already in a buffer. Per loop turn there is one
``io_uring_enter(2)`` that both hands over every SQE queued since the last turn and
sleeps until at least one CQE is posted; everything else is memory traffic.

- Accept: single-shot ``IORING_OP_ACCEPT``, one in flight while the backlog is empty;
  when a CQE says more connections are waiting (``IORING_CQE_F_SOCK_NONEMPTY``), up to
  ``ACCEPT_BATCH`` (64, the readiness loop's LT batch) are in flight, so a burst is
  accepted in a few turns. Not multishot accept (5.19): it reads ``RLIMIT_NOFILE`` once,
  when it is armed (``io_accept_prep``), and then accepts the whole backlog in one go,
  so a limit lowered while the server runs is not honoured (the contract suite lowers
  it with ``prlimit`` to test ``EMFILE`` pausing); a single-shot accept reads it each
  time it is armed.
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
- Every SQE's ``user_data`` is the connection's serial number (never reused, so a CQE
  for a connection that has closed, and whose descriptor may have been reused, finds
  no connection and is dropped), a generation for receives (each receive request is
  told from the connection's earlier ones) and the operation. A cancellation that
  finds its target busy (``EALREADY``) is retried.
- Closing a connection cancels its armed receive and in-flight send
  (``IORING_OP_ASYNC_CANCEL`` by ``user_data``) and closes the socket; buffers the
  kernel may still write or read are kept alive until their CQE arrives.

What it shares with the readiness loop, through :mod:`servers.lifecycle`: the protocols'
sessions, :class:`Counters`, the configuration, the limits and their defaults
(high/low water, the total output bound, ``max_connections``, the header and idle
timeouts with the same coarse sweep, ``EMFILE`` pausing), the per-connection exception
isolation, the wake-up pair, the ready line, counters line and SIGUSR1 snapshot (through
the same :class:`ServerConfig` and ``on_snapshot``). Where it must differ, and why:

- Backpressure stops reading by cancelling the armed receive (there is no interest
  mask to change) and resumes by arming a new one, but not before the cancelled one's
  final CQE has come: a cancelled receive may still complete with data, into the 5.15
  path's per-connection buffer, so a connection has at most one receive in flight,
  ever (``tests/test_uring_dispatch.py``). A multishot receive may already have
  posted more CQEs by then (the kernel receives up to 32 buffers per wake-up before it
  yields); their bytes are held, unparsed, and fed to the protocol on resume, so queued
  output keeps the readiness loop's bound (high water plus one read) and the input held
  is at most what one loop turn delivered.
- There is no ``EAGAIN`` anywhere: the kernel waits for readiness itself (internal
  poll, ``IORING_FEAT_FAST_POLL``), so ``reads_eagain``, ``writes_eagain``,
  ``accepts_eagain`` and ``accept_wakeups_empty`` stay 0, and the ET read budget does
  not apply (each completion is at most one buffer).
- The 408 of a header timeout is sent with one non-blocking ``send(2)`` outside the
  ring, as best effort, because the connection closes right after and a queued send
  would be cancelled.

Counters: ``wait_calls`` are the ``io_uring_enter`` calls that waited (one per loop
turn), ``events`` the CQEs handled, ``reads``/``writes``/``accepts`` the receive, send
and accept operations completed (by the kernel, so they are not system calls here);
``uring_enters``, ``uring_sqes``, ``uring_cqes`` count every ``io_uring_enter`` and the
SQEs and CQEs it moved, so system calls per request is ``uring_enters`` over requests.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from servers.counters import Counters
from servers.lifecycle import (
    ACCEPT_BATCH,
    LISTENER_BROKEN,
    OUT_OF_DESCRIPTORS,
    ServerConfig,
    ServerFailedError,
    ServerLifecycle,
    ServerSetupError,
    errno_kind,
    error_kind,
    open_listener,
)
from servers.protocols import Session, SessionFactory
from servers.uring import abi
from servers.uring.buffers import BufferRing, bytes_address
from servers.uring.ring import Ring

log = logging.getLogger("muxlab.server")

# user_data = (serial << 16 | generation) << 3 | operation. Serial 0 is the server's own
# requests. The generation tells a connection's receive requests apart: a cancelled one
# still posts CQEs (its last data, then -ECANCELED), and its end must never be taken for
# a later one's (before fef48c7 it was, once a resume had armed the next: that armed a
# second receive on the socket at every pause and resume; under a hostile soak they
# piled up until each io_uring_enter took ~80 us and normal clients stalled). The next
# receive now waits for that end (Conn.recv_ending); the generation keeps each CQE with
# its own request all the same. Sends and accepts keep generation 0.
_OP_BITS = 3
_OP_MASK = 7
_GEN_BITS = 16
_GEN_MASK = (1 << _GEN_BITS) - 1
_ID_SHIFT = _OP_BITS + _GEN_BITS
_RECV = 1
_SEND = 2
_ACCEPT = 3
_WAKE = 4
# A cancellation's own user_data is its target's with this bit set, so its CQE says what
# to retry (serial numbers never get near it).
_CANCELLATION = 1 << 63
_BUFFER_GROUP = 1
# Module constants for the per-CQE path (a global is one look-up, abi.X two).
_F_BUFFER = abi.IORING_CQE_F_BUFFER
_F_MORE = abi.IORING_CQE_F_MORE
_BUFFER_SHIFT = abi.IORING_CQE_BUFFER_SHIFT
_OP_SEND = abi.IORING_OP_SEND
_MSG_NOSIGNAL = socket.MSG_NOSIGNAL
# Provided buffers of --read-bytes each; only the pages a receive writes are backed by
# memory, so 256 of 64 KiB cost 16 MiB of address space, not of memory.
BUFFER_COUNT = 256
SQ_ENTRIES = 4096
CQ_ENTRIES = 16384
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


class UringServer(ServerLifecycle[Conn]):
    """One listening socket, one ring, one protocol, one thread."""

    def __init__(
        self,
        config: ServerConfig,
        listener: socket.socket | None = None,
        on_snapshot: Callable[[dict[str, Any]], None] | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        if config.et_drain != "strict":
            # No drain to end: the kernel does the receives, and nothing returns EAGAIN.
            raise ServerSetupError("--et-drain applies to epoll-et, not to io_uring")
        self._init_lifecycle(config, on_snapshot, session_factory)
        self.counters = Counters(syscall_model="completion")
        self._ring = Ring(SQ_ENTRIES, CQ_ENTRIES, counts=self.counters)
        try:
            self._buffers = self._make_buffer_ring()
            self.listener = listener or open_listener(config.host, config.port, config.backlog)
        except BaseException:
            self._ring.close()
            raise
        self._next_serial = 1
        self._orphans: dict[int, bytes | bytearray] = {}  # buffers the kernel may still use
        self._accepts_in_flight = 0
        self._open_wake_pair()
        self._wake_armed = False
        self._arm_accepts(1)
        self._arm_wake()

    def _make_buffer_ring(self) -> BufferRing | None:
        if not self._ring.capabilities.multishot_recv:
            return None
        return BufferRing(self._ring, _BUFFER_GROUP, BUFFER_COUNT, self.config.read_bytes)

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        ring = self._ring
        counters = self.counters
        dispatch = self._dispatch
        while not self._stopping:
            try:
                ring.enter(1, self._wait_timeout_s())
            except OSError as exc:
                raise ServerFailedError(
                    f"io_uring wait failed: {error_kind(exc)} ({exc.strerror})"
                ) from exc
            counters.wait_calls += 1
            cqes = ring.completions()
            counters.events += len(cqes)
            dispatch(cqes)
            if self._accept_paused or self._unfinished or self._idle_timeout_ns:
                self._on_timers()
            if self._snapshot_requested:
                self._take_snapshot()

    def _dispatch(self, cqes: list[tuple[int, int, int]]) -> None:
        """Handle one loop turn's CQEs, oldest first (tests feed it CQEs of their own)."""
        # Flat on purpose, like servers/loop.py's: locals for what every CQE touches, one
        # dict look-up per CQE, the receive path inline (a Python call costs ~0.1 us).
        conns = self._conns
        on_recv = self._on_recv
        on_sent = self._on_sent
        for user_data, res, flags in cqes:
            op = user_data & _OP_MASK
            conn = conns.get(user_data >> _ID_SHIFT)
            if conn is not None:
                try:
                    if op == _RECV:
                        on_recv(conn, res, flags, user_data)
                    elif op == _SEND:
                        on_sent(conn, res)
                except Exception as exc:
                    self._on_connection_error(conn, exc)
            elif user_data == _ACCEPT:
                self._on_accept(res, flags)
            elif user_data == _WAKE:
                self._on_wake(flags)
            elif user_data & _CANCELLATION:
                if res == -errno.EALREADY:
                    # The target was busy posting a CQE and stays armed: again.
                    self._cancel(user_data & ~_CANCELLATION)
            else:
                self._on_stale(user_data, op, res, flags)

    def _on_stale(self, user_data: int, op: int, res: int, flags: int) -> None:
        """A CQE for a connection that has closed: release what the kernel held."""
        if flags & _F_BUFFER and self._buffers is not None:
            self._buffers.give_back(flags >> _BUFFER_SHIFT)
        if op in (_RECV, _SEND) and not flags & _F_MORE:
            self._orphans.pop(user_data, None)

    # -- receiving -----------------------------------------------------------------------

    def _arm_recv(self, conn: Conn) -> None:
        gen = (conn.recv_data >> _OP_BITS) + 1 & _GEN_MASK
        user_data = (conn.id << _GEN_BITS | gen) << _OP_BITS | _RECV
        conn.recv_data = user_data
        if self._buffers is not None:
            self._ring.prep(abi.IORING_OP_RECV, conn.fd, user_data,
                            sqe_flags=abi.IOSQE_BUFFER_SELECT, ioprio=abi.IORING_RECV_MULTISHOT,
                            buf_group=_BUFFER_GROUP)  # fmt: skip
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
        if not flags & _F_MORE and current:
            conn.recv_armed = False
            conn.recv_ending = False
        if res > 0:
            counters.reads += 1
            counters.bytes_in += res
            if flags & _F_BUFFER:
                data = self._buffers.take(flags >> _BUFFER_SHIFT, res)  # type: ignore[union-attr]
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
            if flags & _F_BUFFER and self._buffers is not None:
                self._buffers.give_back(flags >> _BUFFER_SHIFT)
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
        self._ring.prep(abi.IORING_OP_ASYNC_CANCEL, -1, target | _CANCELLATION, addr=target)

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
            conn.id << _ID_SHIFT | _SEND,
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
        if self._output_paused and self._total_out <= self._output_resume_bytes:
            self._resume_after_total_output()
        if conn.paused and conn.out_bytes <= self.config.low_water_bytes:
            if not conn.out_bytes:
                # As servers/loop.py: its client reads what it is sent, so whatever the
                # total, reading it again adds at most one read's reply, and a client that
                # keeps up is not held hostage by the ones that never read.
                self._output_paused.discard(conn)
                self._resume(conn)
            elif conn not in self._output_paused:
                self._resume(conn)

    # -- accepting, waking, closing ------------------------------------------------------

    def _arm_accepts(self, wanted: int) -> None:
        """Keep ``wanted`` single-shot accepts in flight (see the module's docstring)."""
        fd = self.listener.fileno()
        while self._accepts_in_flight < wanted:
            self._ring.prep(abi.IORING_OP_ACCEPT, fd, _ACCEPT)
            self._accepts_in_flight += 1

    def _on_accept(self, res: int, flags: int) -> None:
        self._accepts_in_flight -= 1
        if res >= 0:
            self._on_accepted(res)
        elif -res in OUT_OF_DESCRIPTORS:
            self._pause_accepting(-res)
            return
        elif -res in LISTENER_BROKEN:
            raise ServerFailedError(
                f"the listening socket failed: {errno.errorcode.get(-res)} ({os.strerror(-res)})"
            )
        elif -res == errno.ECANCELED:
            return  # ours: accepting paused
        else:
            self.counters.errors["accept_" + errno.errorcode.get(-res, str(-res))] += 1
        if not self._accept_paused and not self._stopping:
            # More connections wait in the backlog: accept a batch of them per turn.
            self._arm_accepts(ACCEPT_BATCH if flags & abi.IORING_CQE_F_SOCK_NONEMPTY else 1)

    def _on_accepted(self, fd: int) -> None:
        counters = self.counters
        counters.accepts += 1
        if self._accept_failing:
            self._accept_failing = False
            log.warning("accepting again (%d connections open)", len(self._conns))
        family = self.listener.family
        sock = socket.socket(family, socket.SOCK_STREAM, 0, fileno=fd)
        if len(self._conns) >= self._max_connections:
            sock.close()
            counters.errors["over_max_connections"] += 1
            self._over_max_warning.warn(
                f"closing a new connection: {self._max_connections} open (--max-connections)"
            )
            return
        try:
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            sock.close()
            counters.errors["accept_" + error_kind(exc)] += 1
            return
        serial = self._next_serial
        self._next_serial += 1
        conn = Conn(serial, sock, self._new_session(self.config.max_headers))
        self._conns[serial] = conn
        counters.connections_accepted += 1
        counters.connections_open += 1
        self._arm_recv(conn)

    def _pause_accepting(self, err: int) -> None:
        for _ in range(self._accepts_in_flight):
            self._cancel(_ACCEPT)  # each cancellation takes one of them
        self._accepting_paused(errno_kind(err), os.strerror(err))

    def _resume_accepting(self) -> None:
        self._accept_paused = False
        self._arm_accepts(1)

    def _arm_wake(self) -> None:
        self._ring.prep(abi.IORING_OP_POLL_ADD, self._wake_r.fileno(), _WAKE,
                        length=abi.IORING_POLL_ADD_MULTI, op_flags=select.POLLIN)  # fmt: skip
        self._wake_armed = True

    def _on_wake(self, flags: int) -> None:
        self._drain_wake()
        if not flags & _F_MORE:
            self._arm_wake()

    def _close(self, conn: Conn, error: str | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.id]
        conn.out.clear()
        self._forget(conn, error)
        if conn.recv_armed or conn.recv_ending:
            self._stop_reading(conn)
            if conn.buf is not None:
                # The kernel may still write into it (even a cancelled receive, until
                # its final CQE): kept alive until then (_on_stale).
                self._orphans[conn.recv_data] = conn.buf
        if conn.sending is not None:
            target = conn.id << _ID_SHIFT | _SEND
            self._cancel(target)
            self._orphans[target] = conn.sending
        conn.sock.close()
        if self._accept_paused:
            self._resume_accepting()

    def _close_mechanism(self) -> None:
        with contextlib.suppress(OSError):
            # Hand the cancellations over and let them complete before the memory they
            # refer to goes away.
            self._ring.enter(0, 0.0)
            self._ring.completions()
        self._ring.close()
        if self._buffers is not None:
            self._buffers.close()


def _bytearray_address(buffer: bytearray) -> int:
    """The address of a bytearray's storage; it never moves, because it is never resized
    (its length is fixed at creation and only its contents change)."""
    view = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    address = ctypes.addressof(view)
    del view
    return address

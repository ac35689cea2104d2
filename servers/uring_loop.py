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
- Receive and send: :mod:`servers.uring_connection`, with the connection's state.
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
import errno
import logging
import os
import select
import socket
from collections.abc import Callable
from typing import Any

from servers.counters import Counters
from servers.lifecycle import (
    ACCEPT_BATCH,
    LISTENER_BROKEN,
    OUT_OF_DESCRIPTORS,
    ServerConfig,
    ServerFailedError,
    ServerSetupError,
    errno_kind,
    error_kind,
    open_listener,
)
from servers.protocols import SessionFactory
from servers.uring import abi
from servers.uring.buffers import BufferRing
from servers.uring.ring import Ring
from servers.uring_connection import (
    ACCEPT,
    BUFFER_GROUP,
    BUFFER_SHIFT,
    CANCELLATION,
    F_BUFFER,
    F_MORE,
    ID_SHIFT,
    OP_MASK,
    RECV,
    SEND,
    WAKE,
    Conn,
    UringConnections,
)

log = logging.getLogger("muxlab.server")

# Provided buffers of --read-bytes each; only the pages a receive writes are backed by
# memory, so 256 of 64 KiB cost 16 MiB of address space, not of memory.
BUFFER_COUNT = 256
SQ_ENTRIES = 4096
CQ_ENTRIES = 16384


class UringServer(UringConnections):
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
        return BufferRing(self._ring, BUFFER_GROUP, BUFFER_COUNT, self.config.read_bytes)

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
            op = user_data & OP_MASK
            conn = conns.get(user_data >> ID_SHIFT)
            if conn is not None:
                try:
                    if op == RECV:
                        on_recv(conn, res, flags, user_data)
                    elif op == SEND:
                        on_sent(conn, res)
                except Exception as exc:
                    self._on_connection_error(conn, exc)
            elif user_data == ACCEPT:
                self._on_accept(res, flags)
            elif user_data == WAKE:
                self._on_wake(flags)
            elif user_data & CANCELLATION:
                if res == -errno.EALREADY:
                    # The target was busy posting a CQE and stays armed: again.
                    self._cancel(user_data & ~CANCELLATION)
            else:
                self._on_stale(user_data, op, res, flags)

    def _on_stale(self, user_data: int, op: int, res: int, flags: int) -> None:
        """A CQE for a connection that has closed: release what the kernel held."""
        if flags & F_BUFFER and self._buffers is not None:
            self._buffers.give_back(flags >> BUFFER_SHIFT)
        if op in (RECV, SEND) and not flags & F_MORE:
            self._orphans.pop(user_data, None)

    # -- accepting, waking, closing ------------------------------------------------------

    def _arm_accepts(self, wanted: int) -> None:
        """Keep ``wanted`` single-shot accepts in flight (see the module's docstring)."""
        fd = self.listener.fileno()
        while self._accepts_in_flight < wanted:
            self._ring.prep(abi.IORING_OP_ACCEPT, fd, ACCEPT)
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
            self._cancel(ACCEPT)  # each cancellation takes one of them
        self._accepting_paused(errno_kind(err), os.strerror(err))

    def _resume_accepting(self) -> None:
        self._accept_paused = False
        self._arm_accepts(1)

    def _arm_wake(self) -> None:
        self._ring.prep(abi.IORING_OP_POLL_ADD, self._wake_r.fileno(), WAKE,
                        length=abi.IORING_POLL_ADD_MULTI, op_flags=select.POLLIN)  # fmt: skip
        self._wake_armed = True

    def _on_wake(self, flags: int) -> None:
        self._drain_wake()
        if not flags & F_MORE:
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
            target = conn.id << ID_SHIFT | SEND
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

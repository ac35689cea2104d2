"""The event loop every backend shares: wait, dispatch, accept, close; with
:mod:`servers.connection` (read, reply, queue, flush, pause), the whole server.

Fairness is the point of these two modules. A backend (``servers.backends``) only decides
how readiness is registered and waited for; everything done with a ready descriptor is
here, once, so a difference the benchmarks measure comes from the mechanism and nothing else.
The one behaviour that depends on the backend is ``drain``: edge-triggered epoll reports a
descriptor once per change, so with it every read, write and accept is repeated until
``EAGAIN`` (``man 7 epoll``, "Possible pitfalls"); a level-triggered backend does one
``recv``, one ``send`` and one ``accept`` per event and lets the next wait report the rest.

How an ET drain ends (``ServerConfig.et_drain``, ``muxlab serve --et-drain``):

- ``strict``: the textbook rule, every drain ends with the call that returns ``EAGAIN``.
  For an echo request that fits one ``recv`` that is one wasted system call per request.
- ``short-read``: ``epoll(7)``'s own shortcut. On a stream socket a ``recv`` that returns
  fewer bytes than asked means the receive buffer is empty now, so the drain stops there;
  bytes that arrive later wake the descriptor again (a new edge), including bytes that
  arrived between the wait and the ``recv``. Likewise a ``sendmsg`` that takes fewer bytes
  than offered means the send buffer is full: stop and wait for ``EPOLLOUT`` (the kernel
  set ``SOCK_NOSPACE`` and will wake the descriptor when space frees).
  Where it does not hold, the loop keeps the strict rule: ``accept`` has no short result
  (one connection per call), so the listener still drains to ``EAGAIN``; a peer's
  half-close (``EPOLLRDHUP``, asked for in this mode) may sit behind the data of the
  same edge, and a short read would leave the EOF unread with no edge to come, so an
  event flagged ``EPOLLRDHUP``/``EPOLLHUP``/``EPOLLERR`` drains to the end. Not safe
  elsewhere, and not used: with ``SO_RCVLOWAT`` a wake-up means "at least N bytes", not
  "everything"; on a datagram socket one ``recv`` is one message, however short, and
  more may be queued; a backend that cannot report ``EPOLLRDHUP`` (io_uring-poll)
  refuses the mode.

Rules the loop keeps, on every backend:

- Interest in writability is held only while output is pending; otherwise a
  level-triggered wait would report every idle socket as writable on every call.
- Output is sent optimistically, straight from the read handler; only the part the kernel
  did not take is queued and flushed later with one ``sendmsg`` (gather write) per event.
- Backpressure: once a connection's queued output passes ``high_water_bytes`` the loop
  stops reading from it, so a client that sends but never reads cannot grow server memory
  without bound; reading resumes below ``low_water_bytes``.
- ``EMFILE``/``ENFILE`` on accept pauses accepting, and a client's failure ends at most
  its own connection: both as every loop does (:mod:`servers.lifecycle`). Only a failure
  of the listener or of the backend's wait stops the server (:class:`ServerFailedError`).
- Limits a hostile client cannot talk its way past: ``max_connections`` (accepted and
  closed at once past it, never left in the backlog), ``max_output_bytes`` for the queued
  output of all connections together, a header timeout (408) and an optional idle
  timeout, and for ET an optional per-event read budget so one flooding client cannot
  starve the others.
- Timers cost nothing per request (the coarse sweep of :mod:`servers.lifecycle`).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from servers.backends import (
    ERROR,
    READ,
    WRITE,
    Backend,
    DescriptorCeilingError,
    create_backend,
)
from servers.connection import Connection, ConnectionHandlers
from servers.counters import Counters
from servers.lifecycle import (
    ACCEPT_BATCH,
    ET_DRAINS,
    LISTENER_BROKEN,
    OUT_OF_DESCRIPTORS,
    EtDrain,
    RateLimitedWarning,
    ServerConfig,
    ServerFailedError,
    ServerSetupError,
    error_kind,
    exception_kind,
    open_listener,
)
from servers.protocols import SessionFactory

# The configuration and the two failures are part of this module's face (the lab guide
# and notebooks import them from here); they are defined with the shared lifecycle, and
# the connection record with the request path (servers/connection.py).
__all__ = [
    "ET_DRAINS",
    "Connection",
    "EtDrain",
    "Server",
    "ServerConfig",
    "ServerFailedError",
    "ServerSetupError",
]

log = logging.getLogger("muxlab.server")


class Server(ConnectionHandlers):
    """One listening socket, one backend, one protocol, one thread."""

    def __init__(
        self,
        config: ServerConfig,
        backend: Backend | None = None,
        listener: socket.socket | None = None,
        on_snapshot: Callable[[dict[str, Any]], None] | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        self._init_lifecycle(config, on_snapshot, session_factory)
        self.backend = backend if backend is not None else create_backend(config.backend)
        self.listener = listener or open_listener(config.host, config.port, config.backlog)
        self.listener.setblocking(False)
        self.counters = Counters()
        self.backend.count_into(self.counters)
        self._drain = self.backend.edge_triggered
        self._short_read = config.et_drain == "short-read"
        if self._short_read:
            if not self.backend.short_read_drain:
                raise ServerSetupError(
                    f"--et-drain short-read needs an edge-triggered backend that reports "
                    f"EPOLLRDHUP (epoll-et), not {self.backend.name}"
                )
            self.backend.watch_read_hangup()
        self._read_bytes = config.read_bytes
        self._high_water_bytes = config.high_water_bytes
        self._max_headers = config.max_headers
        self._max_output_bytes = config.max_output_bytes
        # ET read budget: connections stopped mid-drain, served on the next loop turn.
        self._read_budget = config.et_read_budget_bytes or sys.maxsize
        self._still_readable: list[Connection] = []
        self._listen_fd = self.listener.fileno()
        self._ceiling_warning = RateLimitedWarning()
        self._open_wake_pair()
        self.backend.register(self._listen_fd, READ)
        self.backend.register(self._wake_r.fileno(), READ)

    def _loop(self) -> None:
        # The hot loop is flat on purpose: locals instead of attribute look-ups, one dict
        # look-up per event, handlers called directly. Every backend runs this same code.
        # The try around each connection's handlers costs nothing until something raises
        # (CPython 3.11 "zero-cost" exceptions); what it catches ends that connection only.
        backend = self.backend
        counters = self.counters
        conns = self._conns
        listen_fd = self._listen_fd
        wake_fd = self._wake_r.fileno()
        on_readable = self._on_readable
        on_writable = self._on_writable
        readable_mask = READ | ERROR
        idle_timeout = self._idle_timeout_ns
        # How long the next wait may block: computed only at the end of a turn on which
        # something is timed (a paused accept, an unfinished request, the idle timeout) or
        # left to read; otherwise forever. Asking on every turn cost two calls per turn.
        timeout_s = self._wait_timeout_s()
        while not self._stopping:
            try:
                events = backend.wait(timeout_s)
            except OSError as exc:
                raise ServerFailedError(
                    f"{backend.name} wait failed: {error_kind(exc)} ({exc.strerror})"
                ) from exc
            counters.wait_calls += 1
            counters.events += len(events)
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is not None:
                    try:
                        if ev & readable_mask:
                            on_readable(conn, ev)
                        if ev & WRITE and not conn.closed:
                            on_writable(conn)
                    except Exception as exc:
                        self._on_connection_error(conn, exc)
                elif fd == listen_fd:
                    self._on_acceptable()
                elif fd == wake_fd:
                    self._drain_wake()
            timeout_s = None
            if self._still_readable:
                self._serve_still_readable()
            if self._accept_paused or self._unfinished or idle_timeout:
                self._on_timers()
                timeout_s = self._wait_timeout_s()
            if self._still_readable:
                timeout_s = 0.0  # served on the next turn, after the others
            if self._snapshot_requested:
                self._take_snapshot()

    def _serve_still_readable(self) -> None:
        """ET connections whose read budget ran out last turn: read them again now, after
        everyone the last wait reported had a turn."""
        batch = self._still_readable
        self._still_readable = []
        for conn in batch:
            if conn.closed:
                continue
            try:
                self._on_readable(conn, READ)
            except Exception as exc:
                self._on_connection_error(conn, exc)

    # -- accepting and closing (reading and writing: servers/connection.py) ---------------

    def _on_acceptable(self) -> None:
        # ET must accept until EAGAIN or the rest of a burst waits for the next connection.
        # LT could stop after one, but then a burst of N connections costs N waits, and with
        # select or poll each wait scans every descriptor: ramping up 10,000 connections
        # takes seconds and clients time out. So LT accepts a bounded batch per event, as
        # asyncio does (its backlog, 100) and libevent's listener does.
        # --et-drain short-read does not apply here: accept(2) returns one connection per
        # call, never a "short" result that would say the backlog is empty.
        counters = self.counters
        first = budget = -1 if self._drain else ACCEPT_BATCH
        while budget:
            budget -= 1
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                counters.accepts_eagain += 1
                if budget == first - 1:
                    counters.accept_wakeups_empty += 1
                return
            except OSError as exc:
                if exc.errno in OUT_OF_DESCRIPTORS:
                    self._pause_accepting(exc)
                    return
                if exc.errno in LISTENER_BROKEN:
                    raise ServerFailedError(
                        f"the listening socket failed: {error_kind(exc)} ({exc.strerror})"
                    ) from exc
                # ECONNABORTED, EPROTO, ...: that client gave up; the listener is fine.
                counters.errors["accept_" + error_kind(exc)] += 1
                continue
            counters.accepts += 1
            if self._accept_failing:
                self._accept_failing = False
                log.warning("accepting again (%d connections open)", len(self._conns))
            if len(self._conns) >= self._max_connections:
                # Accept and close at once: a refused client learns it now, instead of
                # waiting in the backlog until its own timeout.
                sock.close()
                counters.errors["over_max_connections"] += 1
                self._over_max_warning.warn(
                    f"closing a new connection: {self._max_connections} open (--max-connections)"
                )
                continue
            self._add_connection(sock)

    def _add_connection(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fd = sock.fileno()
            self.backend.register(fd, READ)
        except DescriptorCeilingError as exc:
            sock.close()
            self.counters.errors["fd_over_ceiling"] += 1
            self._ceiling_warning.warn(f"closing a new connection: {exc}")
            return
        except Exception as exc:
            # ENOMEM or ENOSPC from epoll_ctl (max_user_watches), or anything else: that
            # connection is refused, its socket closed, and the server goes on.
            sock.close()
            kind = "accept_" + exception_kind(exc)
            self.counters.errors[kind] += 1
            self._errors_log.report(kind, "closed a new connection it could not watch", exc)
            return
        self._conns[fd] = Connection(sock, fd, self._new_session(self._max_headers))
        self.counters.connections_accepted += 1
        self.counters.connections_open += 1

    def _pause_accepting(self, exc: OSError) -> None:
        self._change_listener_interest(self.backend.unregister)
        self._accepting_paused(error_kind(exc), exc.strerror or "")

    def _resume_accepting(self) -> None:
        self._accept_paused = False
        # Registering re-checks readiness, so a backlog that filled meanwhile is reported
        # at once, even edge-triggered.
        self._change_listener_interest(lambda fd: self.backend.register(fd, READ))

    def _change_listener_interest(self, change: Callable[[int], None]) -> None:
        """The listener's registration failing is the backend failing: stop the server."""
        try:
            change(self._listen_fd)
        except OSError as exc:
            raise ServerFailedError(
                f"{self.backend.name} could not watch the listener: "
                f"{error_kind(exc)} ({exc.strerror})"
            ) from exc

    def _close(self, conn: Connection, error: str | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.fd]
        conn.out.clear()
        self._forget(conn, error)
        try:
            self.backend.unregister(conn.fd)
        except (OSError, KeyError, ValueError) as exc:
            # Closing the descriptor below removes it from any epoll set anyway.
            self.counters.errors["unregister_" + exception_kind(exc)] += 1
        conn.sock.close()
        if self._accept_paused:
            self._resume_accepting()

    def _close_mechanism(self) -> None:
        self.backend.close()

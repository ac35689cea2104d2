"""The event loop every backend shares: accept, read, write, buffer, close.

Fairness is the point of this module. A backend (``servers.backends``) only decides how
readiness is registered and waited for; everything done with a ready descriptor is here,
once, so a difference the benchmarks measure comes from the mechanism and nothing else.
The one behaviour that depends on the backend is ``drain``: edge-triggered epoll reports a
descriptor once per change, so with it every read, write and accept is repeated until
``EAGAIN`` (``man 7 epoll``, "Possible pitfalls"); a level-triggered backend does one
``recv``, one ``send`` and one ``accept`` per event and lets the next wait report the rest.

Rules the loop keeps, on every backend:

- Interest in writability is held only while output is pending; otherwise a
  level-triggered wait would report every idle socket as writable on every call.
- Output is sent optimistically, straight from the read handler; only the part the kernel
  did not take is queued and flushed later with one ``sendmsg`` (gather write) per event.
- Backpressure: once a connection's queued output passes ``high_water_bytes`` the loop
  stops reading from it, so a client that sends but never reads cannot grow server memory
  without bound; reading resumes below ``low_water_bytes``.
- ``EMFILE``/``ENFILE`` on accept pauses accepting (no busy loop, one log line) and retries
  when a connection closes or after ``ACCEPT_RETRY_S``.
- A client's behaviour (reset, half-close, garbage) ends at most its own connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from servers.backends import (
    ERROR,
    READ,
    WRITE,
    Backend,
    BackendName,
    DescriptorCeilingError,
    create_backend,
)
from servers.counters import Counters
from servers.protocols import PROTOCOLS, ProtocolName, Session

log = logging.getLogger("muxlab.server")

ACCEPT_RETRY_S = 0.1
ACCEPT_BATCH = 64  # accepts per readiness event under LT; ET drains the backlog
# sendmsg(2) takes at most IOV_MAX (1024 on Linux) buffers per call.
MAX_IOVECS = 1024
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class ServerConfig:
    backend: BackendName = "epoll-lt"
    protocol: ProtocolName = "echo"
    host: str = "127.0.0.1"
    port: int = 0
    backlog: int = 4096
    read_bytes: int = 65536
    high_water_bytes: int = 1 << 20
    low_water_bytes: int = 256 * 1024


class ServerSetupError(RuntimeError):
    """The server could not start: address in use, unresolvable host, and so on."""


class Connection:
    """Per-connection state. ``recv``, ``send`` and ``feed`` are bound once, here, because
    looking a method up costs about as much per request as the counters do."""

    __slots__ = (
        "closed", "eof", "fd", "feed", "interest", "out", "out_bytes", "paused", "recv",
        "send", "session", "sock",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, fd: int, session: Session) -> None:
        self.sock = sock
        self.fd = fd
        self.session = session
        self.recv = sock.recv
        self.send = sock.send
        self.feed = session.data_received
        self.out: deque[bytes | memoryview] = deque()
        self.out_bytes = 0
        self.interest = READ
        self.paused = False  # reading stopped by backpressure
        self.eof = False  # peer will send no more, or the protocol wants no more
        self.closed = False


class RateLimitedWarning:
    """A warning logged at most once per ``interval_s``, with the count it stood for."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval_ns = int(interval_s * 1e9)
        self._next_ns = 0
        self._suppressed = 0

    def warn(self, message: str) -> None:
        now = time.monotonic_ns()
        if now < self._next_ns:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" ({self._suppressed} more since the last warning)"
        log.warning(message)
        self._suppressed = 0
        self._next_ns = now + self._interval_ns


def open_listener(host: str, port: int, backlog: int) -> socket.socket:
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.create_server(address, family=family, backlog=backlog)
    except socket.gaierror as exc:
        raise ServerSetupError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    except OSError as exc:
        raise ServerSetupError(
            f"cannot listen on {host}:{port}: {os.strerror(exc.errno or 0)}"
        ) from None
    listener.setblocking(False)
    return listener


def error_kind(exc: OSError) -> str:
    """A stable counter name for an OS error: ``ECONNRESET``, ``EPIPE``, ..."""
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


class Server:
    """One listening socket, one backend, one protocol, one thread."""

    def __init__(
        self,
        config: ServerConfig,
        backend: Backend | None = None,
        listener: socket.socket | None = None,
        on_snapshot: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config
        self._on_snapshot = on_snapshot
        self.backend = backend if backend is not None else create_backend(config.backend)
        self.listener = listener or open_listener(config.host, config.port, config.backlog)
        self.listener.setblocking(False)
        self.counters = Counters()
        self._new_session = PROTOCOLS[config.protocol]
        self._drain = self.backend.edge_triggered
        self._read_bytes = config.read_bytes
        self._high_water_bytes = config.high_water_bytes
        self._conns: dict[int, Connection] = {}
        self._listen_fd = self.listener.fileno()
        self._accept_paused = False
        self._accept_failing = False  # an EMFILE episode is logged once, at its start
        self._accept_retry_ns = 0
        self._ceiling_warning = RateLimitedWarning()
        self._stopping = False
        self._snapshot_requested = False
        # Another thread or a signal handler wakes a blocked wait through this pair.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.backend.register(self._listen_fd, READ)
        self.backend.register(self._wake_r.fileno(), READ)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def request_stop(self) -> None:
        """Make :meth:`run` return soon; safe from another thread or a signal handler."""
        self._stopping = True
        self._wake()

    def request_snapshot(self) -> None:
        """Pass a counters snapshot to ``on_snapshot`` once the current batch of events is
        handled; safe from a signal handler. Taking it between batches, never in the middle
        of a request, keeps it consistent: a reply the client has seen is counted. It costs
        one extra wait call, the one the wake-up causes."""
        self._snapshot_requested = True
        self._wake()

    def _wake(self) -> None:
        # A full or closed pair means the loop is already waking, or gone: fine either way.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def run(self) -> None:
        try:
            self._loop()
        finally:
            self._close_all()

    def _loop(self) -> None:
        # The hot loop is flat on purpose: locals instead of attribute look-ups, one dict
        # look-up per event, handlers called directly. Every backend runs this same code.
        backend = self.backend
        counters = self.counters
        conns = self._conns
        listen_fd = self._listen_fd
        wake_fd = self._wake_r.fileno()
        on_readable = self._on_readable
        on_writable = self._on_writable
        readable_mask = READ | ERROR
        while not self._stopping:
            events = backend.wait(self._wait_timeout_s())
            counters.wait_calls += 1
            counters.events += len(events)
            for fd, ev in events:
                conn = conns.get(fd)
                if conn is not None:
                    if ev & readable_mask:
                        on_readable(conn, ev)
                    if ev & WRITE and not conn.closed:
                        on_writable(conn)
                elif fd == listen_fd:
                    self._on_acceptable()
                elif fd == wake_fd:
                    self._drain_wake()
            if self._accept_paused and time.monotonic_ns() >= self._accept_retry_ns:
                self._resume_accepting()
            if self._snapshot_requested:
                self._snapshot_requested = False
                if self._on_snapshot is not None:
                    self._on_snapshot(counters.snapshot())

    def _wait_timeout_s(self) -> float | None:
        if not self._accept_paused:
            return None
        return max(0.0, (self._accept_retry_ns - time.monotonic_ns()) / 1e9)

    # -- reading -------------------------------------------------------------------------

    def _on_readable(self, conn: Connection, ev: int) -> None:
        # The request path: recv, protocol, optimistic send. It is one function, not three,
        # because a Python call costs about 0.1 us and a request here costs about 5 us.
        if conn.paused and not ev & ERROR:
            return  # a stale event from before the pause; ERROR/HUP still gets read below
        counters = self.counters
        recv = conn.recv
        read_bytes = self._read_bytes
        while True:
            try:
                data = recv(read_bytes)
            except BlockingIOError:
                counters.reads_eagain += 1
                return
            except OSError as exc:
                self._close(conn, error_kind(exc))
                return
            counters.reads += 1
            if not data:
                self._on_eof(conn)
                return
            counters.bytes_in += len(data)
            reply = conn.feed(data)
            if reply:
                if conn.out_bytes:
                    self._enqueue(conn, reply)  # keep order behind what is queued
                else:
                    try:
                        sent = conn.send(reply)
                    except BlockingIOError:
                        counters.writes_eagain += 1
                        sent = 0
                    except OSError as exc:
                        self._close(conn, error_kind(exc))
                        return
                    else:
                        counters.writes += 1
                        counters.bytes_out += sent
                    if sent < len(reply):
                        self._queue_unsent(conn, reply, sent)
            if conn.session.wants_close:
                self._on_eof(conn)
                return
            if conn.out_bytes > self._high_water_bytes:
                self._pause_reading(conn)
                return
            if not self._drain:
                return

    def _on_eof(self, conn: Connection) -> None:
        conn.eof = True
        if conn.out_bytes:
            self._update_interest(conn)  # finish sending what is queued, then close
        else:
            self._close(conn)

    def _pause_reading(self, conn: Connection) -> None:
        conn.paused = True
        self.counters.read_pauses += 1
        self._update_interest(conn)

    # -- writing -------------------------------------------------------------------------

    def _queue_unsent(self, conn: Connection, data: bytes, sent: int) -> None:
        """The kernel took ``sent`` bytes of ``data``: queue the rest, ask for writability."""
        if sent:
            self.counters.partial_writes += 1
        self._enqueue(conn, memoryview(data)[sent:] if sent else data)
        self._update_interest(conn)

    def _enqueue(self, conn: Connection, data: bytes | memoryview) -> None:
        conn.out.append(data)
        conn.out_bytes += len(data)
        if conn.out_bytes > self.counters.peak_output_bytes:
            self.counters.peak_output_bytes = conn.out_bytes

    def _on_writable(self, conn: Connection) -> None:
        counters = self.counters
        out = conn.out
        while out:
            try:
                sent = conn.sock.sendmsg(_head(out, MAX_IOVECS))
            except BlockingIOError:
                counters.writes_eagain += 1
                break
            except OSError as exc:
                self._close(conn, error_kind(exc))
                return
            counters.writes += 1
            counters.bytes_out += sent
            conn.out_bytes -= sent
            _consume(out, sent)
            if out:
                counters.partial_writes += 1
            if not self._drain:
                break
        if not out and conn.eof:
            self._close(conn)
            return
        if conn.paused and conn.out_bytes <= self.config.low_water_bytes:
            conn.paused = False
        self._update_interest(conn)

    def _update_interest(self, conn: Connection) -> None:
        """The one place interest changes: read unless paused or done, write while queued."""
        wanted = 0 if conn.paused or conn.eof else READ
        if conn.out_bytes:
            wanted |= WRITE
        if wanted != conn.interest:
            conn.interest = wanted
            self.backend.modify(conn.fd, wanted)

    # -- accepting and closing -----------------------------------------------------------

    def _on_acceptable(self) -> None:
        # ET must accept until EAGAIN or the rest of a burst waits for the next connection.
        # LT could stop after one, but then a burst of N connections costs N waits, and with
        # select or poll each wait scans every descriptor: ramping up 10,000 connections
        # takes seconds and clients time out. So LT accepts a bounded batch per event, as
        # asyncio does (its backlog, 100) and libevent's listener does.
        counters = self.counters
        budget = -1 if self._drain else ACCEPT_BATCH
        while budget:
            budget -= 1
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                counters.accepts_eagain += 1
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._pause_accepting(exc)
                    return
                # ECONNABORTED, EPROTO, ...: that client gave up; the listener is fine.
                counters.errors["accept_" + error_kind(exc)] += 1
                continue
            counters.accepts += 1
            if self._accept_failing:
                self._accept_failing = False
                log.warning("accepting again (%d connections open)", len(self._conns))
            self._add_connection(sock)

    def _add_connection(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        fd = sock.fileno()
        try:
            self.backend.register(fd, READ)
        except DescriptorCeilingError as exc:
            sock.close()
            self.counters.errors["fd_over_ceiling"] += 1
            self._ceiling_warning.warn(f"closing a new connection: {exc}")
            return
        self._conns[fd] = Connection(sock, fd, self._new_session())
        self.counters.connections_accepted += 1
        self.counters.connections_open += 1

    def _pause_accepting(self, exc: OSError) -> None:
        self.backend.unregister(self._listen_fd)
        self._accept_paused = True
        self._accept_retry_ns = time.monotonic_ns() + int(ACCEPT_RETRY_S * 1e9)
        if self._accept_failing:
            return
        self._accept_failing = True
        self.counters.errors["accept_" + error_kind(exc)] += 1
        log.warning(
            "accept failed (%s: %s); not accepting until a descriptor is freed "
            "(%d connections open)",
            error_kind(exc),
            exc.strerror,
            len(self._conns),
        )

    def _resume_accepting(self) -> None:
        self._accept_paused = False
        # Registering re-checks readiness, so a backlog that filled meanwhile is reported
        # at once, even edge-triggered.
        self.backend.register(self._listen_fd, READ)

    def _close(self, conn: Connection, error: str | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.fd]
        self.backend.unregister(conn.fd)
        conn.sock.close()
        conn.out.clear()
        self.counters.connections_closed += 1
        self.counters.connections_open -= 1
        if error is not None:
            self.counters.errors[error] += 1
        if self._accept_paused:
            self._resume_accepting()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _close_all(self) -> None:
        self._accept_paused = False
        for conn in list(self._conns.values()):
            self._close(conn)
        self.backend.close()
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()


def _head(out: deque[bytes | memoryview], limit: int) -> list[bytes | memoryview]:
    if len(out) <= limit:
        return list(out)
    return [out[i] for i in range(limit)]


def _consume(out: deque[bytes | memoryview], sent: int) -> None:
    """Drop ``sent`` bytes from the front of the queue, slicing a partly sent buffer."""
    while sent:
        head = out[0]
        if len(head) <= sent:
            sent -= len(head)
            out.popleft()
        else:
            out[0] = memoryview(head)[sent:]
            return

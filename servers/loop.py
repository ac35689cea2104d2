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
- A client's behaviour (reset, half-close, garbage, a request that makes the protocol
  raise, an errno nobody expected) ends at most its own connection: any exception raised
  while handling one connection closes it, is counted under ``errors`` by kind and logged
  (its traceback once per kind, then rate-limited). Only a failure of the listener or of
  the backend's wait stops the server (:class:`ServerFailedError`).
- Limits a hostile client cannot talk its way past: ``max_connections`` (accepted and
  closed at once past it, never left in the backlog), ``max_output_bytes`` for the queued
  output of all connections together, a header timeout (408) and an optional idle
  timeout, and for ET an optional per-event read budget so one flooding client cannot
  starve the others.
- Timers cost nothing per request: no deadline is pushed per request. A coarse sweep runs
  at most every ``SWEEP_PERIOD_MAX_S`` and only while something can time out; the wait is
  bounded only then (see :meth:`Server._sweep`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from muxlab.limits import listen_backlog
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
from servers.protocols import PROTOCOLS, ProtocolName, Session, SessionFactory

log = logging.getLogger("muxlab.server")

ACCEPT_RETRY_S = 0.1
ACCEPT_BATCH = 64  # accepts per readiness event under LT; ET drains the backlog
# sendmsg(2) takes at most IOV_MAX (1024 on Linux) buffers per call.
MAX_IOVECS = 1024
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept(2) errors that mean the listening socket itself is broken, not one client.
_LISTENER_BROKEN = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK, errno.EOPNOTSUPP})
# Descriptors kept free past --max-connections' default: the listener, the wake-up pair,
# the epoll object, stdio, and room to accept-and-close one connection over the cap.
FD_RESERVE = 32
# The sweep that enforces timeouts runs every timeout/10, within these bounds (seconds):
# coarse on purpose, a timeout fires between T and T + 2 periods after its start.
SWEEP_PERIOD_MIN_S = 0.05
SWEEP_PERIOD_MAX_S = 1.0
# struct tcp_info (linux/tcp.h): tcpi_last_data_sent and tcpi_last_data_recv, in ms,
# are u32 at byte offsets 44 and 52; reading them costs the sweep one getsockopt per
# connection and the request path nothing.
_TCP_INFO_BYTES = 104
_TCP_LAST_DATA_SENT_OFFSET = 44
_TCP_LAST_DATA_RECV_OFFSET = 52


@dataclass(frozen=True)
class ServerConfig:
    backend: BackendName = "epoll-lt"
    protocol: ProtocolName = "echo"
    host: str = "127.0.0.1"
    port: int = 0
    # net.core.somaxconn, read at start: the longest accept queue the kernel grants.
    backlog: int = field(default_factory=listen_backlog)
    read_bytes: int = 65536
    high_water_bytes: int = 1 << 20
    low_water_bytes: int = 256 * 1024
    max_headers: int = 100
    # A request whose head (or skipped body) is still incomplete this long after it began
    # gets 408 and a close; None: no limit. nginx: client_header_timeout 60 s.
    header_timeout_s: float | None = 10.0
    # A connection with no data either way for this long is closed; None (the default):
    # never, because idle connections are what the lab measures. nginx's
    # keepalive_timeout is 75 s.
    idle_timeout_s: float | None = None
    # None: the descriptor budget, RLIMIT_NOFILE minus FD_RESERVE.
    max_connections: int | None = None
    max_output_bytes: int = 256 << 20
    # Bytes read from one connection per event under ET; None: drain to EAGAIN.
    et_read_budget_bytes: int | None = None


class ServerSetupError(RuntimeError):
    """The server could not start: address in use, unresolvable host, and so on."""


class ServerFailedError(RuntimeError):
    """The listener or the backend failed: the server cannot go on (one-line reason)."""


class Connection:
    """Per-connection state. ``recv``, ``send`` and ``feed`` are bound once, here, because
    looking a method up costs about as much per request as the counters do."""

    __slots__ = (
        "closed", "eof", "fd", "feed", "interest", "mark_ns", "mark_seq", "out", "out_bytes",
        "paused", "recv", "send", "session", "sock",
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
        # Which unfinished request the timeout sweep saw last, and when (monotonic ns).
        self.mark_seq = -1
        self.mark_ns = 0


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


def exception_kind(exc: BaseException) -> str:
    """The counter name for any exception: the errno name for an OS error, else
    ``exception_<type>`` (``exception_ValueError``)."""
    if isinstance(exc, OSError) and exc.errno:
        return error_kind(exc)
    return "exception_" + type(exc).__name__


def descriptor_budget() -> int:
    """Connections the process can hold: the soft RLIMIT_NOFILE minus ``FD_RESERVE``."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return sys.maxsize
    return max(1, soft - FD_RESERVE)


def sweep_period_ns(*timeouts_ns: int) -> int:
    """A tenth of the shortest timeout that is on, within the sweep's bounds."""
    shortest = min((t for t in timeouts_ns if t), default=0)
    low, high = int(SWEEP_PERIOD_MIN_S * 1e9), int(SWEEP_PERIOD_MAX_S * 1e9)
    return min(max(shortest // 10, low), high)


def tcp_idle_ms(sock: socket.socket) -> int | None:
    """Milliseconds since data last went either way on ``sock`` (``tcp(7)``, TCP_INFO), or
    ``None`` when the kernel cannot say (not a TCP socket)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES)
    except OSError:
        return None
    if len(info) < _TCP_LAST_DATA_RECV_OFFSET + 4:
        return None
    (sent_ms,) = struct.unpack_from("=I", info, _TCP_LAST_DATA_SENT_OFFSET)
    (recv_ms,) = struct.unpack_from("=I", info, _TCP_LAST_DATA_RECV_OFFSET)
    idle_ms: int = min(sent_ms, recv_ms)
    return idle_ms


class ErrorLog:
    """Logs failures by kind: the first of a kind with its traceback, later ones as
    rate-limited one-liners, so a hostile client cannot flood the log."""

    def __init__(self) -> None:
        self._seen: dict[str, RateLimitedWarning] = {}

    def report(self, kind: str, what: str, exc: BaseException) -> None:
        detail = str(exc)[:200]
        warning = self._seen.get(kind)
        if warning is None:
            self._seen[kind] = RateLimitedWarning()
            log.error("%s (%s): %s; later ones are logged without traceback", what, kind,
                      detail, exc_info=exc)  # fmt: skip
        else:
            warning.warn(f"{what} ({kind}): {detail}")


class Server:
    """One listening socket, one backend, one protocol, one thread."""

    def __init__(
        self,
        config: ServerConfig,
        backend: Backend | None = None,
        listener: socket.socket | None = None,
        on_snapshot: Callable[[dict[str, Any]], None] | None = None,
        session_factory: SessionFactory | None = None,
    ) -> None:
        # ``session_factory`` replaces the protocol's sessions (tests: a session that
        # raises, to prove one connection's failure stays with it).
        self.config = config
        self._on_snapshot = on_snapshot
        self.backend = backend if backend is not None else create_backend(config.backend)
        self.listener = listener or open_listener(config.host, config.port, config.backlog)
        self.listener.setblocking(False)
        self.counters = Counters()
        self.backend.count_into(self.counters)
        self._new_session = session_factory or PROTOCOLS[config.protocol]
        self._drain = self.backend.edge_triggered
        self._read_bytes = config.read_bytes
        self._high_water_bytes = config.high_water_bytes
        self._max_headers = config.max_headers
        self._conns: dict[int, Connection] = {}
        self._max_connections = (
            config.max_connections if config.max_connections is not None else descriptor_budget()
        )
        self._over_max_warning = RateLimitedWarning()
        self._errors_log = ErrorLog()
        # The server-wide output bound: the queued bytes of all connections, and the
        # connections paused because of it (not because of their own high-water mark).
        self._total_out = 0
        self._max_output_bytes = config.max_output_bytes
        self._output_resume_bytes = config.max_output_bytes * 3 // 4
        self._output_paused: set[Connection] = set()
        # ET read budget: connections stopped mid-drain, served on the next loop turn.
        self._read_budget = config.et_read_budget_bytes or sys.maxsize
        self._still_readable: list[Connection] = []
        # Timeouts, enforced by a coarse sweep (see _sweep); 0 means off.
        self._header_timeout_ns = int((config.header_timeout_s or 0) * 1e9)
        self._idle_timeout_ns = int((config.idle_timeout_s or 0) * 1e9)
        self._unfinished: set[Connection] = set()
        self._sweep_period_ns = sweep_period_ns(self._header_timeout_ns, self._idle_timeout_ns)
        self._next_sweep_ns = 0
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
        """Serve until :meth:`request_stop`. Raises :class:`ServerFailedError` when the
        listener or the backend fails; one connection's failure never gets here."""
        try:
            self._loop()
        finally:
            self._close_all()

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
        while not self._stopping:
            try:
                events = backend.wait(self._wait_timeout_s())
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
            if self._still_readable:
                self._serve_still_readable()
            if self._accept_paused or self._unfinished or idle_timeout:
                self._on_timers()
            if self._snapshot_requested:
                self._snapshot_requested = False
                if self._on_snapshot is not None:
                    self._on_snapshot(counters.snapshot())

    def _wait_timeout_s(self) -> float | None:
        """How long the next wait may block: forever unless something is due."""
        if self._still_readable:
            return 0.0
        deadline_ns: int | None = None
        if self._accept_paused:
            deadline_ns = self._accept_retry_ns
        if self._unfinished or self._idle_timeout_ns:
            sweep_ns = self._next_sweep_ns
            deadline_ns = sweep_ns if deadline_ns is None else min(deadline_ns, sweep_ns)
        if deadline_ns is None:
            return None
        return max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9)

    def _on_connection_error(self, conn: Connection, exc: Exception) -> None:
        """Whatever one connection's handling raised ends that connection, not the server;
        except the listener or the backend failing on the way (closing a connection
        resumes accepting, for one), which stops it."""
        if isinstance(exc, ServerFailedError):
            raise exc
        kind = exception_kind(exc)
        if conn.closed:
            self.counters.errors[kind] += 1
        else:
            self._close(conn, kind)
        self._errors_log.report(kind, f"closed connection fd {conn.fd} after an error", exc)

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

    # -- reading -------------------------------------------------------------------------

    def _on_readable(self, conn: Connection, ev: int) -> None:
        # The request path: recv, protocol, optimistic send. It is one function, not three,
        # because a Python call costs about 0.1 us and a request here costs about 5 us.
        if conn.paused and not ev & ERROR:
            return  # a stale event from before the pause; ERROR/HUP still gets read below
        counters = self.counters
        recv = conn.recv
        read_bytes = self._read_bytes
        budget = self._read_budget
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
            if conn.session.attention:
                if conn.session.wants_close:
                    self._on_eof(conn)
                    return
                if self._header_timeout_ns:
                    self._unfinished.add(conn)
            if conn.out_bytes and self._over_output_bound(conn):
                return
            if not self._drain:
                return
            budget -= len(data)
            if budget <= 0:
                counters.read_budget_stops += 1
                self._still_readable.append(conn)
                return

    def _over_output_bound(self, conn: Connection) -> bool:
        """Pause reading when this connection's queue or everyone's passes its bound."""
        if self._total_out > self._max_output_bytes:
            if not self._output_paused:
                self._pause_for_total_output()
            elif not conn.paused:  # engaged already: only this newcomer needs pausing
                self._pause_for_output(conn)
            return True
        if conn.out_bytes > self._high_water_bytes:
            self._pause_reading(conn)
            return True
        return False

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

    def _pause_for_total_output(self) -> None:
        """Past ``max_output_bytes`` in total, stop reading every connection that holds
        queued output: those are the ones with the most (the others hold none), and the
        only ones whose replies are not leaving. Reading resumes once the total is below
        3/4 of the bound, or, for one connection, once its own queue is empty."""
        for conn in self._conns.values():
            if conn.out_bytes and not conn.paused:
                self._pause_for_output(conn)

    def _pause_for_output(self, conn: Connection) -> None:
        self.counters.output_pauses += 1
        conn.paused = True
        self._output_paused.add(conn)
        self._update_interest(conn)

    def _resume_after_total_output(self) -> None:
        low_water = self.config.low_water_bytes
        for conn in self._output_paused:
            if not conn.closed and conn.paused and conn.out_bytes <= low_water:
                conn.paused = False
                self._update_interest(conn)
        self._output_paused.clear()

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
        self._total_out += len(data)
        counters = self.counters
        if conn.out_bytes > counters.peak_output_bytes:
            counters.peak_output_bytes = conn.out_bytes
        if self._total_out > counters.peak_total_output_bytes:
            counters.peak_total_output_bytes = self._total_out

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
            self._total_out -= sent
            _consume(out, sent)
            if out:
                counters.partial_writes += 1
            if not self._drain:
                break
        if not out and conn.eof:
            self._close(conn)
            return
        if self._output_paused and self._total_out <= self._output_resume_bytes:
            self._resume_after_total_output()
        if conn.paused and conn.out_bytes <= self.config.low_water_bytes:
            if not conn.out_bytes:
                # Its client reads what it is sent: whatever the total, reading it again
                # adds at most one read's reply, and a client that keeps up is not held
                # hostage by the ones that never read.
                self._output_paused.discard(conn)
                conn.paused = False
            elif conn not in self._output_paused:
                conn.paused = False
        self._update_interest(conn)

    def _update_interest(self, conn: Connection) -> None:
        """The one place interest changes: read unless paused or done, write while queued."""
        wanted = 0 if conn.paused or conn.eof else READ
        if conn.out_bytes:
            wanted |= WRITE
        if wanted != conn.interest:
            self.backend.modify(conn.fd, wanted)
            conn.interest = wanted  # recorded once the kernel accepted it

    # -- timeouts ------------------------------------------------------------------------

    def _on_timers(self) -> None:
        now = time.monotonic_ns()
        if self._accept_paused and now >= self._accept_retry_ns:
            self._resume_accepting()
        if (self._unfinished or self._idle_timeout_ns) and now >= self._next_sweep_ns:
            self._next_sweep_ns = now + self._sweep_period_ns
            self._sweep(now)

    def _sweep(self, now_ns: int) -> None:
        """Enforce the timeouts without a timer per request.

        Header timeout: the request path only adds a connection to ``_unfinished`` when a
        read leaves part of a request behind. The sweep notes which unfinished request it
        saw (the session's ``partial_seq``) and when; if the same one is still unfinished
        ``header_timeout`` later, the client gets 408 and the connection closes. Idle
        timeout: the kernel keeps when data last went either way (TCP_INFO), so the sweep
        asks it, and the request path records nothing.
        """
        header_timeout = self._header_timeout_ns
        for conn in list(self._unfinished):
            session = conn.session
            if conn.closed or not session.attention or session.wants_close:
                self._unfinished.discard(conn)
            elif conn.mark_seq != session.partial_seq:
                conn.mark_seq = session.partial_seq
                conn.mark_ns = now_ns
            elif now_ns - conn.mark_ns >= header_timeout:
                self._unfinished.discard(conn)
                self._time_out(conn, "header_timeout")
        if self._idle_timeout_ns:
            idle_ms = self._idle_timeout_ns // 1_000_000
            for conn in list(self._conns.values()):
                quiet_ms = tcp_idle_ms(conn.sock)
                if quiet_ms is not None and quiet_ms >= idle_ms:
                    self._time_out(conn, "idle_timeout")

    def _time_out(self, conn: Connection, kind: str) -> None:
        """Close now. A header timeout's reply (408) goes out only if nothing is queued
        before it and the kernel takes it at once: a stalled client cannot stall the close."""
        self.counters.errors[kind] += 1
        try:
            reply = conn.session.timed_out() if kind == "header_timeout" else b""
            if reply and not conn.out_bytes:
                try:
                    sent = conn.send(reply)
                except OSError:
                    sent = 0
                self.counters.writes += 1
                self.counters.bytes_out += sent
            self._close(conn)
        except Exception as exc:
            self._on_connection_error(conn, exc)

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
                if exc.errno in _LISTENER_BROKEN:
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
        self.counters.connections_closed += 1
        self.counters.connections_open -= 1
        if error is not None:
            self.counters.errors[error] += 1
        self._total_out -= conn.out_bytes
        conn.out_bytes = 0
        conn.out.clear()
        if self._unfinished:
            self._unfinished.discard(conn)
        if self._output_paused:
            self._output_paused.discard(conn)
            if self._total_out <= self._output_resume_bytes:
                self._resume_after_total_output()
        try:
            self.backend.unregister(conn.fd)
        except (OSError, KeyError, ValueError) as exc:
            # Closing the descriptor below removes it from any epoll set anyway.
            self.counters.errors["unregister_" + exception_kind(exc)] += 1
        conn.sock.close()
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

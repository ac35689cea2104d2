"""What every server loop does around its I/O paths, written once.

The readiness loop (:mod:`servers.loop`) and the completion loop
(:mod:`servers.uring_loop`) differ in how bytes move: one asks which sockets are ready
and calls ``recv``/``send`` itself, the other hands the kernel receive and send requests.
Everything else is the same program, and lives here so the two cannot drift apart:

- the configuration (:class:`ServerConfig`), the listener (:func:`open_listener`) and the
  two failures a server can end with (:class:`ServerSetupError`, :class:`ServerFailedError`);
- stopping and snapshots from a signal handler or another thread, through a wake-up
  socketpair (:meth:`ServerLifecycle.request_stop`, :meth:`~ServerLifecycle.request_snapshot`);
- a client's behaviour (reset, half-close, garbage, a request that makes the protocol
  raise, an errno nobody expected) ends at most its own connection: its exception closes
  it, is counted under ``errors`` by kind, its traceback logged once per kind and then
  rate-limited (:class:`ErrorLog`, :meth:`~ServerLifecycle._on_connection_error`);
- the connection table's bookkeeping on close, and when a send ends a pause of the total
  output bound or a connection's own (:meth:`~ServerLifecycle._output_sent`);
- ``EMFILE``/``ENFILE`` on accept pauses accepting (no busy loop, one log line) and retries
  when a connection closes or after ``ACCEPT_RETRY_S``;
- the header and idle timeouts, at no cost per request: no deadline is pushed per request;
  a coarse sweep runs at most every ``SWEEP_PERIOD_MAX_S`` and only while something can
  time out, and bounds the wait only then (:meth:`ServerLifecycle._sweep`).

A loop subclasses :class:`ServerLifecycle` and provides ``_loop``, ``_close``,
``_close_mechanism``, ``_resume_accepting`` and ``_resume_after_total_output``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args

from muxlab.fdbudget import server_connection_budget
from servers.backends import BackendName
from servers.counters import Counters
from servers.protocols import PROTOCOLS, ProtocolName, Session, SessionFactory

log = logging.getLogger("muxlab.server")

ACCEPT_RETRY_S = 0.1
ACCEPT_BATCH = 64  # accepts per readiness event under LT; ET drains the backlog
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept(2) errors that mean the listening socket itself is broken, not one client.
LISTENER_BROKEN = frozenset({errno.EBADF, errno.EINVAL, errno.ENOTSOCK, errno.EOPNOTSUPP})
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


SOMAXCONN_FILE = "/proc/sys/net/core/somaxconn"


def listen_backlog() -> int:
    """The largest ``listen(2)`` backlog the kernel grants: ``net.core.somaxconn``.

    ``listen(2)`` silently caps a larger backlog at this value, so asking for it is asking
    for the longest accept queue this machine allows, and raising the sysctl takes effect
    at the next start without a flag (Go's net package reads the same file). A connection
    that completes its handshake while the queue is full has its SYN or final ACK dropped
    (TcpExtListenOverflows) and waits out a retransmission, 1 s the first time
    (``tcp(7)``); results/c20k/README.md measures it. Without /proc: ``socket.SOMAXCONN``.
    """
    try:
        with open(SOMAXCONN_FILE) as f:
            return max(1, int(f.read()))
    except (OSError, ValueError):
        return socket.SOMAXCONN


EtDrain = Literal["strict", "short-read"]
ET_DRAINS: tuple[EtDrain, ...] = get_args(EtDrain)


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
    # None: the descriptor budget (muxlab.fdbudget.server_connection_budget).
    max_connections: int | None = None
    max_output_bytes: int = 256 << 20
    # Bytes read from one connection per event under ET; None: drain to EAGAIN.
    et_read_budget_bytes: int | None = None
    # How an ET drain ends (servers/loop.py's docstring): "strict" reads to EAGAIN;
    # "short-read" stops at a read that returned less than asked.
    et_drain: EtDrain = "strict"


class ServerSetupError(RuntimeError):
    """The server could not start: address in use, unresolvable host, and so on."""


class ServerFailedError(RuntimeError):
    """The listener or the backend failed: the server cannot go on (one-line reason)."""


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


def errno_kind(err: int) -> str:
    """The counter name for a bare errno (an io_uring CQE's negated ``res``)."""
    return errno.errorcode.get(err, str(err))


def exception_kind(exc: BaseException) -> str:
    """The counter name for any exception: the errno name for an OS error, else
    ``exception_<type>`` (``exception_ValueError``)."""
    if isinstance(exc, OSError) and exc.errno:
        return error_kind(exc)
    return "exception_" + type(exc).__name__


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


class TrackedConnection(Protocol):
    """What the shared bookkeeping reads and writes on a loop's connection record."""

    fd: int
    sock: socket.socket
    session: Session
    closed: bool
    out_bytes: int
    paused: bool
    mark_seq: int
    mark_ns: int


ConnT = TypeVar("ConnT", bound=TrackedConnection)


class ServerLifecycle(Generic[ConnT]):
    """The lifecycle both loops share; ``ConnT`` is the loop's connection record."""

    counters: Counters
    listener: socket.socket

    def _init_lifecycle(
        self,
        config: ServerConfig,
        on_snapshot: Callable[[dict[str, Any]], None] | None,
        session_factory: SessionFactory | None,
    ) -> None:
        # ``session_factory`` replaces the protocol's sessions (tests: a session that
        # raises, to prove one connection's failure stays with it).
        self.config = config
        self._on_snapshot = on_snapshot
        self._new_session = session_factory or PROTOCOLS[config.protocol]
        self._conns: dict[int, ConnT] = {}
        self._max_connections = (
            config.max_connections
            if config.max_connections is not None
            else server_connection_budget()
        )
        self._over_max_warning = RateLimitedWarning()
        self._errors_log = ErrorLog()
        # The server-wide output bound: the queued bytes of all connections, and the
        # connections paused because of it (not because of their own high-water mark).
        self._total_out = 0
        self._output_resume_bytes = config.max_output_bytes * 3 // 4
        self._output_paused: set[ConnT] = set()
        # Timeouts, enforced by a coarse sweep (see _sweep); 0 means off.
        self._header_timeout_ns = int((config.header_timeout_s or 0) * 1e9)
        self._idle_timeout_ns = int((config.idle_timeout_s or 0) * 1e9)
        self._unfinished: set[ConnT] = set()
        self._sweep_period_ns = sweep_period_ns(self._header_timeout_ns, self._idle_timeout_ns)
        self._next_sweep_ns = 0
        self._accept_paused = False
        self._accept_failing = False  # an EMFILE episode is logged once, at its start
        self._accept_retry_ns = 0
        self._stopping = False
        self._snapshot_requested = False

    def _open_wake_pair(self) -> None:
        # Another thread or a signal handler wakes a blocked wait through this pair.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # -- what the loop's owner calls ------------------------------------------------------

    @property
    def wakeup_fd(self) -> int:
        """The descriptor that wakes a blocked wait when a byte is written to it: give it to
        :func:`signal.set_wakeup_fd`, so a signal that lands just before the wait starts
        (its Python handler not yet run) still ends the wait."""
        return self._wake_w.fileno()

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

    def run(self) -> None:
        """Serve until :meth:`request_stop`. Raises :class:`ServerFailedError` when the
        listener or the backend fails; one connection's failure never gets here."""
        try:
            self._loop()
        finally:
            self._close_all()

    def _close_all(self) -> None:
        self._accept_paused = False  # closing them all is no reason to accept again
        for conn in list(self._conns.values()):
            self._close(conn)
        self._close_mechanism()
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- what each loop provides ----------------------------------------------------------

    def _loop(self) -> None:
        raise NotImplementedError

    def _close(self, conn: ConnT, error: str | None = None) -> None:
        """Close one connection; it calls :meth:`_forget` for the shared bookkeeping."""
        raise NotImplementedError

    def _close_mechanism(self) -> None:
        """Release the loop's own kernel object (the backend, the ring)."""
        raise NotImplementedError

    def _resume_accepting(self) -> None:
        raise NotImplementedError

    def _resume_after_total_output(self) -> None:
        raise NotImplementedError

    def _output_sent(self, conn: ConnT) -> bool:
        """After a send: end the total-output pause once it drained; True when ``conn``'s own
        pause ends (its queue at the low-water mark, and not held by the total)."""
        if self._output_paused and self._total_out <= self._output_resume_bytes:
            self._resume_after_total_output()
        if not conn.paused or conn.out_bytes > self.config.low_water_bytes:
            return False
        if not conn.out_bytes:
            # Its client reads what it is sent: whatever the total, reading it again adds
            # at most one read's reply, and a client that keeps up is not held hostage by
            # the ones that never read.
            self._output_paused.discard(conn)
            return True
        return conn not in self._output_paused

    # -- waking and snapshots -------------------------------------------------------------

    def _wake(self) -> None:
        # A full or closed pair means the loop is already waking, or gone: fine either way.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _take_snapshot(self) -> None:
        self._snapshot_requested = False
        if self._on_snapshot is not None:
            self._on_snapshot(self.counters.snapshot())

    # -- errors and closing ---------------------------------------------------------------

    def _on_connection_error(self, conn: ConnT, exc: Exception) -> None:
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

    def _forget(self, conn: ConnT, error: str | None) -> None:
        """The connection table's side of a close: counters, this connection's share of
        the queued output, and the sets the timeout sweep and the output bound keep.
        The caller has marked it closed and removed it from its table."""
        counters = self.counters
        counters.connections_closed += 1
        counters.connections_open -= 1
        if error is not None:
            counters.errors[error] += 1
        self._total_out -= conn.out_bytes
        conn.out_bytes = 0
        if self._unfinished:
            self._unfinished.discard(conn)
        if self._output_paused:
            self._output_paused.discard(conn)
            if self._total_out <= self._output_resume_bytes:
                self._resume_after_total_output()

    # -- accepting paused -----------------------------------------------------------------

    def _accepting_paused(self, kind: str, reason: str) -> None:
        """Accepting stopped on ``kind`` (EMFILE, ...): retry after ``ACCEPT_RETRY_S`` or when
        a connection closes; count and log an episode once, at its start."""
        self._accept_paused = True
        self._accept_retry_ns = time.monotonic_ns() + int(ACCEPT_RETRY_S * 1e9)
        if self._accept_failing:
            return
        self._accept_failing = True
        self.counters.errors["accept_" + kind] += 1
        log.warning(
            "accept failed (%s: %s); not accepting until a descriptor is freed "
            "(%d connections open)",
            kind,
            reason,
            len(self._conns),
        )

    # -- timeouts -------------------------------------------------------------------------

    def _wait_timeout_s(self) -> float | None:
        """How long the next wait may block: forever unless something is due."""
        deadline_ns: int | None = None
        if self._accept_paused:
            deadline_ns = self._accept_retry_ns
        if self._unfinished or self._idle_timeout_ns:
            sweep_ns = self._next_sweep_ns
            deadline_ns = sweep_ns if deadline_ns is None else min(deadline_ns, sweep_ns)
        if deadline_ns is None:
            return None
        return max(0.0, (deadline_ns - time.monotonic_ns()) / 1e9)

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

    def _time_out(self, conn: ConnT, kind: str) -> None:
        """Close now. A header timeout's reply (408) goes out with one non-blocking
        ``send(2)``, outside any queue or ring, only if nothing is queued before it and the
        kernel takes it at once: a stalled client cannot stall the close."""
        counters = self.counters
        counters.errors[kind] += 1
        try:
            reply = conn.session.timed_out() if kind == "header_timeout" else b""
            if reply and not conn.out_bytes:
                try:
                    sent = conn.sock.send(reply, socket.MSG_DONTWAIT)
                except OSError:
                    sent = 0
                counters.writes += 1
                counters.bytes_out += sent
            self._close(conn)
        except Exception as exc:
            self._on_connection_error(conn, exc)

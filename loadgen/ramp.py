"""The ramp: a worker opens its connections at its share of the connect rate.

Every connect is non-blocking (``man 2 connect``: EINPROGRESS, then the socket becomes
writable and ``SO_ERROR`` says how it ended); a connect that fails, or does not complete
within the timeout, is counted under its cause and not retried. The first ``active``
connections to complete carry traffic, the rest are held idle: never read, never written.
"""

from __future__ import annotations

import errno
import select
import socket
import time
from typing import TYPE_CHECKING

from loadgen.connection import Conn
from loadgen.messages import RampReport, WorkerSpec
from loadgen.schedule import Pacer

if TYPE_CHECKING:
    from loadgen.worker import Worker

CONNECT_TIMEOUT = "connect_timeout"
# Control messages (a parent's stop) are checked this often while connecting.
CONTROL_TICK_NS = 100_000_000


def error_kind(err: int) -> str:
    """A counter name for an errno: ``reset`` for the peer resetting, else the errno name."""
    if err in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    return errno.errorcode.get(err, str(err)).lower()


class ConnectFailed(Exception):
    """A connect that failed at once; ``kind`` is its error counter name."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def new_connection(spec: WorkerSpec) -> socket.socket:
    """A non-blocking socket with its connect(2) started; :class:`ConnectFailed` if not."""
    try:
        sock = socket.socket(spec.family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectFailed("connect_" + error_kind(exc.errno or 0)) from None
    sock.setblocking(False)
    if spec.family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    err = sock.connect_ex(spec.sockaddr)
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise ConnectFailed("connect_" + error_kind(err))
    return sock


def ramp(w: Worker) -> RampReport:
    """Open ``active + idle`` connections, paced; stop early when the parent says so."""
    spec = w.spec
    total = spec.active + spec.idle
    pending: dict[int, tuple[socket.socket, int]] = {}  # fd -> (socket, deadline)
    pacer = Pacer(time.monotonic_ns(), spec.connect_rate_cps)
    opened = 0
    next_control_ns = 0
    while (opened < total or pending) and not w.stop_requested:
        now = time.monotonic_ns()
        while opened < total and pacer.next_due_ns <= now:
            pacer.advance()
            opened += 1
            sock = _start_connect(w)
            if sock is not None:
                pending[sock.fileno()] = (sock, now + w.timeout_ns)
        for fd, (sock, deadline) in list(pending.items()):
            if now >= deadline:
                del pending[fd]
                _connect_failed(w, sock, CONNECT_TIMEOUT)
        if now >= next_control_ns:
            w.check_control()
            next_control_ns = now + CONTROL_TICK_NS
        wait_ns = CONTROL_TICK_NS
        if opened < total:
            wait_ns = min(wait_ns, pacer.next_due_ns - now)
        for fd, _ in w.ep.poll(max(0, wait_ns) / 1e9):
            sock, _ = pending.pop(fd)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                _connect_failed(w, sock, "connect_" + error_kind(err))
            else:
                _connected(w, sock)
    for sock, _ in pending.values():
        w.ep.unregister(sock.fileno())
        sock.close()
    return RampReport(len(w.conns), len(w.idle_socks), w.connect_errors)


def _start_connect(w: Worker) -> socket.socket | None:
    try:
        sock = new_connection(w.spec)
    except ConnectFailed as exc:
        w.connect_errors += 1
        w.errors[exc.kind] += 1
        return None
    w.ep.register(sock.fileno(), select.EPOLLOUT)
    return sock


def _connect_failed(w: Worker, sock: socket.socket, kind: str) -> None:
    w.ep.unregister(sock.fileno())
    sock.close()
    w.connect_errors += 1
    w.errors[kind] += 1


def _connected(w: Worker, sock: socket.socket) -> None:
    # Active connections are watched for input from the traffic phase on; until then a
    # server closing one must not wake the ramp's loop.
    w.ep.unregister(sock.fileno())
    if len(w.conns) < w.spec.active:
        conn = Conn(sock, w.spec.first_cid + len(w.conns))
        w.conns[conn.fd] = conn
        w.ring.append(conn)
    else:
        w.idle_socks.append(sock)

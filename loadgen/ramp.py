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

from loadgen.connection import Conn, start_connect
from loadgen.messages import RampReport
from loadgen.schedule import Pacer

if TYPE_CHECKING:
    from loadgen.worker import Worker

CONNECT_TIMEOUT = "connect_timeout"
# Control messages (a parent's stop) are checked this often while connecting.
CONTROL_TICK_NS = 100_000_000
# Connects started per ramp turn at most: a worker behind its schedule collects the
# completions between batches instead of opening everything due in one go.
CONNECT_BATCH = 64


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


def new_connection(w: Worker) -> socket.socket:
    """A non-blocking socket with its connect(2) started; :class:`ConnectFailed` if not.

    Source addresses are taken round-robin, one per connect, reopens included.
    """
    sources = w.spec.source_addresses
    source = sources[w.connects_started % len(sources)] if sources else None
    w.connects_started += 1
    try:
        return start_connect(w.spec.family, w.spec.sockaddr, source)
    except OSError as exc:
        raise ConnectFailed("connect_" + error_kind(exc.errno or 0)) from None


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
        batch = CONNECT_BATCH
        while opened < total and pacer.next_due_ns <= now and batch:
            batch -= 1
            pacer.advance()
            opened += 1
            sock = _start_connect(w)
            if sock is not None:
                # The deadline counts from this connect, not from the loop's `now`: when
                # connect(2) itself is slow, a catch-up batch takes a while.
                pending[sock.fileno()] = (sock, time.monotonic_ns() + w.timeout_ns)
        if now >= next_control_ns:
            w.check_control()
            next_control_ns = now + CONTROL_TICK_NS
        behind = opened < total and pacer.next_due_ns <= time.monotonic_ns()
        wait_ns = 0 if behind else min(CONTROL_TICK_NS, pacer.next_due_ns - now)
        if opened >= total:
            wait_ns = CONTROL_TICK_NS
        for fd, _ in w.ep.poll(max(0, wait_ns) / 1e9, max(1, len(pending))):
            sock, _ = pending.pop(fd)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                _connect_failed(w, sock, "connect_" + error_kind(err))
            else:
                _connected(w, sock)
        # Completions are collected before deadlines are checked, with the time after the
        # wait: a client that fell behind (a busy CPU) must not count connections the
        # kernel completed while it was not looking as timed out.
        now = time.monotonic_ns()
        for fd, (sock, deadline) in list(pending.items()):
            if now >= deadline:
                del pending[fd]
                _connect_failed(w, sock, CONNECT_TIMEOUT)
    for sock, _ in pending.values():
        w.ep.unregister(sock.fileno())
        sock.close()
    return RampReport(len(w.conns), len(w.idle_socks), w.connect_errors)


def _start_connect(w: Worker) -> socket.socket | None:
    try:
        sock = new_connection(w)
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

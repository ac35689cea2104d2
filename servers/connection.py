"""What the shared loop does with one ready connection: read, reply, queue, flush, pause.

The request path of every readiness backend (:mod:`servers.loop` runs the loop, accepts and
closes; its docstring states the rules this module keeps: optimistic sends, gather writes,
backpressure, interest in writability only while output is pending, and how an ET drain
ends). Split from the loop along that seam: everything here is per connection and per
event, and nothing here waits, accepts or closes (it calls the loop's ``_close``).

Profile and cuts (issue 11 item 6) are in results/server-cpu/README.md.
"""

from __future__ import annotations

import select
import socket
from collections import deque

from servers.backends import ERROR, READ, WRITE, Backend
from servers.lifecycle import ServerLifecycle, error_kind
from servers.protocols import Session

# sendmsg(2) takes at most IOV_MAX (1024 on Linux) buffers per call.
MAX_IOVECS = 1024


# Event bits after which a short read does not mean drained: the peer's half-close
# (EPOLLRDHUP, 0x2000), a hang-up or an error.
_HANGUP = select.EPOLLRDHUP | ERROR if hasattr(select, "EPOLLRDHUP") else ERROR


class Connection:
    """Per-connection state. The request path calls ``sock.recv``, ``sock.send`` and
    ``session.data_received`` as methods of the objects that own them: CPython 3.11
    specializes those calls (``LOAD_METHOD_NO_DICT``), while a bound method kept in a
    slot and called as ``conn.feed(data)`` takes the generic look-up every time (timeit,
    min of 7: ``conn.feed(data)`` 101 ns, ``conn.session.data_received(data)`` 41 ns)."""

    __slots__ = (
        "closed", "eof", "fd", "interest", "mark_ns", "mark_seq", "out", "out_bytes",
        "paused", "session", "sock",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, fd: int, session: Session) -> None:
        self.sock = sock
        self.fd = fd
        self.session = session
        self.out: deque[bytes | memoryview] = deque()
        self.out_bytes = 0
        self.interest = READ
        self.paused = False  # reading stopped by backpressure
        self.eof = False  # peer will send no more, or the protocol wants no more
        self.closed = False
        # Which unfinished request the timeout sweep saw last, and when (monotonic ns).
        self.mark_seq = -1
        self.mark_ns = 0


class ConnectionHandlers(ServerLifecycle[Connection]):
    """The per-connection handlers of :class:`servers.loop.Server`, which sets the state
    declared here in its ``__init__``."""

    backend: Backend
    _read_bytes: int
    _high_water_bytes: int
    _max_output_bytes: int
    _read_budget: int  # ET: bytes read from one connection per event (sys.maxsize: none)
    _short_read: bool  # --et-drain short-read
    _drain: bool  # edge-triggered: repeat each read, write and accept until EAGAIN
    _still_readable: list[Connection]  # ET connections stopped by the read budget

    # -- reading -------------------------------------------------------------------------

    def _on_readable(self, conn: Connection, ev: int) -> None:
        # The request path: recv, protocol, optimistic send. It is one function, not three,
        # because a Python call costs about 0.1 us and a request here costs about 5 us.
        if conn.paused and not ev & ERROR:
            return  # a stale event from before the pause; ERROR/HUP still gets read below
        counters = self.counters
        sock = conn.sock
        session = conn.session
        read_bytes = self._read_bytes
        budget = self._read_budget
        # --et-drain short-read: a short read ends the drain, unless the event says the
        # peer hung up (see the module's docstring).
        stop_when_short = self._short_read and not ev & _HANGUP
        while True:
            try:
                data = sock.recv(read_bytes)
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
            reply = session.data_received(data)
            if reply:
                if conn.out_bytes:
                    self._enqueue(conn, reply)  # keep order behind what is queued
                else:
                    try:
                        sent = sock.send(reply)
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
            if session.attention:
                if session.wants_close:
                    self._on_eof(conn)
                    return
                if self._header_timeout_ns:
                    self._unfinished.add(conn)
            if conn.out_bytes and self._over_output_bound(conn):
                return
            if not self._drain:
                return
            if stop_when_short and len(data) < read_bytes:
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
            # Everything queued is offered unless it passes IOV_MAX buffers: only then can
            # a sendmsg take all it was given and still leave some queued.
            offered_all = len(out) <= MAX_IOVECS
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
                if self._short_read and offered_all:
                    break  # a short send: the send buffer is full, EPOLLOUT will say when
            if not self._drain:
                break
        if not out and conn.eof:
            self._close(conn)
            return
        if self._output_sent(conn):
            conn.paused = False
        self._update_interest(conn)

    def _update_interest(self, conn: Connection) -> None:
        """Interest in an open connection changes here and only here: read unless paused or
        done, write while output is queued. (Accepting registers it and closing
        unregisters it; pausing accepts unregisters the listener.)"""
        wanted = 0 if conn.paused or conn.eof else READ
        if conn.out_bytes:
            wanted |= WRITE
        if wanted != conn.interest:
            self.backend.modify(conn.fd, wanted)
            conn.interest = wanted  # recorded once the kernel accepted it


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

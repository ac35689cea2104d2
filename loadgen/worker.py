"""One load worker process: open its share of connections, drive them, report what it saw.

A worker is a plain function run in a fresh interpreter (``spawn``), taking a picklable
:class:`WorkerSpec` and one end of a pipe to the parent. It goes through four steps:

1. **Ramp**: open its connections with non-blocking ``connect(2)`` at its share of the
   connect rate; a connect that fails or does not complete within the timeout is an error
   (``man 2 connect``, EINPROGRESS then ``SO_ERROR``). Report ``ready``.
2. **Traffic**, after the parent's ``go`` carrying absolute :class:`Phases`: closed loop
   (``pipeline`` requests in flight per connection) or open loop (slots at a constant
   rate, round-robin over connections; a slot whose connection is full waits in that
   connection's backlog and keeps its intended time). Every reply is verified
   by its protocol client (``loadgen.protocols``); a connection with a bad reply, a reset,
   an unexpected close or a request older than the timeout is closed and counted under
   that error kind (it is not reopened). An HTTP server's graceful close after a complete
   reply (keep-alive limit) is not an error: the connection is reopened and its
   unanswered requests resent (``reconnects``).
3. **Drain**: at the window's end no new requests; wait for outstanding replies until
   none are left or ``timeout`` has passed, so a run ends within duration + timeout even
   when the server stalls or dies.
4. **Report**: idle connections checked still open, histograms encoded, counters sent.

The event loop is level-triggered epoll (``man 7 epoll``): a socket with unread bytes is
reported again by the next wait, so one ``recv`` per event loses nothing, and the client
never needs the drain-until-EAGAIN discipline that edge-triggered mode would impose.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import resource
import select
import signal
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from loadgen.config import LoadProtocol
from loadgen.connection import Conn, start_connect
from loadgen.protocols import CLIENTS
from loadgen.recording import BatchRecorder
from loadgen.schedule import Pacer, Phases

# One recv(2) asks for at most 64 KiB: every reply of a connection's pipeline fits at the
# usual message sizes, and CPython allocates the buffer, then shrinks it to what arrived,
# so asking for much more (say 1 MiB) would cost an mmap/munmap per call for nothing.
RECV_BYTES = 65536
TICK_NS = 100_000_000  # flush latencies, check timeouts and control messages this often
DRAIN_TICK_NS = 5_000_000
PROGRESS_NS = 500_000_000
_IN = select.EPOLLIN
_IN_OUT = select.EPOLLIN | select.EPOLLOUT

# Connects started per ramp turn at most: a worker behind its schedule collects the
# completions between batches instead of opening everything due in one go.
CONNECT_BATCH = 64

PR_SET_TIMERSLACK = 29  # <linux/prctl.h>
TIMER_SLACK_NS = 1000

TIMEOUT = "timeout"
CONNECT_TIMEOUT = "connect_timeout"
IDLE_CLOSED = "idle_closed"
# "go" arrived after the window had opened: this worker's window would be shorter.
LATE_START = "late_start"


def error_kind(err: int) -> str:
    """A counter name for an errno: ``reset`` for the peer resetting, else the errno name."""
    if err in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    return errno.errorcode.get(err, str(err)).lower()


def tighten_timer_slack() -> None:
    """Let the open loop's sleeps end on time: timer slack 1 us instead of 50 us.

    The kernel may end a sleep up to the thread's timer slack late, to merge wake-ups
    (``prctl(2)``, PR_SET_TIMERSLACK); 50 us of lateness per slot would show up in the
    corrected latency as if the server had caused it. Best effort: without libc's prctl
    the default stays.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)


class _ConnectFailed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    family: int
    sockaddr: tuple[Any, ...]
    protocol: LoadProtocol
    http_request: bytes
    first_cid: int  # connection ids are unique over all workers: cross-talk shows
    active: int
    idle: int
    all_active: int
    size_bytes: int
    pipeline: int
    rate_rps: float | None  # this worker's share of the total rate
    connect_rate_cps: float  # this worker's share of the connect rate
    timeout_s: float
    cpu: int | None
    fds_needed: int
    progress: bool
    # Bound before each connect, round-robin (loadgen.connection); (): the kernel's choice.
    source_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlotCounts:
    """Open loop: what became of the slots due in the window (``due`` = the other three
    summed: every slot is answered in the window, late at its end, or refused)."""

    due: int
    sent: int
    answered: int
    late: int
    refused: int


@dataclass(frozen=True)
class RampReport:
    active: int
    idle: int
    connect_errors: int


@dataclass(frozen=True)
class WorkerReport:
    index: int
    requests_ok: int
    requests_total: int
    errors: dict[str, int]
    bytes_sent: int
    bytes_received: int
    per_second: list[int]
    cpu_s: float  # user + system CPU time of this process between the window's edges
    cpu_wall_ns: int  # wall time between the same two readings
    window_ns: int
    active_connected: int
    idle_connected: int
    idle_open_at_end: int
    connect_errors: int
    reconnects: int
    slots: SlotCounts | None  # open loop only
    histogram: str
    histogram_uncorrected: str | None


class Worker:
    # What the hot loops compare an event mask with: anything else leaves for other_event.
    READ_ONLY = _IN

    def __init__(self, spec: WorkerSpec, ctl: Pipe) -> None:
        self.spec = spec
        self.ctl = ctl
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.ring: list[Conn] = []  # open loop: slot n goes to ring[n % len(ring)]
        self.idle_socks: list[socket.socket] = []
        self.errors: Counter[str] = Counter()
        self.connect_errors = 0
        self.connects_started = 0
        self.reconnects = 0
        self.client = CLIENTS[spec.protocol](spec, self.fail, self.reopen)
        self.recorder = BatchRecorder()
        self.recorder_uncorrected = BatchRecorder() if spec.rate_rps is not None else None
        self.timeout_ns = round(spec.timeout_s * 1e9)
        self.phases: Phases | None = None
        self.stop_requested = False
        self.sending = True
        self.measuring = False
        self.window_closed = False
        self.next_tick_ns = 0
        self.next_progress_ns = 0
        # Counters the hot loop keeps in locals and stores here before each tick.
        self.done_total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.window_start: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
        self.window_counts: tuple[int, int, int, float, int, int] = (0, 0, 0, 0.0, 0, 0)
        self.per_second: list[int] = []
        # Open loop: the slot schedule, and what became of the slots due in the window.
        self.pacer: Pacer | None = None
        self.slots_due = 0
        self.slots_sent = 0
        self.slots_answered = 0
        self.slots_late = 0
        self.slots_refused = 0

    # -- whole life ----------------------------------------------------------------------

    def run(self) -> WorkerReport:
        self._prepare_process()
        ramp = self._ramp()
        self.ctl.send(("ready", ramp))
        if not self.stop_requested:
            self._await_go()
        if self.phases is not None and not self.stop_requested:
            self._start_traffic()
            # The traffic phase makes no reference cycles, and the collector's periodic
            # passes over every connection object would only add pauses to latencies.
            gc.freeze()
            gc.disable()
            if self.spec.rate_rps is not None:
                self._open_loop()
            else:
                self.client.closed_loop(self)
        return self._report(ramp)

    def _prepare_process(self) -> None:
        if self.spec.cpu is not None:
            os.sched_setaffinity(0, {self.spec.cpu})
        if self.spec.rate_rps is not None:
            tighten_timer_slack()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < self.spec.fds_needed:
            # The parent checked fds_needed <= hard; raising the soft limit is allowed
            # to any process (getrlimit(2)).
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(self.spec.fds_needed, hard), hard))

    def _await_go(self) -> None:
        while True:
            try:
                if not self.ctl.poll(1.0):
                    continue
                message = self.ctl.recv()
            except (EOFError, OSError):
                self.stop_requested = True  # the parent is gone
                return
            if message[0] == "go":
                self.phases = message[1]
                if time.monotonic_ns() > message[1].measure_start_ns:
                    self.errors[LATE_START] += 1
                    self.stop_requested = True
                return
            if message[0] == "stop":
                self.stop_requested = True
                return

    def _check_control(self) -> None:
        try:
            while self.ctl.poll():
                if self.ctl.recv()[0] == "stop":
                    self.stop_requested = True
        except (EOFError, OSError):
            self.stop_requested = True

    # -- ramp ----------------------------------------------------------------------------

    def _ramp(self) -> RampReport:
        spec = self.spec
        total = spec.active + spec.idle
        pending: dict[int, tuple[socket.socket, int]] = {}  # fd -> (socket, deadline)
        pacer = Pacer(time.monotonic_ns(), spec.connect_rate_cps)
        opened = 0
        next_control_ns = 0
        while (opened < total or pending) and not self.stop_requested:
            now = time.monotonic_ns()
            batch = CONNECT_BATCH
            while opened < total and pacer.next_due_ns <= now and batch:
                batch -= 1
                pacer.advance()
                opened += 1
                sock = self._start_connect()
                if sock is not None:
                    # The deadline counts from this connect, not from the loop's `now`:
                    # when connect(2) itself is slow, a catch-up batch takes a while.
                    pending[sock.fileno()] = (sock, time.monotonic_ns() + self.timeout_ns)
            if now >= next_control_ns:
                self._check_control()
                next_control_ns = now + TICK_NS
            behind = opened < total and pacer.next_due_ns <= time.monotonic_ns()
            wait_ns = 0 if behind else min(TICK_NS, pacer.next_due_ns - now)
            if opened >= total:
                wait_ns = TICK_NS
            for fd, _ in self.ep.poll(max(0, wait_ns) / 1e9, max(1, len(pending))):
                sock, _ = pending.pop(fd)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._connect_failed(sock, "connect_" + error_kind(err))
                else:
                    self._connected(sock)
            # Completions are collected before deadlines are checked, with the time after
            # the wait: a client that fell behind (a busy CPU) must not count connections
            # the kernel completed while it was not looking as timed out.
            now = time.monotonic_ns()
            for fd, (sock, deadline) in list(pending.items()):
                if now >= deadline:
                    del pending[fd]
                    self._connect_failed(sock, CONNECT_TIMEOUT)
        for sock, _ in pending.values():
            self.ep.unregister(sock.fileno())
            sock.close()
        return RampReport(len(self.conns), len(self.idle_socks), self.connect_errors)

    def _start_connect(self) -> socket.socket | None:
        try:
            sock = self._new_connection()
        except _ConnectFailed as exc:
            self.connect_errors += 1
            self.errors[exc.kind] += 1
            return None
        self.ep.register(sock.fileno(), select.EPOLLOUT)
        return sock

    def _new_connection(self) -> socket.socket:
        """A non-blocking socket with its connect(2) started; :class:`_ConnectFailed` if not.

        Source addresses are taken round-robin, one per connect, reopens included.
        """
        sources = self.spec.source_addresses
        source = sources[self.connects_started % len(sources)] if sources else None
        self.connects_started += 1
        try:
            return start_connect(self.spec.family, self.spec.sockaddr, source)
        except OSError as exc:
            raise _ConnectFailed("connect_" + error_kind(exc.errno or 0)) from None

    def _connect_failed(self, sock: socket.socket, kind: str, registered: bool = True) -> None:
        if registered:
            self.ep.unregister(sock.fileno())
        sock.close()
        self.connect_errors += 1
        self.errors[kind] += 1

    def _connected(self, sock: socket.socket) -> None:
        # Active connections are watched for input from the traffic phase on; until then a
        # server closing one must not wake the ramp's loop.
        self.ep.unregister(sock.fileno())
        if len(self.conns) < self.spec.active:
            conn = Conn(sock, self.spec.first_cid + len(self.conns))
            self.conns[conn.fd] = conn
            self.ring.append(conn)
        else:
            self.idle_socks.append(sock)  # never read, never written

    # -- traffic -------------------------------------------------------------------------

    def _start_traffic(self) -> None:
        assert self.phases is not None
        duration_ns = self.phases.end_ns - self.phases.measure_start_ns
        self.per_second = [0] * -(-duration_ns // 1_000_000_000)
        self.next_tick_ns = time.monotonic_ns()
        for fd in self.conns:
            self.ep.register(fd, _IN)
        if self.spec.rate_rps is None:
            for conn in list(self.conns.values()):
                self.send_requests(conn, self.spec.pipeline, None)

    def _open_loop(self) -> None:
        # Requests leave when their slot is due, not when a reply comes back, so a server
        # stall shows up as the latency of every request that should have been sent
        # during it (corrected, from the intended time), as wrk2 does. The uncorrected
        # latency, from the actual send, is what a closed-loop tool would report.
        assert self.phases is not None and self.spec.rate_rps is not None
        assert self.recorder_uncorrected is not None
        conns = self.conns
        ring = self.ring
        poll = self.ep.poll
        clock = time.monotonic_ns
        absorb = self.client.absorb
        rearm = self.client.rearm
        other_event = self.other_event
        fail = self.fail
        send_requests = self.send_requests
        pipeline = self.spec.pipeline
        lat_append = self.recorder.pending.append
        unc_append = self.recorder_uncorrected.pending.append
        per_second = self.per_second
        measure_start_ns = self.phases.measure_start_ns
        end_ns = self.phases.end_ns
        pacer = self.pacer = Pacer(self.phases.warmup_start_ns, self.spec.rate_rps)
        done_total = 0
        due_count = answered = 0  # slots due in the window; replies to them in the window
        sending = True
        measuring = False
        next_tick_ns = 0
        now = clock()
        epoll_fd = [self.ep.fileno()]
        while True:
            wake_ns = min(next_tick_ns, pacer.next_due_ns) if sending else next_tick_ns
            if wake_ns > now:
                # epoll_wait(2) rounds its timeout up to whole milliseconds, which would
                # send every slot up to 1 ms late; select(2) on the epoll descriptor
                # (itself pollable, epoll(7)) sleeps with microsecond resolution.
                if select.select(epoll_fd, (), (), (wake_ns - now) / 1e9)[0]:
                    events = poll(0)
                else:
                    events = []
            else:
                events = poll(0)
            now = clock()
            if now >= next_tick_ns:
                self.done_total = done_total
                self.slots_due, self.slots_answered = due_count, answered
                if not self.tick(now):
                    return
                due_count = self.slots_due  # the window's close adds the slots no pass took
                next_tick_ns = self.next_tick_ns
                sending = self.sending
                measuring = self.measuring
            completed = 0
            for fd, ev in events:
                c = conns.get(fd)
                if c is None:
                    continue
                if ev != _IN and not other_event(c, ev):
                    continue
                try:
                    data = c.recv(RECV_BYTES)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    fail(c, error_kind(exc.errno or 0))
                    continue
                self.bytes_in += len(data)
                if data == c.expect:
                    n = len(c.sent)
                    c.got = 0
                    c.expect = None
                    c.owed.clear()
                else:
                    n = absorb(c, data)
                    if n <= 0:
                        continue
                completed += n
                sent = c.sent
                intended = c.intended
                for _ in range(n):
                    due = intended.popleft()
                    sent_ns = sent.popleft()
                    # Only slots due in the window count, and only while it is open
                    # (after its end they were counted late, censored at the end).
                    if measure_start_ns <= due < end_ns and now < end_ns:
                        answered += 1
                        lat_append(now - due)
                        unc_append(now - sent_ns)
                if sending and c.backlog:
                    send_requests(c, min(pipeline - len(sent), len(c.backlog)), c.backlog)
                else:
                    rearm(c)
            while sending and pacer.next_due_ns <= now:
                due = pacer.advance()
                if measure_start_ns <= due < end_ns:
                    due_count += 1
                    if not ring:
                        self.slots_refused += 1  # every connection failed (errors say why)
                        continue
                if not ring:
                    continue
                c = ring[pacer.slot % len(ring)]
                if len(c.sent) < pipeline and not c.backlog:
                    c.backlog.append(due)
                    send_requests(c, 1, c.backlog)
                else:
                    c.backlog.append(due)
            done_total += completed
            if measuring and completed:
                per_second[(now - measure_start_ns) // 1_000_000_000] += completed

    def send_requests(self, c: Conn, n: int, due: deque[int] | None) -> None:
        """Send ``n`` requests on ``c``; open loop takes their intended times from ``due``."""
        if n <= 0:
            return
        payload = self.client.payload(c, n)
        t = time.monotonic_ns()
        if c.out:
            self.queue_output(c, payload)
        else:
            try:
                written = c.send(payload)
            except OSError as exc:
                self.fail(c, error_kind(exc.errno or 0))
                return
            if written != len(payload):
                self.queue_output(c, payload, written)
        self.bytes_out += len(payload)
        c.sent.extend([t] * n)
        if due is not None:
            assert self.phases is not None
            intended = [due.popleft() for _ in range(n)]
            c.intended.extend(intended)
            if self.measuring:
                start, end = self.phases.measure_start_ns, self.phases.end_ns
                self.slots_sent += sum(1 for i in intended if start <= i < end)
        self.client.rearm(c)

    # -- the slow path: output, reconnects, failures ----------------------------------------

    error_kind = staticmethod(error_kind)

    def other_event(self, c: Conn, ev: int) -> bool:
        """Handle writability; True when the connection should also be read."""
        if c.connecting:
            if not ev & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                return False
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(c, "connect_" + error_kind(err))
                return False
            c.connecting = False
        if ev & select.EPOLLOUT:
            self._flush(c)
            if self.conns.get(c.fd) is not c:
                return False
        return bool(ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP))

    def queue_output(self, c: Conn, data: bytes, offset: int = 0) -> None:
        """Keep ``data[offset:]`` to send when the socket is writable (EPOLLOUT)."""
        if not c.out:
            self.ep.modify(c.fd, _IN_OUT)
            c.out_pos = offset
        c.out.append(data)

    def _flush(self, c: Conn) -> None:
        out = c.out
        while out:
            head = out[0]
            try:
                # A view, not a slice: a big message leaves in many sends without copies.
                written = c.send(memoryview(head)[c.out_pos :])
            except BlockingIOError:
                return
            except OSError as exc:
                self.fail(c, error_kind(exc.errno or 0))
                return
            c.out_pos += written
            if c.out_pos < len(head):
                return
            out.popleft()
            c.out_pos = 0
        self.ep.modify(c.fd, _IN)

    def fail(self, c: Conn, kind: str) -> None:
        """Count ``kind`` and close ``c``: after a bad reply the stream cannot be trusted."""
        self.errors[kind] += 1
        self.conns.pop(c.fd, None)
        self._drop_slots(c)
        self.ep.unregister(c.fd)
        c.sock.close()

    def _drop_slots(self, c: Conn) -> None:
        """``c`` is gone: its slots due in the window so far are refused (open loop)."""
        if c in self.ring:
            self.ring.remove(c)
        if self.phases is None or self.window_closed:
            return  # warm-up slots are not counted; after the window they were late
        start, end = self.phases.measure_start_ns, self.phases.end_ns
        self.slots_refused += sum(1 for i in (*c.intended, *c.backlog) if start <= i < end)
        c.intended.clear()
        c.backlog.clear()

    def reopen(self, c: Conn, payload: bytes) -> bool:
        """The server ended ``c`` gracefully: connect again, then send ``payload`` first.

        The new socket is watched for writability (``connect(2)``: EINPROGRESS, then
        writable, then ``SO_ERROR``); until then everything sent on ``c`` is queued.
        """
        del self.conns[c.fd]
        self.ep.unregister(c.fd)
        c.sock.close()
        c.out.clear()
        try:
            sock = self._new_connection()
        except _ConnectFailed as exc:
            self.errors[exc.kind] += 1
            self._drop_slots(c)
            return False
        c.attach(sock, connecting=True)
        self.conns[c.fd] = c
        self.ep.register(c.fd, _IN_OUT)
        c.out.append(payload)  # possibly b"": it still holds later sends back until connected
        c.out_pos = 0
        self.reconnects += 1
        return True

    # -- phases --------------------------------------------------------------------------

    def tick(self, now: int) -> bool:
        """Phase changes, latency flushes, timeouts, control; False when the run is over."""
        assert self.phases is not None
        phases = self.phases
        self._check_control()
        if self.stop_requested:
            self._close_window(now)
            return False
        if not self.measuring and not self.window_closed and now >= phases.measure_start_ns:
            self._open_window()
        if self.measuring and now >= phases.end_ns:
            self._close_window(now)
        if self.measuring:
            self._flush_latencies()
        else:
            self._discard_latencies()  # warm-up or drain: not part of the window
        self._expire(now)
        if self.window_closed:
            if not any(c.sent for c in self.conns.values()):
                return False
            if now >= phases.end_ns + self.timeout_ns:
                for c in list(self.conns.values()):
                    if c.sent:
                        self.fail(c, TIMEOUT)
                return False
            self.next_tick_ns = now + DRAIN_TICK_NS
        else:
            boundary = phases.end_ns if self.measuring else phases.measure_start_ns
            self.next_tick_ns = min(now + TICK_NS, boundary)
        if self.spec.progress and now >= self.next_progress_ns:
            self.next_progress_ns = now + PROGRESS_NS
            self.ctl.send(("progress", self.spec.index, self.done_total, sum(self.errors.values())))
        return True

    def _open_window(self) -> None:
        self._discard_latencies()
        self.measuring = True
        # CPU time at the window's edges, to the nanosecond (clock_gettime(2),
        # CLOCK_PROCESS_CPUTIME_ID), not os.times()'s 10 ms ticks: a 1 s window would
        # carry a 1% error per edge.
        self.window_start = (self.done_total, self.bytes_in, self.bytes_out,
                             time.process_time_ns(), time.monotonic_ns())  # fmt: skip

    def _close_window(self, now: int) -> None:
        if self.window_closed:
            return
        assert self.phases is not None
        self.sending = False
        self.window_closed = True
        if not self.measuring:
            return  # stopped during the warm-up: an empty window
        self.measuring = False
        cpu_ns, wall_ns = time.process_time_ns(), time.monotonic_ns()
        if self.pacer is not None:
            self._censor_late(min(now, self.phases.end_ns))
        self._flush_latencies()
        done, bytes_in, bytes_out, cpu_start_ns, wall_start_ns = self.window_start
        window_ns = min(now, self.phases.end_ns) - self.phases.measure_start_ns
        self.window_counts = (
            self.done_total - done,
            self.bytes_in - bytes_in,
            self.bytes_out - bytes_out,
            (cpu_ns - cpu_start_ns) / 1e9,
            window_ns,
            wall_ns - wall_start_ns,
        )

    def _censor_late(self, close_ns: int) -> None:
        """Open loop: every slot due in the window and not answered by ``close_ns`` is
        late, recorded as if answered at ``close_ns`` (a lower bound of its latency)."""
        assert self.phases is not None and self.pacer is not None
        start = self.phases.measure_start_ns
        late: list[int] = [i for c in self.conns.values() for i in (*c.intended, *c.backlog)
                           if start <= i < close_ns]  # fmt: skip
        while self.pacer.next_due_ns < close_ns:  # came due, but no loop pass took it yet
            due = self.pacer.advance()
            if due >= start:
                self.slots_due += 1
                late.append(due)
        self.slots_late = len(late)
        self.recorder.pending.extend([close_ns - i for i in late])

    def _flush_latencies(self) -> None:
        self.recorder.flush()
        if self.recorder_uncorrected is not None:
            self.recorder_uncorrected.flush()

    def _discard_latencies(self) -> None:
        self.recorder.discard()
        if self.recorder_uncorrected is not None:
            self.recorder_uncorrected.discard()

    def _expire(self, now: int) -> None:
        oldest_allowed = now - self.timeout_ns
        for c in list(self.conns.values()):
            if c.sent and c.sent[0] < oldest_allowed:
                self.fail(c, TIMEOUT)

    # -- report --------------------------------------------------------------------------

    def _idle_open(self) -> int:
        """Idle connections the server still holds: a peek finds no EOF and no error."""
        still_open = 0
        for sock in self.idle_socks:
            try:
                sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        return still_open

    def _slot_counts(self) -> SlotCounts | None:
        if self.spec.rate_rps is None:
            return None
        return SlotCounts(self.slots_due, self.slots_sent, self.slots_answered,
                          self.slots_late, self.slots_refused)  # fmt: skip

    def _report(self, ramp: RampReport) -> WorkerReport:
        self._discard_latencies()  # drain replies: outside the window
        idle_open = self._idle_open()
        if idle_open < len(self.idle_socks):
            self.errors[IDLE_CLOSED] += len(self.idle_socks) - idle_open
        requests_ok, bytes_in, bytes_out, cpu_s, window_ns, cpu_wall_ns = self.window_counts
        if self.spec.rate_rps is not None:
            requests_ok = self.slots_answered  # replies to the window's slots, in the window
        seconds = max(0, window_ns) // 1_000_000_000
        for c in self.conns.values():
            c.sock.close()
        for sock in self.idle_socks:
            sock.close()
        self.ep.close()
        return WorkerReport(
            index=self.spec.index,
            requests_ok=requests_ok,
            requests_total=self.done_total,
            errors=dict(self.errors),
            bytes_sent=bytes_out,
            bytes_received=bytes_in,
            per_second=self.per_second[:seconds],
            cpu_s=cpu_s,
            cpu_wall_ns=cpu_wall_ns,
            window_ns=max(0, window_ns),
            active_connected=ramp.active,
            idle_connected=ramp.idle,
            idle_open_at_end=idle_open,
            connect_errors=ramp.connect_errors,
            reconnects=self.reconnects,
            slots=self._slot_counts(),
            histogram=self.recorder.encode(),
            histogram_uncorrected=(
                self.recorder_uncorrected.encode() if self.recorder_uncorrected else None
            ),
        )


def worker_main(spec: WorkerSpec, ctl: Pipe) -> None:
    """Process entry point: run, and always tell the parent how it ended."""
    # Ctrl-C reaches the whole foreground process group; only the parent acts on it and
    # then tells the workers to stop, so that what they measured is not lost.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent
    try:
        report = Worker(spec, ctl).run()
        ctl.send(("done", report))
    except Exception as exc:  # reported to the parent, which counts a failed worker
        with contextlib.suppress(OSError):
            ctl.send(("failed", spec.index, f"{type(exc).__name__}: {exc}"))
    finally:
        ctl.close()

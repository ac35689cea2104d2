"""One load worker process: open its share of connections, drive them, report what it saw.

A worker is a plain function run in a fresh interpreter (``spawn``), taking a picklable
:class:`~loadgen.messages.WorkerSpec` and one end of a pipe to the parent, over which only
the typed messages of :mod:`loadgen.messages` travel. It goes through four steps:

1. **Ramp** (:mod:`loadgen.ramp`): open its connections at its share of the connect rate.
   Report :class:`~loadgen.messages.Ready`.
2. **Traffic**, after the parent's :class:`~loadgen.messages.Go` carrying absolute
   :class:`~loadgen.schedule.Phases`: closed loop (``pipeline`` requests in flight per
   connection; the hot loop is the protocol client's, :mod:`loadgen.protocols`) or open
   loop (:mod:`loadgen.open_loop`). Every reply is verified by its protocol client; a
   connection with a bad reply, a reset, an unexpected close or a request older than the
   timeout is closed and counted under that error kind (it is not reopened). An HTTP
   server's graceful close after a complete reply (keep-alive limit) is not an error: the
   connection is reopened and its unanswered requests resent (``reconnects``).
3. **Drain**: at the window's end (:mod:`loadgen.window`) no new requests; wait for
   outstanding replies until none are left or ``timeout`` has passed, so a run ends within
   duration + timeout even when the server stalls or dies.
4. **Report**: idle connections checked still open, histograms encoded, counters sent.

This module keeps what the hot loops leave for a method: the one send-or-queue path,
writability, reconnects, failures, and the tick that moves the phases along.

The event loop is level-triggered epoll (``man 7 epoll``): a socket with unread bytes is
reported again by the next wait, so one ``recv`` per event loses nothing, and the client
never needs the drain-until-EAGAIN discipline that edge-triggered mode would impose.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import select
import signal
import socket
import time
from collections import Counter, deque
from multiprocessing.connection import Connection as Pipe

from loadgen.connection import Conn
from loadgen.messages import (
    Done,
    Failed,
    Go,
    RampReport,
    Ready,
    SlotCounts,
    Stop,
    ToWorker,
    WorkerProgress,
    WorkerReport,
    WorkerSpec,
)
from loadgen.open_loop import censor_late, run_open_loop
from loadgen.protocols import CLIENTS
from loadgen.ramp import ConnectFailed, error_kind, new_connection, ramp
from loadgen.schedule import Pacer, Phases
from loadgen.window import Totals, Window
from muxlab.cpu import pin_to_cpu
from muxlab.fdbudget import ensure_fd_limit

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
IDLE_CLOSED = "idle_closed"
# "go" arrived after the window had opened: this worker's window would be shorter.
LATE_START = "late_start"

__all__ = ["Worker", "WorkerSpec", "error_kind", "worker_main"]


def tighten_timer_slack() -> None:
    """Let the open loop's sleeps end on time: timer slack 1 us instead of 50 us.

    The kernel may end a sleep up to the thread's timer slack late, to merge wake-ups
    (``prctl(2)``, PR_SET_TIMERSLACK); 50 us of lateness per slot would show up in the
    corrected latency as if the server had caused it. Best effort: without libc's prctl
    the default stays.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)


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
        self.timeout_ns = round(spec.timeout_s * 1e9)
        self.window: Window | None = None  # from the parent's Go on
        self.stop_requested = False
        self.sending = True
        self.next_tick_ns = 0
        self.next_progress_ns = 0
        # Counters the hot loop keeps in locals and stores here before each tick.
        self.done_total = 0
        self.bytes_in = 0
        self.bytes_out = 0
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
        report = ramp(self)
        self.ctl.send(Ready(report))
        if not self.stop_requested:
            self._await_go()
        if self.window is not None and not self.stop_requested:
            self._start_traffic()
            # The traffic phase makes no reference cycles, and the collector's periodic
            # passes over every connection object would only add pauses to latencies.
            gc.freeze()
            gc.disable()
            if self.spec.rate_rps is not None:
                run_open_loop(self)
            else:
                self.client.closed_loop(self)
        return self._report(report)

    def _prepare_process(self) -> None:
        if self.spec.cpu is not None:
            pin_to_cpu(self.spec.cpu)
        if self.spec.rate_rps is not None:
            tighten_timer_slack()
        # The parent checked fds_needed <= hard (loadgen.preflight).
        ensure_fd_limit(self.spec.fds_needed)

    def _await_go(self) -> None:
        while True:
            try:
                if not self.ctl.poll(1.0):
                    continue
                message: ToWorker = self.ctl.recv()
            except (EOFError, OSError):
                self.stop_requested = True  # the parent is gone
                return
            if isinstance(message, Go):
                self.window = Window(message.phases, open_loop=self.spec.rate_rps is not None)
                if time.monotonic_ns() > message.phases.measure_start_ns:
                    self.errors[LATE_START] += 1
                    self.stop_requested = True
                return
            if isinstance(message, Stop):
                self.stop_requested = True
                return

    def check_control(self) -> None:
        try:
            while self.ctl.poll():
                if isinstance(self.ctl.recv(), Stop):
                    self.stop_requested = True
        except (EOFError, OSError):
            self.stop_requested = True

    def _start_traffic(self) -> None:
        self.next_tick_ns = time.monotonic_ns()
        for fd in self.conns:
            self.ep.register(fd, _IN)
        if self.spec.rate_rps is None:
            for conn in list(self.conns.values()):
                self.send_requests(conn, self.spec.pipeline, None)

    # -- the slow path: sending, output, reconnects, failures -------------------------------

    error_kind = staticmethod(error_kind)

    def send_or_queue(self, c: Conn, payload: bytes) -> bool:
        """Hand ``payload`` to the kernel, keeping what it did not take for EPOLLOUT.

        The one place a request leaves: the hot loops call it too. Behind bytes already
        queued, ``payload`` waits its turn; a send that fails fails ``c`` (False)."""
        if c.out:
            self.queue_output(c, payload)
            return True
        try:
            written = c.send(payload)
        except OSError as exc:
            self.fail(c, error_kind(exc.errno or 0))
            return False
        if written != len(payload):
            self.queue_output(c, payload, written)
        return True

    def send_requests(self, c: Conn, n: int, due: deque[int] | None) -> None:
        """Send ``n`` requests on ``c``; open loop takes their intended times from ``due``."""
        if n <= 0:
            return
        payload = self.client.payload(c, n)
        t = time.monotonic_ns()
        if not self.send_or_queue(c, payload):
            return
        self.bytes_out += len(payload)
        c.sent.extend([t] * n)
        if due is not None:
            window = self.window
            assert window is not None
            intended = [due.popleft() for _ in range(n)]
            c.intended.extend(intended)
            if window.measuring:
                self.slots_sent += sum(1 for i in intended if window.contains(i))
        self.client.rearm(c)

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
        window = self.window
        if window is None or window.closed:
            return  # warm-up slots are not counted; after the window they were late
        self.slots_refused += sum(1 for i in (*c.intended, *c.backlog) if window.contains(i))
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
            sock = new_connection(self)
        except ConnectFailed as exc:
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
        window = self.window
        assert window is not None
        self.check_control()
        if self.stop_requested:
            self._close_window(now)
            return False
        if window.due_to_open(now):
            window.open(self._totals())
        if window.due_to_close(now):
            self._close_window(now)
        if window.measuring:
            window.flush()
        else:
            window.discard()  # warm-up or drain: not part of the window
        self._expire(now)
        if window.closed:
            if not any(c.sent for c in self.conns.values()):
                return False
            if now >= window.phases.end_ns + self.timeout_ns:
                for c in list(self.conns.values()):
                    if c.sent:
                        self.fail(c, TIMEOUT)
                return False
            self.next_tick_ns = now + DRAIN_TICK_NS
        else:
            self.next_tick_ns = min(now + TICK_NS, window.next_edge_ns())
        if self.spec.progress and now >= self.next_progress_ns:
            self.next_progress_ns = now + PROGRESS_NS
            errors = sum(self.errors.values())
            self.ctl.send(WorkerProgress(self.spec.index, self.done_total, errors))
        return True

    def _totals(self) -> Totals:
        return Totals(self.done_total, self.bytes_in, self.bytes_out)

    def _close_window(self, now: int) -> None:
        window = self.window
        assert window is not None
        self.sending = False
        if not window.close(now, self._totals()):
            return  # closed before, or stopped in the warm-up: nothing to censor
        if self.pacer is not None:
            censor_late(self, window.end_or(now))
        window.flush()

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

    def _report(self, ramp_report: RampReport) -> WorkerReport:
        # No Go (stopped before the traffic): an empty window, empty histograms.
        window = self.window or Window(Phases(0, 0, 0), self.spec.rate_rps is not None)
        window.discard()  # drain replies: outside the window
        idle_open = self._idle_open()
        if idle_open < len(self.idle_socks):
            self.errors[IDLE_CLOSED] += len(self.idle_socks) - idle_open
        counts = window.counts
        requests_ok = counts.requests
        if self.spec.rate_rps is not None:
            requests_ok = self.slots_answered  # replies to the window's slots, in the window
        for c in self.conns.values():
            c.sock.close()
        for sock in self.idle_socks:
            sock.close()
        self.ep.close()
        uncorrected = window.recorder_uncorrected
        return WorkerReport(
            index=self.spec.index,
            requests_ok=requests_ok,
            requests_total=self.done_total,
            errors=dict(self.errors),
            bytes_sent=counts.bytes_out,
            bytes_received=counts.bytes_in,
            per_second=window.seconds(),
            cpu_s=counts.cpu_s,
            cpu_wall_ns=counts.cpu_wall_ns,
            window_ns=max(0, counts.window_ns),
            active_connected=ramp_report.active,
            idle_connected=ramp_report.idle,
            idle_open_at_end=idle_open,
            connect_errors=ramp_report.connect_errors,
            reconnects=self.reconnects,
            slots=self._slot_counts(),
            histogram=window.recorder.encode(),
            histogram_uncorrected=uncorrected.encode() if uncorrected else None,
        )


def worker_main(spec: WorkerSpec, ctl: Pipe) -> None:
    """Process entry point: run, and always tell the parent how it ended."""
    # Ctrl-C reaches the whole foreground process group; only the parent acts on it and
    # then tells the workers to stop, so that what they measured is not lost.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent
    try:
        report = Worker(spec, ctl).run()
        ctl.send(Done(report))
    except Exception as exc:  # reported to the parent, which counts a failed worker
        with contextlib.suppress(OSError):
            ctl.send(Failed(spec.index, f"{type(exc).__name__}: {exc}"))
    finally:
        ctl.close()

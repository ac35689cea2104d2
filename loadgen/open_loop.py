"""The open loop: requests leave when their slot is due, not when a reply comes back.

Slots come at a constant rate from the warm-up's start (:class:`~loadgen.schedule.Pacer`),
round-robin over the worker's connections; a slot whose connection already has
``pipeline`` requests in flight waits in that connection's backlog and keeps its intended
time. A server stall therefore shows up as the latency of every request that should have
been sent during it (corrected, from the intended time), as wrk2 does; the uncorrected
latency, from the actual send, is what a closed-loop tool would report.

At the window's close every slot due in the window and not answered is late, recorded as
if answered at the close (a lower bound of its latency): see :func:`censor_late`.
"""

from __future__ import annotations

import select
import time
from typing import TYPE_CHECKING

from loadgen.protocols.base import RECV_BYTES
from loadgen.ramp import error_kind
from loadgen.schedule import Pacer

if TYPE_CHECKING:
    from loadgen.worker import Worker

_IN = select.EPOLLIN


def run_open_loop(w: Worker) -> None:
    # The hot loop: flat on purpose, with locals bound before it, as the closed loops in
    # loadgen.protocols are; its receive-and-verify lines repeat theirs deliberately (a
    # shared helper would cost a call per reply). It is not one of them: slots, not
    # replies, decide what leaves, and each reply is matched to its intended time.
    window = w.window
    assert window is not None and w.spec.rate_rps is not None
    recorder_uncorrected = window.recorder_uncorrected
    assert recorder_uncorrected is not None
    conns = w.conns
    ring = w.ring
    poll = w.ep.poll
    clock = time.monotonic_ns
    absorb = w.client.absorb
    rearm = w.client.rearm
    other_event = w.other_event
    fail = w.fail
    send_requests = w.send_requests
    pipeline = w.spec.pipeline
    lat_append = window.recorder.pending.append
    unc_append = recorder_uncorrected.pending.append
    per_second = window.per_second
    measure_start_ns = window.phases.measure_start_ns
    end_ns = window.phases.end_ns
    pacer = w.pacer = Pacer(window.phases.warmup_start_ns, w.spec.rate_rps)
    done_total = 0
    due_count = answered = 0  # slots due in the window; replies to them in the window
    sending = True
    measuring = False
    next_tick_ns = 0
    now = clock()
    epoll_fd = [w.ep.fileno()]
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
            w.done_total = done_total
            w.slots_due, w.slots_answered = due_count, answered
            if not w.tick(now):
                return
            due_count = w.slots_due  # the window's close adds the slots no pass took
            next_tick_ns = w.next_tick_ns
            sending = w.sending
            measuring = window.measuring
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
            w.bytes_in += len(data)
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
                    w.slots_refused += 1  # every connection failed (errors say why)
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


def censor_late(w: Worker, close_ns: int) -> None:
    """Every slot due in the window and not answered by ``close_ns`` is late, recorded as
    if answered at ``close_ns`` (a lower bound of its latency)."""
    window, pacer = w.window, w.pacer
    assert window is not None and pacer is not None
    start = window.phases.measure_start_ns
    late: list[int] = [i for c in w.conns.values() for i in (*c.intended, *c.backlog)
                       if start <= i < close_ns]  # fmt: skip
    while pacer.next_due_ns < close_ns:  # came due, but no loop pass took it yet
        due = pacer.advance()
        if due >= start:
            w.slots_due += 1
            late.append(due)
    w.slots_late = len(late)
    window.recorder.pending.extend([close_ns - i for i in late])

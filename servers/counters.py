"""What a server counts, and how a harness reads it.

The event loop increments plain integer attributes (the cheapest update CPython has); a
snapshot adds the process's CPU time so a harness can compute CPU per request between two
snapshots without restarting the server. ``muxlab serve`` prints a snapshot as one line
on SIGUSR1 and at shutdown; that line's format and parser are in :mod:`servers.contract`.

System calls. Every call the loops make per request or per connection event is counted
where it is made: the wait (``select``/``poll``/``epoll_wait``, or ``io_uring_enter`` for
the io_uring mechanisms), ``recv`` (``reads`` + ``reads_eagain``), ``send`` and the gather
``sendmsg`` (``writes`` + ``writes_eagain``: one counter, both are one call per write),
``accept`` (``accepts`` + ``accepts_eagain``) and ``epoll_ctl`` (``ctl_calls``; select and
poll keep their interest in user space and make none; io_uring-poll's interest changes are
SQEs, handed over with the next ``io_uring_enter``). :meth:`Counters.syscalls` sums them:
the one place that says what a system call is. Not counted: calls made once per connection
outside those (``setsockopt(TCP_NODELAY)``, ``ioctl(FIONBIO)``, ``close``), and the wake-up
pair's own ``recv``/``send`` (one SIGUSR1 snapshot costs one wait and two ``recv``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from muxlab.cpu import self_usage

SyscallModel = Literal["loop", "completion", "uncounted"]
"""``loop``: every read, write and accept counted is a system call (the readiness loop).
``completion``: the kernel does them (io_uring's completion mode), so they are not.
``uncounted``: a reference peer (asyncio, uvloop), whose event loop makes calls we cannot
see; its snapshot has no ``syscalls``."""


@dataclass(slots=True)
class Counters:
    wait_calls: int = 0
    events: int = 0
    accepts: int = 0
    accepts_eagain: int = 0
    # Listener events whose first accept(2) got EAGAIN: a wake-up that found nothing to
    # accept. With several processes watching one listener this is the thundering herd
    # (another process took the connection); accepts_eagain cannot tell, because LT's
    # batch and ET's drain end every event that did accept with one EAGAIN as well.
    accept_wakeups_empty: int = 0
    reads: int = 0
    reads_eagain: int = 0
    writes: int = 0
    writes_eagain: int = 0
    partial_writes: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    connections_open: int = 0
    connections_accepted: int = 0
    connections_closed: int = 0
    read_pauses: int = 0
    peak_output_bytes: int = 0
    # The server-wide output bound (--max-output-bytes): connections it paused, and the
    # largest total queued output.
    output_pauses: int = 0
    peak_total_output_bytes: int = 0
    # ET reads stopped by --et-read-budget, to be resumed on the next loop turn.
    read_budget_stops: int = 0
    # io_uring: io_uring_enter(2) calls, and the SQEs and CQEs they moved (0 elsewhere).
    uring_enters: int = 0
    uring_sqes: int = 0
    uring_cqes: int = 0
    # epoll_ctl(2) calls: ADD, MOD and DEL (0 for select, poll and io_uring).
    ctl_calls: int = 0
    # What the I/O counters mean: see SyscallModel. Not a count; the snapshot carries it
    # so that a reader knows.
    syscall_model: SyscallModel = "loop"
    errors: Counter[str] = field(default_factory=Counter)

    def syscalls(self) -> int:
        """System calls the loop made: :func:`count_syscalls` of these counters."""
        return count_syscalls({f.name: getattr(self, f.name) for f in fields(self)},
                              self.syscall_model)  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        usage = self_usage()
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["errors"] = dict(sorted(self.errors.items()))
        if self.syscall_model != "uncounted":
            data["syscalls"] = count_syscalls(data, self.syscall_model)
        data["cpu_user_s"] = usage.user_s
        data["cpu_system_s"] = usage.system_s
        data["max_rss_kib"] = usage.max_rss_kib
        return data


_IO_CALLS = ("reads", "reads_eagain", "writes", "writes_eagain", "accepts", "accepts_eagain")


def count_syscalls(counts: Mapping[str, Any], model: SyscallModel) -> int:
    """The one definition of "system calls" (see the module's docstring), over counters or
    over the difference of two snapshots; a counter missing from ``counts`` (an older
    results file has no ``ctl_calls``) counts 0.

    A ring's waits are ``io_uring_enter`` calls and counted there, once; so are the
    receives, sends and accepts of the completion loop, which are SQEs, not calls (its
    rare ``send`` of a 408 outside the ring is not counted).
    """
    waits = int(counts.get("uring_enters", 0)) or int(counts.get("wait_calls", 0))
    total = waits + int(counts.get("ctl_calls", 0))
    if model == "loop":
        total += sum(int(counts.get(name, 0)) for name in _IO_CALLS)
    return total


def format_counters_table(snapshot: dict[str, Any]) -> str:
    """A human-readable block, one counter a line, for the shutdown report on stderr."""
    lines = ["muxlab: final counters"]
    for name, value in snapshot.items():
        if name == "errors":
            detail = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
            lines.append(f"  {'errors':<22} {detail}")
        elif isinstance(value, float):
            lines.append(f"  {name:<22} {value:.3f}")
        else:
            lines.append(f"  {name:<22} {value}")
    return "\n".join(lines)

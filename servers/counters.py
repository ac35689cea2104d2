"""What a server counts, and how a harness reads it.

The event loop increments plain integer attributes (the cheapest update CPython has); a
snapshot adds the process's CPU time so a harness can compute CPU per request between two
snapshots without restarting the server. ``muxlab serve`` prints a snapshot as one line
on SIGUSR1 and at shutdown; that line's format and parser are in :mod:`servers.contract`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from muxlab.cpu import self_usage


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
    errors: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        usage = self_usage()
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["errors"] = dict(sorted(self.errors.items()))
        data["cpu_user_s"] = usage.user_s
        data["cpu_system_s"] = usage.system_s
        data["max_rss_kib"] = usage.max_rss_kib
        return data


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

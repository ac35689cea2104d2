"""What a person reads: the end-of-run summary and the live progress line."""

from __future__ import annotations

from loadgen.recording import LatencySummary
from loadgen.result import CLIENT_BOUND_UTIL, LoadResult
from loadgen.runner import Progress


def _latency_line(label: str, summary: LatencySummary) -> str:
    return (
        f"  {label:<13}p50 {summary.p50:,.1f} us  p90 {summary.p90:,.1f} us  "
        f"p99 {summary.p99:,.1f} us  p99.9 {summary.p99_9:,.1f} us  max {summary.max:,.1f} us  "
        f"mean {summary.mean:,.1f} us"
    )


def format_summary(result: LoadResult) -> str:
    config = result.config
    mode = (
        f"open loop at {config.rate_rps:,.0f} req/s"
        if config.rate_rps is not None
        else f"closed loop, {config.pipeline} in flight per connection"
    )
    size = f", {config.size_bytes} B messages" if config.protocol == "echo" else ""
    lines = [
        f"muxlab load: {config.protocol} {config.host}:{config.port}{size}, {mode}, "
        f"{config.processes} process(es)" + (" (interrupted)" if result.interrupted else ""),
        f"  window       {result.duration_s:.2f} s after {config.warmup_s:g} s warm-up",
        f"  requests     {result.requests_ok:,} ok, {result.rps:,.0f} req/s, "
        f"{result.mib_per_s:,.2f} MiB/s received",
        "  errors       "
        + (
            ", ".join(f"{kind} {count:,}" for kind, count in sorted(result.errors.items()))
            if result.errors
            else "none"
        ),
    ]
    slots = result.open_loop
    if slots is not None:
        lines.append(
            f"  open loop    offered {slots.offered_rps:,.0f} req/s, sent {slots.sent_rps:,.0f}, "
            f"achieved {slots.achieved_rps:,.0f}; of {slots.due:,} due: {slots.answered:,} "
            f"answered, {slots.late:,} late, {slots.refused:,} refused"
            + ("  OVERLOADED" if slots.overloaded else "")
        )
    if result.latency_uncorrected is not None:
        lines.append(_latency_line("latency", result.latency) + "  (corrected)")
        lines.append(_latency_line("latency", result.latency_uncorrected) + "  (uncorrected)")
    else:
        lines.append(_latency_line("latency", result.latency))
    conns = result.connections
    lines.append(
        f"  connections  {conns.active:,} active, {conns.idle:,} idle "
        f"({conns.idle_open_at_end:,} still open at the end), "
        f"{conns.connect_errors:,} connect errors, {result.reconnects:,} reconnects"
    )
    lines.append(
        "  client cpu   "
        + ", ".join(
            f"worker {i} {u:.0%} busy ({max(0.0, 1 - u):.0%} headroom)"
            for i, u in enumerate(result.client_cpu)
        )
        + f", parent {result.parent_cpu:.0%}"
    )
    busy = [f"worker {i}" for i, u in enumerate(result.client_cpu) if u >= CLIENT_BOUND_UTIL]
    if result.parent_cpu >= CLIENT_BOUND_UTIL:
        busy.append("the parent")
    if busy:
        lines.append(
            f"  warning      client-bound: {', '.join(busy)} at >= {CLIENT_BOUND_UTIL:.0%} CPU; "
            "the client may be the bottleneck: add --processes (and --cpus)"
        )
    return "\n".join(lines)


def format_progress(progress: Progress) -> str:
    phase = "measuring" if progress.measuring else "warm-up  "
    return (
        f"muxlab load: {phase} {progress.time_left_s:5.1f} s left  "
        f"{progress.rps:>10,.0f} req/s  {progress.errors:,} errors"
    )

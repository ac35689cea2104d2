"""When one repeat of a point is a valid sample, and when it must be thrown away.

A repeat that lost requests, connections or a worker measured something other than the
point it claims to be; averaging it in would hide the fault inside a median. Every check
below turns into one reason string; a repeat with any reason is ``invalid``, retried (up
to ``--retries`` times), and never enters a median, a ratio or a chart line.

The checks, in order:

1. the load generator exited 0 (``muxlab load``: 1 = any error, 3 = overloaded);
2. no client error of any kind (timeouts, resets, refused sends, bad replies);
3. no lost worker;
4. every idle connection still open at the end, seen from both ends: the client's
   ``idle_open_at_end`` equals ``idle``, and the server's ``connections_open`` when the
   window opened equals active + idle, give or take :data:`CONNECTIONS_SLACK` (the load
   generator's preflight probe, opened and closed before the ramp, may not be reaped yet);
   a connection the server never accepted still looks open to the client (backlog);
5. open loop: the achieved rate is at least :data:`OPEN_LOOP_MIN_FRACTION` of the offered
   one, unless the experiment's kind measures overload (``capacity``);
6. the counter windows agree: each server snapshot is taken at most
   :func:`alignment_tolerance_s` after its phase line, and the server counted the same
   requests in its window as the client did in its own, within the requests in flight plus
   :data:`WINDOW_COUNT_TOLERANCE`;
7. at shutdown, the server replied to every request the client counted, plus at most one
   in-flight request per connection and pipeline slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Open loop (wrk2's convention): a run that sent less than 99% of its schedule did not
# measure the offered load; it measured the server's capacity.
OPEN_LOOP_MIN_FRACTION = 0.99
# The load generator's preflight probe (loadgen/preflight.py) is one connection opened and
# closed before the ramp; a server may count it until it reads the EOF.
CONNECTIONS_SLACK = 1
# Window alignment. A snapshot is a SIGUSR1 round trip to the server, about 1 ms on an idle
# machine (each repeat records its lags); a shift of s seconds at one edge changes a
# per-window count by s / window. The tolerance, max(50 ms, 5% of the window), keeps that
# error at 5% for windows of 1 s and longer, well under the run-to-run spread measured in
# docs/sweep.md, and still accepts a snapshot delayed by a few scheduler slices of a loaded
# 2-CPU machine (sched(7): the default latency target is 6 ms per runnable task).
ALIGN_TOLERANCE_MIN_S = 0.05
ALIGN_TOLERANCE_FRACTION = 0.05
# Requests counted by the server in its window vs by the client in its own: the same
# bound as the alignment (5% per edge, both edges), plus the requests in flight.
WINDOW_COUNT_TOLERANCE = 2 * ALIGN_TOLERANCE_FRACTION


@dataclass(frozen=True)
class ValidityRules:
    """What makes a repeat of an experiment of one kind invalid, where kinds differ."""

    # In a capacity experiment the offered rate is raised past what the server sustains on
    # purpose: falling short of the offered rate is the measurement, not a fault.
    overload_is_measured: bool = False


STRICT = ValidityRules()
# Experiment kind -> rules; a kind not listed gets STRICT.
RULES: dict[str, ValidityRules] = {
    "active": STRICT,
    "idle": STRICT,
    "ltet": STRICT,
    "peers": STRICT,
    "latency": STRICT,
    "capacity": ValidityRules(overload_is_measured=True),
}
# muxlab load's exit status when it only fell short of its open-loop rate (LOAD_CONTRACT).
LOADGEN_OVERLOADED = 3


def rules_for(kinds: Iterable[str]) -> ValidityRules:
    """A point shared by experiments of several kinds obeys the strictest of their rules."""
    chosen = [RULES.get(kind, STRICT) for kind in kinds] or [STRICT]
    return ValidityRules(overload_is_measured=all(r.overload_is_measured for r in chosen))


def alignment_tolerance_s(window_s: float) -> float:
    return max(ALIGN_TOLERANCE_MIN_S, ALIGN_TOLERANCE_FRACTION * window_s)


@dataclass(frozen=True)
class RepeatEvidence:
    """What the checks read from one repeat: the load result, the server's counts."""

    connections: int
    idle: int
    pipeline: int
    loadgen_status: int
    load: dict[str, Any]  # muxlab load --json, schema 1 or 2
    window_s: float  # between the two server snapshots
    snapshot_lags_s: tuple[float, float]  # phase line read -> snapshot taken, each edge
    server_connections_open: int | None  # None: the server cannot count (nginx)
    server_replies_window: int | None
    server_replies_total: int | None


def open_loop_rates(load: dict[str, Any]) -> tuple[float, float] | None:
    """(offered, achieved) requests/s in open loop, ``None`` in closed loop.

    Schema 2 reports both in ``open_loop``; schema 1 only the configured rate
    (``config.rate_rps``) and the achieved ``rps``.
    """
    open_loop = load.get("open_loop")
    if isinstance(open_loop, dict):
        return float(open_loop["offered_rps"]), float(open_loop["achieved_rps"])
    rate = (load.get("config") or {}).get("rate_rps")
    if rate:
        return float(rate), float(load["rps"])
    return None


def repeat_problems(evidence: RepeatEvidence, rules: ValidityRules) -> tuple[str, ...]:
    """Every reason this repeat is not a valid sample; empty when it is one."""
    return (
        *_exit_and_errors(evidence, rules),
        *_connections(evidence),
        *_rate(evidence, rules),
        *_windows(evidence),
    )


def _exit_and_errors(evidence: RepeatEvidence, rules: ValidityRules) -> list[str]:
    problems = []
    accepted = {0, LOADGEN_OVERLOADED} if rules.overload_is_measured else {0}
    if evidence.loadgen_status not in accepted:
        problems.append(f"load generator exited {evidence.loadgen_status}")
    errors = {str(k): int(v) for k, v in evidence.load.get("errors", {}).items() if int(v)}
    if errors:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(errors.items()))
        problems.append(f"{sum(errors.values())} client errors ({kinds})")
    lost = evidence.load.get("worker_failures") or []
    if lost:
        problems.append(f"lost {len(lost)} load worker(s): {lost[0]}")
    return problems


def _connections(evidence: RepeatEvidence) -> list[str]:
    problems = []
    still_open = (evidence.load.get("connections") or {}).get("idle_open_at_end")
    if still_open is not None and int(still_open) != evidence.idle:
        problems.append(
            f"{still_open} of {evidence.idle} idle connections still open at the end (client)"
        )
    held = evidence.server_connections_open
    wanted = evidence.connections + evidence.idle
    if held is not None and not wanted <= held <= wanted + CONNECTIONS_SLACK:
        problems.append(f"the server held {held} connections in the window, not {wanted}")
    return problems


def _rate(evidence: RepeatEvidence, rules: ValidityRules) -> list[str]:
    rates = open_loop_rates(evidence.load)
    if rates is None or rules.overload_is_measured:
        return []
    offered, achieved = rates
    if achieved < OPEN_LOOP_MIN_FRACTION * offered:
        return [
            f"achieved {achieved:,.0f} of {offered:,.0f} requests/s offered "
            f"(< {OPEN_LOOP_MIN_FRACTION:.0%})"
        ]
    return []


def _windows(evidence: RepeatEvidence) -> list[str]:
    problems = []
    tolerance_s = alignment_tolerance_s(evidence.window_s)
    worst_lag_s = max(evidence.snapshot_lags_s)
    if worst_lag_s > tolerance_s:
        problems.append(
            f"server snapshot {worst_lag_s * 1e3:.0f} ms after the phase line "
            f"(tolerance {tolerance_s * 1e3:.0f} ms)"
        )
    in_flight = evidence.connections * evidence.pipeline
    client_window = int(evidence.load["requests_ok"])
    server_window = evidence.server_replies_window
    if server_window is not None:
        slack = in_flight + WINDOW_COUNT_TOLERANCE * client_window
        if abs(server_window - client_window) > slack:
            problems.append(
                f"{server_window} replies in the server's window, {client_window} in the client's"
            )
    served = evidence.server_replies_total
    counted = int(evidence.load["requests_total"])
    if served is not None and not 0 <= served - counted <= in_flight:
        problems.append(
            f"server replied {served} times, client counted {counted} (in flight <= {in_flight})"
        )
    return problems

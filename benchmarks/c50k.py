"""C50K on one machine: 50,000 connections held by multi-process servers (issue 12, item 3).

The preset: ``--connections`` (50,000) connections, ``--active`` of them (200) doing HTTP
requests in a closed loop and the rest idle, ramped at ``--connect-rate`` and held for
``--duration`` (60 s), against each server in turn: every muxlab backend run as
``muxlab serve --workers N --balance reuseport`` and nginx with N workers, each with its
own ``SO_REUSEPORT`` listener, so the kernel spreads the connections over the workers.
Each hold is :func:`benchmarks.hold.hold_one`: the same counts, kernel counters, accept
queue and per-worker memory as the C20K runs.

The plan fits the connections into the descriptor limit (``RLIMIT_NOFILE``; every socket
is a descriptor, at both ends): each server worker holds its share with its reserve
(:mod:`muxlab.fdbudget`), under the implementation's own descriptor ceiling from the
registry (select's ``FD_SETSIZE``), and each load-generator process holds an even split.
The load generator spreads its connections over loopback source addresses on its own
(about 28,000 ephemeral ports per source and destination address pair,
:func:`loadgen.connection.plan_sources`). A server whose plan needs more workers than
``--max-workers`` is refused with the reason, and a plan that does not fit the limit at
all is a one-line error before anything starts.

Run (root, in a private network namespace: see results/c50k/README.md)::

    ulimit -n 20000; python -m benchmarks.c50k --json results/c50k/c50k.json

``muxlab c50k`` is the same command (:mod:`benchmarks.c50k_cli`, which imports this module
only when it runs, so other subcommands start without it).
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.c50k_cli import C50kSpec, add_arguments, spec_from_args
from benchmarks.hold import (
    REUSEPORT_MARGIN,
    SYSCTLS,
    HoldConfig,
    check,
    format_outcome,
    hold_each,
)
from loadgen.connection import plan_sources
from muxlab.atomic import write_json_atomic
from muxlab.environment import environment, read_sysctl
from muxlab.errors import MuxlabError, SetupError, UsageError
from muxlab.fdbudget import (
    SELECT_RESERVE,
    SERVER_RESERVE,
    WORKER_RESERVE,
    fd_limits,
    raise_fd_limit,
)
from servers import registry

SCHEMA_VERSION = 1
# Load-generator processes at most: each is a Python interpreter ramping its share; past
# this a few CPUs measure process switching more than connections.
MAX_LOAD_PROCESSES = 8
# What the preset holds against: every implementation that serves HTTP on its own loop,
# as the registry names them (the Python peers are one process each).
SERVER_KINDS: tuple[registry.ImplKind, ...] = (
    "readiness backend",
    "completion loop",
    "C reference",
)


@dataclass(frozen=True)
class ServerPlan:
    server: str
    workers: int
    per_worker_budget: int  # connections one worker may hold (descriptors or ceiling)
    refused: str | None = None  # why it is not run, one line


@dataclass(frozen=True)
class C50kPlan:
    fd_hard_limit: int
    load_processes: int
    per_load_process: int  # connections each load-generator process holds
    source_addresses: int  # loopback source addresses the load generator spreads over
    servers: tuple[ServerPlan, ...]


def descriptor_limit() -> int:
    """The hard ``RLIMIT_NOFILE`` every process of the run raises its soft limit to."""
    soft, hard = fd_limits()
    return hard if hard >= 0 else soft


def server_plan(name: str, spec: C50kSpec, fd_limit: int) -> ServerPlan:
    """How many workers ``name`` needs: each holds its reuseport share with margin, within
    its descriptor budget and its registry ceiling (descriptors are numbered lowest first,
    so a select worker's connections stop at FD_SETSIZE minus its own)."""
    entry = registry.get(name)
    budget = fd_limit - SERVER_RESERVE
    ceiling = entry.max_connections(SELECT_RESERVE)
    if ceiling is not None:
        budget = min(budget, ceiling)
    if spec.workers is not None:
        workers = spec.workers
    else:
        workers = max(1, math.ceil(spec.connections * REUSEPORT_MARGIN / budget))
    share = spec.connections if workers == 1 else spec.connections / workers * REUSEPORT_MARGIN
    refused = entry.unavailable_reason("http")
    if refused is None and (workers > spec.max_workers or share > budget):
        limit = entry.ceiling_label() if ceiling is not None and ceiling < fd_limit else None
        per = f"{budget:,} connections per process"
        per += f" (descriptor ceiling {limit})" if limit else f" (RLIMIT_NOFILE {fd_limit:,})"
        if share > budget:
            refused = f"{workers} worker(s) would hold about {share:,.0f} each, above {per}"
        else:
            refused = (
                f"{spec.connections:,} connections at {per} need {workers} workers; "
                f"the plan allows {spec.max_workers}"
            )
    return ServerPlan(name, workers, budget, refused)


def make_plan(spec: C50kSpec) -> C50kPlan:
    """The plan for this machine's limits; :class:`SetupError` when the load generator
    cannot hold the connections, :class:`UsageError` for an impossible spec."""
    if spec.connections < 2 or not 1 <= spec.active < spec.connections:
        raise UsageError("--connections must be >= 2 and --active 1..connections-1")
    if spec.duration_s <= 0 or spec.connect_rate_cps <= 0 or spec.max_workers < 1:
        raise UsageError("--duration, --connect-rate and --max-workers must be > 0")
    fd_limit = descriptor_limit()
    per_process = fd_limit - WORKER_RESERVE
    if spec.load_processes is not None:
        processes = spec.load_processes
    else:
        processes = max(1, math.ceil(spec.connections / per_process))
    per_load = math.ceil(spec.connections / processes)
    if processes > MAX_LOAD_PROCESSES or per_load > per_process:
        raise SetupError(
            f"{spec.connections:,} connections need {per_load:,} descriptors in each of "
            f"{processes} load processes, above RLIMIT_NOFILE {fd_limit:,} minus "
            f"{WORKER_RESERVE} (or more than {MAX_LOAD_PROCESSES} processes): "
            "run 'ulimit -n 20000' first"
        )
    names = spec.servers or registry.names(*SERVER_KINDS)
    plans = tuple(server_plan(name, spec, fd_limit) for name in names)
    if all(p.refused for p in plans):
        raise SetupError("no server can hold the plan: " + "; ".join(refusals(plans)))
    return C50kPlan(fd_limit, processes, per_load, len(sources(spec)), plans)


def sources(spec: C50kSpec) -> tuple[str, ...]:
    """The loopback source addresses the load generator will spread over (the same rule)."""
    low, high = map(int, (read_sysctl("net.ipv4.ip_local_port_range") or "32768 60999").split())
    return plan_sources(socket.AF_INET, ("127.0.0.1", 0), spec.connections, (low, high))


def refusals(plans: Sequence[ServerPlan]) -> list[str]:
    return [f"{p.server}: {p.refused}" for p in plans if p.refused]


def hold_config(spec: C50kSpec, plan: C50kPlan, server: ServerPlan) -> HoldConfig:
    return HoldConfig(
        servers=(server.server,),
        connections=spec.active,
        idle=spec.connections - spec.active,
        duration_s=spec.duration_s,
        connect_rate_cps=spec.connect_rate_cps,
        timeout_s=spec.timeout_s,
        load_processes=plan.load_processes,
        workers=server.workers,
    )


def verdict(spec: C50kSpec, outcome: dict[str, Any]) -> dict[str, Any]:
    """What C50K asks, checked: every connection held to the end, no error, and the
    workers' own connection counts adding up to the connections asked."""
    if "failed" in outcome:
        return {"held_all": False, "no_errors": False, "workers_sum_to_total": False}
    per_worker = [w["connections"] for w in outcome["workers"]]
    return {
        "held_all": outcome["connections_held_at_end"] == spec.connections,
        "no_errors": not outcome["errors"] and outcome["load_exit_status"] == 0,
        "workers_sum_to_total": sum(per_worker) == spec.connections,
    }


def run(spec: C50kSpec, plan: C50kPlan, work_dir: Path, outcomes: list[dict[str, Any]]) -> None:
    """Hold against each server the plan runs, appending each outcome as it ends."""
    for server in plan.servers:
        if server.refused:
            print(f"{server.server:14} refused: {server.refused}", flush=True)
            continue
        config = hold_config(spec, plan, server)
        check(config)
        outcome = hold_each(server.server, config, work_dir)
        outcome["c50k"] = verdict(spec, outcome)
        outcomes.append(outcome)
        print(format_outcome(outcome), flush=True)


def result_json(
    spec: C50kSpec, plan: C50kPlan, outcomes: list[dict[str, Any]], interrupted: bool
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "spec": asdict(spec),
        "plan": asdict(plan),
        "refused": {p.server: p.refused for p in plan.servers if p.refused},
        "sysctls": {name: read_sysctl(name) for name in SYSCTLS},
        "environment": environment(),
        "interrupted": interrupted,
        "outcomes": outcomes,
    }


def run_spec(spec: C50kSpec, json_path: Path | None) -> int:
    """Plan, hold against each server, write the JSON (what was measured, even after
    Ctrl-C); a plan that does not fit raises :class:`MuxlabError` before anything runs.
    Exit 0 only when every server held every connection with no error."""
    raise_fd_limit()  # the servers and load processes started here inherit it
    plan = make_plan(spec)
    print(
        f"c50k: {spec.connections:,} connections ({spec.active} active), "
        f"{plan.load_processes} load processes of {plan.per_load_process:,}, "
        f"{plan.source_addresses or 1} source address(es), RLIMIT_NOFILE "
        f"{plan.fd_hard_limit:,}",
        flush=True,
    )
    outcomes: list[dict[str, Any]] = []
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="muxlab-c50k-") as work_dir:
            run(spec, plan, Path(work_dir), outcomes)
    except KeyboardInterrupt:
        interrupted = True
    if json_path is not None and outcomes:
        write_json_atomic(json_path, result_json(spec, plan, outcomes, interrupted))
    if interrupted:
        return 130
    return 0 if all(all(o["c50k"].values()) for o in outcomes) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.c50k", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_spec(spec_from_args(args), args.json)
    except MuxlabError as exc:
        print(f"c50k: error: {exc}", file=sys.stderr)
        return exc.exit_status


if __name__ == "__main__":
    sys.exit(main())

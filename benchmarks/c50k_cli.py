"""``muxlab c50k``: the C50K preset's command line (the run is :mod:`benchmarks.c50k`).

Kept apart so that building ``muxlab``'s parser does not import the harness: every
subcommand module is imported to build it, and ``muxlab serve`` should start fast.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from muxlab.clibase import HelpFormatter, Subparsers

# "Several" worker processes: past this a plan on a few CPUs measures process switching
# more than a mechanism; select's plan for C50K passes it (FD_SETSIZE).
MAX_WORKERS = 8


@dataclass(frozen=True)
class C50kSpec:
    """The preset's load; the defaults are C50K."""

    connections: int = 50_000  # active + idle
    active: int = 200
    duration_s: float = 60.0
    # Connects per second over all load processes: the hold is about errors and memory,
    # so the ramp is gentle on a shared machine.
    connect_rate_cps: float = 2500.0
    timeout_s: float = 5.0
    servers: tuple[str, ...] = ()  # () every implementation of c50k.SERVER_KINDS
    workers: int | None = None  # None: the fewest that fit, per server
    load_processes: int | None = None  # None: the fewest that fit
    max_workers: int = MAX_WORKERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = C50kSpec()
    add = parser.add_argument
    add("--connections", type=int, default=default.connections, help="active + idle")
    add("--active", type=int, default=default.active, help="connections doing requests")
    add("--duration", type=float, default=default.duration_s, help="hold, seconds")
    add("--connect-rate", type=float, default=default.connect_rate_cps, help="per second")
    add("--timeout", type=float, default=default.timeout_s, help="connect timeout, seconds")
    add("--servers", default="", help="comma-separated (default: every backend and nginx)")
    add("--workers", type=int, default=None, help="server workers (default: fewest that fit)")
    add("--load-processes", type=int, default=None, help="(default: fewest that fit)")
    add("--max-workers", type=int, default=default.max_workers, help="refuse plans past it")
    add("--json", type=Path, default=None, help="write the result here (atomically)")


def spec_from_args(args: argparse.Namespace) -> C50kSpec:
    return replace(
        C50kSpec(),
        connections=args.connections,
        active=args.active,
        duration_s=args.duration,
        connect_rate_cps=args.connect_rate,
        timeout_s=args.timeout,
        servers=tuple(s for s in args.servers.split(",") if s),
        workers=args.workers,
        load_processes=args.load_processes,
        max_workers=args.max_workers,
    )


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "c50k",
        help="hold 50,000 connections against multi-process servers and nginx",
        description="Hold --connections (50,000) connections, --active of them busy, "
        "against every backend as 'muxlab serve --workers N --balance reuseport' and nginx "
        "with N workers; N, the load processes and the source addresses are planned from "
        "RLIMIT_NOFILE (results/c50k/README.md).",
        formatter_class=HelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.c50k import run_spec

    return run_spec(spec_from_args(args), args.json)

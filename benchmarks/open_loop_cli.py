"""The sweep's flags for the open-loop experiments, kept apart from ``benchmarks.cli``.

Light on imports: ``muxlab`` builds every subcommand's parser on every start.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from muxlab.errors import UsageError

if TYPE_CHECKING:
    from benchmarks.experiments import SweepPlan

FLAGS = ("slo_ms", "latency_rate")


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--slo-ms",
        type=positive,
        default=None,
        help="capacity experiments: the p99 latency objective a step must meet, ms (default: 5)",
    )
    group.add_argument(
        "--latency-rate",
        type=positive,
        default=None,
        help="latency experiments: the fixed offered rate, req/s (default: half the lowest "
        "capacity measured in the same run, else 1000)",
    )


def apply(plan: SweepPlan, args: argparse.Namespace) -> SweepPlan:
    """The plan with ``--slo-ms`` and ``--latency-rate`` laid over its open-loop specs."""
    from benchmarks.experiments import OpenLoopSpec

    experiments = []
    for experiment in plan.experiments:
        spec = experiment.open_loop or OpenLoopSpec()
        if experiment.kind == "capacity" and args.slo_ms is not None:
            experiment = replace(experiment, open_loop=replace(spec, slo_ms=args.slo_ms))
        if experiment.kind == "latency" and args.latency_rate is not None:
            experiment = replace(experiment, open_loop=replace(spec, rate_rps=args.latency_rate))
        experiments.append(experiment)
    return replace(plan, experiments=tuple(experiments))


def announce(plan: SweepPlan, run_overhead_s: float) -> None:
    """The open-loop experiments' share of the time: an upper bound, every search taking
    its ``max_steps``; a search usually stops after half of them."""
    from benchmarks.experiments import OPEN_LOOP_KINDS, OpenLoopSpec, ceiling_reason
    from benchmarks.sweep import CONNECT_S_PER_CONNECTION

    steps = 0
    seconds = 0.0
    for experiment in plan.experiments:
        if experiment.kind not in OPEN_LOOP_KINDS:
            continue
        spec = experiment.open_loop or OpenLoopSpec()
        per_cell = spec.repeats * (spec.max_steps if experiment.kind == "capacity" else 1)
        for point in experiment.loads():
            if ceiling_reason(point.impl, point.total_connections) is not None:
                continue  # skipped, not measured
            steps += per_cell
            seconds += per_cell * (
                spec.warmup_s
                + spec.window_s
                + run_overhead_s
                + CONNECT_S_PER_CONNECTION * point.total_connections
            )
    if steps:
        print(
            f"muxlab sweep: then open-loop experiments: at most {steps} runs, "
            f"at most {seconds / 60:.1f} min",
            file=sys.stderr,
        )


def refuse_on_resume(args: argparse.Namespace) -> None:
    given = [f"--{f.replace('_', '-')}" for f in FLAGS if getattr(args, f) is not None]
    if given:
        raise UsageError(f"--resume continues the stored plan; drop {', '.join(given)}")

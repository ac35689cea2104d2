"""``muxlab sweep``: run the experiment matrix, write results, charts and the summary.

Heavy modules (numpy, matplotlib, the peers) are imported inside :func:`run`, because
``muxlab`` builds every subcommand's parser on every start, ``muxlab serve`` included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import cluster_cli, open_loop_cli
from benchmarks.names import check_safe_name
from muxlab.clibase import HelpFormatter, Subparsers
from muxlab.errors import MuxlabError, UsageError
from muxlab.fdbudget import raise_fd_limit, sweep_connection_budget

if TYPE_CHECKING:
    from benchmarks.cluster_sweep import ClusterSession
    from benchmarks.experiments import SweepPlan
    from benchmarks.results import ResultsFile
    from benchmarks.sweep import SweepConfig

# Seconds one run costs besides warm-up and measurement: two interpreters start, the load
# generator connects, everything is reaped. Only for the time estimate.
RUN_OVERHEAD_S = 1.5
# Exit status when the sweep finished but some point has no valid repeat: distinct from 1
# (a run that could not start) and 2 (usage), so CI can tell "measured, but not all" apart.
EXIT_POINT_FAILED = 3


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run the benchmark matrix and draw the charts",
        description=(
            "Run experiments (active connections, idle connections, LT vs ET, reference "
            "peers): for each point start the server pinned to one CPU, load it with "
            "'muxlab load' pinned to the others, read the server's counters and CPU time "
            "at the start and end of the measurement window, and reap everything. Writes "
            "OUT/RUN_ID/results.json after every run, results.csv, charts (PNG and SVG) "
            "and prints a summary with the headline ratios. Ctrl-C keeps what was measured; "
            "--resume continues. See docs/sweep.md."
        ),
        formatter_class=HelpFormatter,
    )
    plan = parser.add_argument_group("what to measure (not with --resume)")
    plan.add_argument(
        "--preset",
        default=None,
        help="quick (<= 2 min, CI), default (about 22 min on 2 cores) or full (to the fd limit) "
        "(default: default)",
    )
    plan.add_argument(
        "--config", type=Path, default=None, help="TOML plan (see docs/sweep.md); replaces --preset"
    )
    plan.add_argument(
        "--experiments",
        type=name_list,
        default=None,
        help="comma-separated experiment names to keep (e.g. idle,ltet)",
    )
    plan.add_argument(
        "--impls",
        type=name_list,
        default=None,
        help="comma-separated backends/peers to keep (e.g. poll,epoll-lt)",
    )
    plan.add_argument(
        "--connections",
        type=int_list,
        default=None,
        help="active connections for the active, ltet and peers experiments",
    )
    plan.add_argument(
        "--idle", type=int_list, default=None, help="idle connections for the idle experiment"
    )
    plan.add_argument(
        "--sizes",
        type=int_list,
        default=None,
        help="message sizes in bytes for the ltet experiment",
    )
    plan.add_argument("--repeats", type=int, default=None, help="runs per point")
    plan.add_argument(
        "--retries",
        type=int,
        default=None,
        help="extra attempts of a repeat whose run was invalid (default: 2)",
    )
    plan.add_argument("--duration", type=float, default=None, help="measurement window, s")
    plan.add_argument("--warmup", type=float, default=None, help="discarded warm-up, s")
    open_loop_cli.add_arguments(plan)
    parser.add_argument(
        "--out-dir", type=Path, default=Path("results"), help="directory that receives RUN_ID/"
    )
    parser.add_argument(
        "--run-id", default=None, help="name of the run directory (default: UTC time and preset)"
    )
    parser.add_argument(
        "--resume",
        default=None,
        metavar="RUN",
        help="continue an interrupted run: its run id (under --out-dir) "
        "or its directory; finished runs are kept, none is repeated",
    )
    parser.add_argument(
        "--server-cpu",
        type=int,
        default=None,
        help="CPU for the server (default: the first available)",
    )
    parser.add_argument(
        "--client-cpus",
        type=int_list,
        default=None,
        help="CPUs for the load generator (default: all the others)",
    )
    parser.add_argument(
        "--loadgen",
        default=None,
        help="command that runs the load generator (default: "
        "'python -m muxlab load'); it must accept muxlab load's options",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="run anyway with the server on a client CPU, or resume a run made from "
        "another commit or environment",
    )
    cluster_cli.add_options(parser)
    parser.add_argument("--no-charts", action="store_true", help="skip drawing the charts")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks import provenance, sweep
    from benchmarks.results import now_iso

    command = ["muxlab", *sys.argv[1:]]
    if args.resume is not None:
        results = resume_results(args)
        provenance.check_resume(results.data, provenance.provenance(), force=args.force)
        target = cluster_cli.target_from_topology(results.topology, args.max_skew_ms)
        results.data["resumed"].append({"command": command, "at": now_iso()})
    else:
        target = cluster_cli.target_from_args(args)
    with cluster_cli.open_session(target) as session:
        if args.resume is None:
            results = new_results(args, command, session)
        elif session is not None:
            cluster_cli.check_same_hosts(results.topology, session.topology, args.force)
        pinning = results.data["pinning"]
        config = sweep.SweepConfig(
            run_dir=results.run_dir,
            server_cpu=pinning["server_cpu"],
            client_cpus=tuple(pinning["client_cpus"]),
            loadgen=tuple(pinning["loadgen"]),
            progress=sys.stderr.isatty() and not args.quiet,
            cluster=session,
        )
        return run_plan(results, config, draw=not args.no_charts)


def new_results(
    args: argparse.Namespace, command: list[str], session: ClusterSession | None
) -> ResultsFile:
    """A new run's results file: its plan, pinning, environment and topology."""
    from benchmarks import provenance, sweep
    from benchmarks.results import ResultsFile
    from benchmarks.topology import LOCAL
    from muxlab.environment import environment

    plan = choose_plan(args)
    notes: list[str] = []
    if session is not None:
        plan, notes = cluster_cli.local_only(plan)
    run_id = default_run_id(plan.preset) if args.run_id is None else args.run_id
    check_safe_name("--run-id", run_id)
    run_dir = args.out_dir / run_id
    if (run_dir / "results.json").exists():
        raise UsageError(f"{run_dir} already has results; use --resume {run_dir}")
    server_cpu: int | None
    if session is None:
        default_server, default_clients = sweep.default_cpus()
        server_cpu = default_server if args.server_cpu is None else args.server_cpu
        client_cpus = default_clients if args.client_cpus is None else args.client_cpus
        check_cpus(server_cpu, client_cpus, force=args.force)
    else:
        # CPUs of other hosts: each host checks its own when it starts its part.
        server_cpu, client_cpus = args.server_cpu, args.client_cpus or ()
    loadgen = shlex.split(args.loadgen) if args.loadgen else list(sweep.LOADGEN)
    if not loadgen or shutil.which(loadgen[0]) is None:
        raise UsageError(f"--loadgen: cannot run {args.loadgen!r}: no such program")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise UsageError(f"--out-dir {args.out_dir} exists and is not a directory")
    notes.append(
        f"descriptor budget per process: {sweep_connection_budget()} connections "
        "(the server and the load generator each hold one per connection)"
    )
    return ResultsFile.create(
        run_dir,
        run_id,
        plan,
        command,
        environment(),
        {"server_cpu": server_cpu, "client_cpus": list(client_cpus), "loadgen": loadgen},
        notes,
        provenance.provenance(server_cpu, client_cpus),
        LOCAL if session is None else session.topology,
    )


def run_plan(results: ResultsFile, config: SweepConfig, draw: bool) -> int:
    """Every unsettled run of the stored plan, then the summary and charts."""
    from benchmarks import experiments, sweep
    from benchmarks.herd import run_scaling
    from benchmarks.open_loop import run_open_loop

    plan = experiments.plan_from_json(results.data["plan"])
    raise_fd_limit()
    results.set_state("running")
    announce(results, plan)
    open_loop_cli.announce(plan, RUN_OVERHEAD_S)
    try:
        sweep.run_points(results, plan, config)
        run_open_loop(results, plan, config)
        run_scaling(results, plan, config)
    except KeyboardInterrupt:
        results.set_state("interrupted")
        results.write_csv()
        print(sweep.interrupted_message(results.run_dir), file=sys.stderr)
        return 130
    except MuxlabError:
        # A lost host: what was measured stays, and --resume continues from it.
        results.set_state("interrupted")
        results.write_csv()
        raise
    results.set_state("complete")
    return finish(results, draw=draw)


def choose_plan(args: argparse.Namespace) -> SweepPlan:
    from benchmarks import experiments

    if args.config:
        plan = experiments.load_toml(args.config)
    else:
        plan = experiments.preset(args.preset or "default")
    flags = experiments.PlanOverrides(
        experiments=args.experiments,
        impls=args.impls,
        connections=args.connections,
        idle=args.idle,
        msg_bytes=args.sizes,
        repeats=args.repeats,
        retries=args.retries,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    return open_loop_cli.apply(experiments.apply_overrides(plan, flags), args)


def resume_results(args: argparse.Namespace) -> ResultsFile:
    from benchmarks.results import SCHEMA_VERSION, ResultsFile

    plan_flags = (
        "preset",
        "config",
        "experiments",
        "impls",
        "connections",
        "idle",
        "sizes",
        "repeats",
        "retries",
        "duration",
        "warmup",
        "run_id",
        "server_cpu",
        "client_cpus",
        "loadgen",
        "cluster",
        "server_host",
    )
    given = [f"--{f.replace('_', '-')}" for f in plan_flags if getattr(args, f) is not None]
    if given:
        raise UsageError(f"--resume continues the stored plan; drop {', '.join(given)}")
    open_loop_cli.refuse_on_resume(args)
    # An existing directory is the user's own choice of place; anything else is a run id,
    # which must stay one component under --out-dir.
    path = Path(args.resume)
    if not path.is_dir():
        path = args.out_dir / check_safe_name("--resume run id", args.resume)
    if not path.exists():
        raise UsageError(f"no run {args.resume!r} (looked in {args.out_dir})")
    results = ResultsFile.load(path)
    if results.data["schema_version"] != SCHEMA_VERSION:
        # A schema 1 file has no validity, retries or per-point repeat counts to go on.
        raise UsageError(
            f"{results.path} was written by an older muxlab (schema_version "
            f"{results.data['schema_version']}); start a new run"
        )
    return results


def check_cpus(server_cpu: int, client_cpus: tuple[int, ...], force: bool = False) -> None:
    """Every CPU named must be one this process may run on (``sched_getaffinity(2)``):
    otherwise every point would fail, one by one, after a server that cannot start.

    A server sharing a CPU with the load generator measures the contention between them,
    not the server: refused unless ``force`` (a one-CPU machine has no other choice)."""
    available = os.sched_getaffinity(0)
    unknown = sorted({server_cpu, *client_cpus} - available)
    if unknown:
        names = ", ".join(map(str, unknown))
        raise UsageError(f"CPU {names} not available here (available: {sorted(available)})")
    if server_cpu in client_cpus and not force:
        raise UsageError(
            f"server CPU {server_cpu} is also a client CPU; pick others with --server-cpu "
            "and --client-cpus, or accept the contention with --force"
        )


def default_run_id(preset: str | None) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{preset or 'custom'}"


def announce(results: ResultsFile, plan: SweepPlan) -> None:
    from benchmarks import sweep

    records = results.data["points"]
    todo = [r for r in records if r["status"] == "pending"]
    runs = sweep.unsettled_slots(results, plan)
    estimate_s = estimate_seconds(plan, todo)
    print(
        f"muxlab sweep: run {results.data['run_id']}: {len(todo)} of {len(records)} points "
        f"to measure, {runs} runs, about {estimate_s / 60:.1f} min; writing {results.run_dir}",
        file=sys.stderr,
    )


def estimate_seconds(plan: SweepPlan, records: list[dict[str, Any]]) -> float:
    """Time for the unmeasured repeats of ``records`` (result-file point records),
    retries not counted: the budget each preset's docstring states."""
    from benchmarks import sweep

    per_run = plan.warmup_s + plan.duration_s + RUN_OVERHEAD_S
    total = 0.0
    for record in records:
        runs = record["repeats_wanted"] - record["repeats_valid"]
        ramp = sweep.CONNECT_S_PER_CONNECTION * (
            record["spec"]["connections"] + record["spec"]["idle"]
        )
        total += runs * (per_run + ramp)
    return total


def finish(results: ResultsFile, draw: bool) -> int:
    """Summary, CSV, charts; exit 0, or :data:`EXIT_POINT_FAILED` when a point or an
    open-loop search failed."""
    from benchmarks.open_loop import failures
    from benchmarks.plot import plot_results
    from benchmarks.results import validate
    from benchmarks.summary import format_report

    csv_paths = results.write_csv()
    print(format_report(results.data))
    for problem in validate(results.data):
        print(f"muxlab sweep: warning: {problem}", file=sys.stderr)
    outputs = [results.path, *csv_paths]
    if draw:
        outputs += plot_results(results.data, results.run_dir / "charts")
    print(f"\nmuxlab sweep: wrote {len(outputs)} files under {results.run_dir}", file=sys.stderr)
    failed = [r["key"] for r in results.data["points"] if r["status"] == "failed"]
    failed += failures(results.data)
    if failed:
        print(
            f"muxlab sweep: {len(failed)} point(s) failed (no valid repeat): {', '.join(failed)}",
            file=sys.stderr,
        )
        return EXIT_POINT_FAILED
    return 0

"""Run a sweep: for every point, server up, load, snapshots at the phase lines, teardown.

One run of one point, in the manner of vmbench's orchestrator:

1. start the server (``muxlab serve``, a Python peer, or nginx) pinned to its own CPU and
   wait for its ready line;
2. run the load generator pinned to the other CPUs (:func:`loadgen.child.run_load_in_child`:
   a typed ``LoadConfig`` in, a ``LoadResult`` out, ``muxlab load`` in a process of its
   own); it ramps its connections, runs a warm-up that is discarded, and announces when
   the measurement window opens and when it closes;
3. at each of those two moments, read the server's counters (SIGUSR1) and CPU time, so
   every server-side number is a delta over the client's window;
4. stop the load generator and the server and reap both, in ``finally``, whatever
   happened, Ctrl-C included;
5. judge the repeat (:mod:`benchmarks.validity`): an invalid one is kept in the file with
   its reasons, left out of every median, and its slot is tried again (``retries``).

Order: within an experiment, repeats run round-robin over its points (repeat 1 of every
point, then repeat 2, ...), so a slow drift of the machine (another job, thermal
throttling) lands on every implementation alike instead of on the last one measured.

With ``--cluster`` (:mod:`benchmarks.cluster_sweep`) step 1 starts the server on its host
through Dask and step 2 runs the load over the cluster's client hosts; the rest is the
same.

The results file is rewritten after every run, so Ctrl-C keeps every finished run and
``--resume`` picks up at the first unsettled repeat slot, in the same order.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tqdm import tqdm

from benchmarks.experiments import ExperimentSpec, PointSpec, SweepPlan
from benchmarks.results import (
    ResultsFile,
    RunResult,
    UnmeasuredRun,
    now_iso,
    slot_attempts,
    slot_settled,
)
from benchmarks.validity import RepeatEvidence, repeat_problems, rules_for
from loadgen.child import LOAD_COMMAND, ChildRun, LoadChildError, run_load_in_child
from loadgen.config import LoadConfig, load_protocol
from loadgen.phase_lines import Phase
from loadgen.result import EXIT_INTERRUPTED, SCHEMA_VERSION, LoadResult
from servers import registry
from servers.process import ServerProcessError
from servers.protocols import HTTP_OK
from servers.registry import ServerRequest

if TYPE_CHECKING:
    from benchmarks.cluster_sweep import ClusterSession

LOADGEN = LOAD_COMMAND  # what --loadgen replaces: a program with muxlab load's options
# Counters whose difference between the two snapshots means "work done in the window".
DELTA_COUNTERS = (
    "wait_calls",
    "events",
    "accepts",
    "reads",
    "reads_eagain",
    "writes",
    "writes_eagain",
    "ctl_calls",
    "syscalls",
    "partial_writes",
    "bytes_in",
    "bytes_out",
    "connections_accepted",
)
# The load generator opens its connections at this rate before its warm-up starts: fast
# enough that 10,000 idle connections take 2 s, slow enough that a select or poll server,
# whose accept loop slows down as it holds more descriptors, keeps its listen backlog
# (4096) from overflowing, which would cost a 1 s SYN retransmit (tcp(7)).
CONNECT_RATE_CPS = 5000
CONNECT_S_PER_CONNECTION = 1 / CONNECT_RATE_CPS


class PointFailed(Exception):
    """One run of a point produced no valid measurement; the sweep goes on."""


class ServerUnderTest(Protocol):
    """What a run needs from a server: :class:`ServerProcess` and :class:`NginxServer`."""

    @property
    def address(self) -> tuple[str, int]: ...

    def start(self) -> Any: ...

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any] | None: ...

    def counters(self, timeout_s: float = 5.0) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SweepConfig:
    run_dir: Path
    server_cpu: int | None
    client_cpus: tuple[int, ...]
    loadgen: tuple[str, ...] = LOADGEN
    timeout_s: float = 5.0
    progress: bool = False
    # --cluster: the server on its host and the load from the client hosts; None: here.
    cluster: ClusterSession | None = None


@dataclass(frozen=True)
class Snapshot:
    at_ns: int
    counters: dict[str, Any]
    lag_s: float = 0.0  # from reading the phase line to the snapshot taken

    @property
    def cpu_s(self) -> float:
        return float(self.counters["cpu_user_s"]) + float(self.counters["cpu_system_s"])


def default_cpus() -> tuple[int, tuple[int, ...]]:
    """The server's CPU and the load generator's: the first available, and the rest."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return cpus[0], (cpus[0],)
    return cpus[0], tuple(cpus[1:])


def unavailable_reason(point: PointSpec) -> str | None:
    return registry.get(point.impl).unavailable_reason(point.protocol)


def make_server(point: PointSpec, cpu: int | None, log_path: Path | None = None) -> ServerUnderTest:
    """The point's server, not started, as its registry entry starts it."""
    request = ServerRequest(
        point.protocol, cpu, point.total_connections, log_path, tuple(point.server_args())
    )
    return registry.get(point.impl).server(request)


def reply_bytes(point: PointSpec) -> int:
    return point.msg_bytes if point.protocol == "echo" else len(HTTP_OK)


def load_config(
    point: PointSpec, plan: SweepPlan, config: SweepConfig, host: str, port: int
) -> LoadConfig:
    """What the load generator is asked to do for one run of ``point``."""
    return LoadConfig(
        host=host,
        port=port,
        protocol=load_protocol(point.protocol),
        connections=point.connections,
        idle=point.idle,
        processes=len(config.client_cpus) or 1,
        cpus=config.client_cpus,
        duration_s=plan.duration_s,
        warmup_s=plan.warmup_s,
        pipeline=point.pipeline,
        timeout_s=config.timeout_s,
        connect_rate_cps=CONNECT_RATE_CPS,
        size_bytes=point.msg_bytes if point.protocol == "echo" else LoadConfig.size_bytes,
        rate_rps=point.rate_rps,
    )


def take_snapshot(server: ServerUnderTest, line_read_ns: int) -> Snapshot:
    try:
        counters = server.counters()
    except (ServerProcessError, OSError) as exc:
        raise PointFailed(f"server did not report its counters: {exc}") from None
    at_ns = time.monotonic_ns()
    return Snapshot(at_ns, counters, (at_ns - line_read_ns) / 1e9)


def run_point_once(
    point: PointSpec,
    plan: SweepPlan,
    config: SweepConfig,
    repeat: int,
    attempt: int = 1,
    kinds: tuple[str, ...] = (),
) -> RunResult:
    """One run of one point, judged by the rules of ``kinds``; always reaps the server and
    the load generator. :class:`PointFailed` when there is nothing to judge."""
    stem = f"{point.key.replace('/', '_')}-r{repeat}" + (f"a{attempt}" if attempt > 1 else "")
    json_rel = f"loadgen/{stem}.json"
    json_path = config.run_dir / json_rel
    json_path.parent.mkdir(parents=True, exist_ok=True)
    started_at = now_iso()
    log_path = config.run_dir / "servers" / f"{stem}.log"
    server = (
        make_server(point, config.server_cpu, log_path)
        if config.cluster is None
        else config.cluster.make_server(point, config.server_cpu, log_path)
    )
    snapshots: dict[Phase, Snapshot] = {}

    def on_phase(phase: Phase) -> None:
        read_ns = time.monotonic_ns()
        if phase == "measure" or "measure" in snapshots:
            snapshots[phase] = take_snapshot(server, read_ns)

    final: dict[str, Any] | None = None
    try:
        try:
            server.start()
        except ServerProcessError as exc:
            raise PointFailed(f"server did not start: {exc}") from None
        host, port = server.address
        load = load_config(point, plan, config, host, port)
        child = run_load(point, plan, config, load, json_path, on_phase)
        if child.status == EXIT_INTERRUPTED:
            raise KeyboardInterrupt
        before, after = snapshots.get("measure"), snapshots.get("end")
        if before is None or after is None or child.result is None:
            raise PointFailed(
                f"load generator exited {child.status}: {child.stderr_tail or 'no output'}"
            )
    finally:
        final = server.stop()
    run = build_result(point, repeat, started_at, child.status, json_rel, before, after, final,
                       child.result)  # fmt: skip
    return judge(replace(run, attempt=attempt), point, child.result, kinds)


def run_load(
    point: PointSpec,
    plan: SweepPlan,
    config: SweepConfig,
    load: LoadConfig,
    json_path: Path,
    on_phase: Callable[[Phase], None],
) -> ChildRun:
    """The run's load: from the cluster's client hosts, or ``muxlab load`` in a child."""
    if config.cluster is not None:
        return config.cluster.run_load(load, json_path, on_phase)
    try:
        return run_load_in_child(load, json_path, on_phase,
                                 deadline_s=run_budget_s(point, plan, config),
                                 command=config.loadgen)  # fmt: skip
    except LoadChildError as exc:
        raise PointFailed(str(exc)) from None


def run_budget_s(point: PointSpec, plan: SweepPlan, config: SweepConfig) -> float:
    """How long the load generator may stay silent: its ramp, phases, drain and report."""
    return (
        plan.warmup_s
        + plan.duration_s
        + 2 * config.timeout_s
        + 10.0
        + CONNECT_S_PER_CONNECTION * point.total_connections
    )


def build_result(
    point: PointSpec,
    repeat: int,
    started_at: str,
    status: int,
    json_rel: str,
    before: Snapshot,
    after: Snapshot,
    final: dict[str, Any] | None,
    load: LoadResult,
) -> RunResult:
    """The run's numbers, from the server's snapshots and the load generator's result."""
    window_s = (after.at_ns - before.at_ns) / 1e9
    server_cpu_s = after.cpu_s - before.cpu_s
    delta = {
        name: int(after.counters[name]) - int(before.counters[name])
        for name in DELTA_COUNTERS
        if name in after.counters and name in before.counters
    }
    per_reply = reply_bytes(point)
    replies_window = delta["bytes_out"] // per_reply if "bytes_out" in delta else None
    replies_total = int(final["bytes_out"]) // per_reply if final and "bytes_out" in final else None
    # The busiest load process, the parent included: one saturated worker is enough to
    # hold a run back, however idle the others were (LoadResult.client_bound says it).
    client_util = max((*load.client_cpu, load.parent_cpu), default=0.0)
    requests = replies_window if replies_window is not None else load.requests_ok
    metrics = derived_metrics(delta, server_cpu_s, window_s, requests)
    metrics.update(
        rps=load.rps,
        mib_per_s=load.mib_per_s,
        p50_us=load.latency.p50,
        p99_us=load.latency.p99,
        client_cpu_util=client_util,
    )
    return RunResult(
        repeat=repeat,
        started_at=started_at,
        loadgen_status=status,
        loadgen_json=json_rel,
        window_s=window_s,
        requests_ok=load.requests_ok,
        requests_total=load.requests_total,
        errors=dict(load.errors),
        latency_us=load.latency.to_json(),
        client_cpu=load.client_cpu,
        client_bound=load.client_bound,
        server_cpu_s=server_cpu_s,
        server_delta=delta,
        server_replies_window=replies_window,
        server_replies_total=replies_total,
        idle_open_at_end=load.connections.idle_open_at_end,
        metrics=metrics,
        server_connections_open=before.counters.get("connections_open"),
        client_window_s=load.duration_s,
        snapshot_lags_s=(before.lag_s, after.lag_s),
        parent_cpu=load.parent_cpu,
        load_schema=SCHEMA_VERSION,
        server_connections_accepted=(
            int(final["connections_accepted"])
            if final and "connections_accepted" in final
            else None
        ),
    )


def judge(run: RunResult, point: PointSpec, load: LoadResult, kinds: tuple[str, ...]) -> RunResult:
    """The run with its validity (benchmarks.validity) under its experiments' rules."""
    evidence = RepeatEvidence(
        connections=point.connections,
        idle=point.idle,
        pipeline=point.pipeline,
        loadgen_status=run.loadgen_status,
        load=load.to_json(),
        window_s=run.window_s,
        snapshot_lags_s=run.snapshot_lags_s or (0.0, 0.0),
        server_connections_open=run.server_connections_open,
        server_replies_window=run.server_replies_window,
        server_replies_total=run.server_replies_total,
    )
    problems = repeat_problems(evidence, rules_for(kinds))
    return replace(run, valid=not problems, problems=problems)


def derived_metrics(
    delta: dict[str, int], cpu_s: float, window_s: float, requests: int
) -> dict[str, float | None]:
    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        if numerator is None or not denominator:
            return None
        return numerator / denominator

    waits = delta.get("wait_calls")
    return {
        "cpu_us_per_request": ratio(cpu_s * 1e6, requests),
        # CPU per wait call includes the dispatch of what it returned: the loop's whole
        # cost divided by its iterations (docs/sweep.md).
        "wait_cpu_us": ratio(cpu_s * 1e6, waits),
        "wait_calls_per_request": ratio(waits, requests),
        "events_per_wait": ratio(delta.get("events"), waits),
        "reads_per_request": ratio(delta.get("reads"), requests),
        "reads_eagain_per_request": ratio(delta.get("reads_eagain"), requests),
        # Counters.syscalls(): every wait, recv, send, accept and epoll_ctl, or for the
        # ring its io_uring_enter calls. A reference peer has none: None, not 0.
        "syscalls_per_request": ratio(delta.get("syscalls"), requests),
        "server_cpu_util": ratio(cpu_s, window_s),
    }


# -- the whole sweep -------------------------------------------------------------------


def unsettled_slots(results: ResultsFile, plan: SweepPlan) -> int:
    """Repeat slots still to measure (each may take up to 1 + retries runs)."""
    return sum(
        1
        for point in plan.points()
        for n in range(1, plan.repeats_of(point) + 1)
        if results.point(point.key)["status"] == "pending"
        and not slot_settled(results.point(point.key), n, plan.retries)
    )


def run_points(results: ResultsFile, plan: SweepPlan, config: SweepConfig) -> None:
    """Measure every unsettled repeat slot, round-robin within each experiment.

    KeyboardInterrupt propagates after the last save.
    """
    with tqdm(
        total=unsettled_slots(results, plan),
        unit="run",
        disable=not config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        for experiment in plan.experiments:
            run_experiment(results, plan, config, experiment, bar)


def run_experiment(
    results: ResultsFile,
    plan: SweepPlan,
    config: SweepConfig,
    experiment: ExperimentSpec,
    bar: tqdm[Any],
) -> None:
    """Round r measures repeat r of every point of the experiment still wanting it."""
    points = [p for p in experiment.points() if not skip_point(results, p, bar)]
    rounds = max((plan.repeats_of(p) for p in points), default=0)
    for repeat in range(1, rounds + 1):
        for point in points:
            record = results.point(point.key)
            if record["status"] != "pending" or repeat > plan.repeats_of(point):
                continue
            if slot_settled(record, repeat, plan.retries):
                continue
            bar.set_description(f"{experiment.name} r{repeat} {point.key}")
            run_slot(results, plan, config, point, repeat)
            bar.update(1)


def skip_point(results: ResultsFile, point: PointSpec, bar: tqdm[Any]) -> bool:
    """Mark a point that cannot be measured here as skipped, once."""
    record = results.point(point.key)
    if record["status"] == "skipped":
        return True
    reason = point.skip_reason() or unavailable_reason(point)
    if reason is None:
        return False
    results.mark(point.key, "skipped", reason)
    if point.skip_reason() is None:
        results.note(f"{point.impl} skipped: {reason}")
    bar.update(record["repeats_wanted"])
    return True


def run_slot(
    results: ResultsFile, plan: SweepPlan, config: SweepConfig, point: PointSpec, repeat: int
) -> None:
    """Attempts of one repeat slot until one is valid or 1 + retries have been made."""
    record = results.point(point.key)
    kinds = tuple(record.get("kinds") or plan.kinds_of(point))
    while not slot_settled(record, repeat, plan.retries):
        attempt = len(slot_attempts(record, repeat)) + 1
        run: RunResult | UnmeasuredRun
        try:
            run = run_point_once(point, plan, config, repeat, attempt, kinds)
        except PointFailed as exc:
            run = UnmeasuredRun(repeat, attempt, now_iso(), (str(exc),))
        if not run.valid:
            tqdm.write(
                f"muxlab sweep: {point.key} repeat {repeat} attempt {attempt} invalid: "
                + "; ".join(run.problems),
                file=sys.stderr,
            )
        results.add_run(point.key, run)
        record = results.point(point.key)


def interrupted_message(run_dir: Path) -> str:
    return (
        f"muxlab sweep: interrupted; finished runs are in {run_dir / 'results.json'}; "
        f"continue with: muxlab sweep --resume {run_dir}"
    )

"""Run a sweep: for every point, server up, load, snapshots at the phase lines, teardown.

One run of one point, in the manner of vmbench's orchestrator:

1. start the server (``muxlab serve``, a Python peer, or nginx) pinned to its own CPU and
   wait for its ready line;
2. start ``muxlab load`` pinned to the other CPUs with ``--phase-lines``; it ramps its
   connections, runs a warm-up that is discarded, and prints ``muxlab load: phase
   measure`` when the measurement window opens and ``muxlab load: phase end`` when it
   closes;
3. at each of those two lines, read the server's counters (SIGUSR1) and CPU time, so every
   server-side number is a delta over the client's window;
4. stop the load generator and the server and reap both, in ``finally``, whatever
   happened, Ctrl-C included;
5. judge the repeat (:mod:`benchmarks.validity`): an invalid one is kept in the file with
   its reasons, left out of every median, and its slot is tried again (``retries``).

Order: within an experiment, repeats run round-robin over its points (repeat 1 of every
point, then repeat 2, ...), so a slow drift of the machine (another job, thermal
throttling) lands on every implementation alike instead of on the last one measured.

The results file is rewritten after every run, so Ctrl-C keeps every finished run and
``--resume`` picks up at the first unsettled repeat slot, in the same order.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Protocol

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
from loadgen.result import CLIENT_BOUND_UTIL
from servers.backends import BACKENDS
from servers.peers import PEER_NAMES, NginxServer, peer_unavailable_reason
from servers.process import ServerProcess, ServerProcessError, terminate
from servers.protocols import HTTP_OK

PHASE_MEASURE = "muxlab load: phase measure"
PHASE_END = "muxlab load: phase end"
LOADGEN = (sys.executable, "-m", "muxlab", "load")
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
STOP_GRACE_S = 5.0


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
    server_cpu: int
    client_cpus: tuple[int, ...]
    loadgen: tuple[str, ...] = LOADGEN
    timeout_s: float = 5.0
    progress: bool = False


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
    if point.impl in PEER_NAMES:
        return peer_unavailable_reason(point.impl, point.protocol)
    return BACKENDS[point.impl].unavailable_reason()  # type: ignore[index]


def make_server(point: PointSpec, cpu: int, log_path: Path | None = None) -> ServerUnderTest:
    if point.impl == "nginx":
        return NginxServer(
            point.protocol,
            cpu=cpu,
            connections=point.total_connections + 100,
            log_path=log_path,
        )
    if point.impl in PEER_NAMES:
        return ServerProcess(
            point.impl,
            point.protocol,
            cpu=cpu,
            command=("-m", "servers.peers"),
            impl_option="--impl",
        )
    return ServerProcess(point.impl, point.protocol, cpu=cpu, extra_args=point.server_args())


def reply_bytes(point: PointSpec) -> int:
    return point.msg_bytes if point.protocol == "echo" else len(HTTP_OK)


def loadgen_argv(
    point: PointSpec, plan: SweepPlan, config: SweepConfig, host: str, port: int, json_path: Path
) -> list[str]:
    options: dict[str, object] = {
        "--host": host,
        "--port": port,
        "--protocol": point.protocol,
        "--connections": point.connections,
        "--idle": point.idle,
        "--processes": len(config.client_cpus),
        "--cpus": ",".join(map(str, config.client_cpus)),
        "--duration": plan.duration_s,
        "--warmup": plan.warmup_s,
        "--pipeline": point.pipeline,
        "--timeout": config.timeout_s,
        "--connect-rate": CONNECT_RATE_CPS,
        "--json": json_path,
    }
    if point.protocol == "echo":
        options["--size"] = point.msg_bytes
    if point.rate_rps is not None:
        options["--rate"] = point.rate_rps
    argv = list(config.loadgen)
    for option, value in options.items():
        argv += [option, str(value)]
    argv += ["--quiet", "--phase-lines"]
    return argv


class LinePump:
    """Lines of a child's stdout through a thread, so reading them can time out."""

    _EOF = object()

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(self._EOF)

    def next(self, timeout_s: float) -> str | None:
        """The next line; ``None`` at end of stream; :class:`PointFailed` on timeout."""
        try:
            item = self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise PointFailed(f"load generator silent for {timeout_s:.0f} s") from None
        return None if item is self._EOF else str(item)


def take_snapshot(server: ServerUnderTest, line_read_ns: int) -> Snapshot:
    try:
        counters = server.counters()
    except (ServerProcessError, OSError) as exc:
        raise PointFailed(f"server did not report its counters: {exc}") from None
    at_ns = time.monotonic_ns()
    return Snapshot(at_ns, counters, (at_ns - line_read_ns) / 1e9)


def stop_child(proc: subprocess.Popen[str]) -> None:
    """SIGINT (the load generator writes what it has and exits), then SIGKILL."""
    terminate(proc, signal.SIGINT, STOP_GRACE_S)


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
    # A file left by an attempt that Ctrl-C cut short must not pass for this one's.
    json_path.unlink(missing_ok=True)
    started_at = now_iso()
    log_path = config.run_dir / "servers" / f"{stem}.log"
    server = make_server(point, config.server_cpu, log_path)
    proc: subprocess.Popen[str] | None = None
    final: dict[str, Any] | None = None
    try:
        try:
            server.start()
        except ServerProcessError as exc:
            raise PointFailed(f"server did not start: {exc}") from None
        host, port = server.address
        with tempfile.TemporaryFile("w+") as stderr:
            proc = subprocess.Popen(
                loadgen_argv(point, plan, config, host, port, json_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            assert proc.stdout is not None
            before, after = follow_phases(LinePump(proc.stdout), server, point, plan, config)
            status = proc.wait()
            stderr.seek(0)
            error_text = stderr.read().strip()
        if status == 130:
            raise KeyboardInterrupt
        if before is None or after is None or not json_path.exists():
            last = error_text.splitlines()[-1] if error_text else "no output"
            raise PointFailed(f"load generator exited {status}: {last}")
    finally:
        # Nested so that a second Ctrl-C while the load generator stops still reaps the
        # server.
        try:
            if proc is not None:
                stop_child(proc)
        finally:
            final = server.stop()
    run, load = build_result(
        point, config, repeat, started_at, status, json_rel, before, after, final
    )
    return judge(replace(run, attempt=attempt), point, load, kinds)


def follow_phases(
    lines: LinePump,
    server: ServerUnderTest,
    point: PointSpec,
    plan: SweepPlan,
    config: SweepConfig,
) -> tuple[Snapshot | None, Snapshot | None]:
    """Snapshot the server at the two phase lines; return when the load generator ends."""
    budget_s = (
        plan.warmup_s
        + plan.duration_s
        + 2 * config.timeout_s
        + 10.0
        + CONNECT_S_PER_CONNECTION * point.total_connections
    )
    deadline = time.monotonic() + budget_s
    before = after = None
    while True:
        line = lines.next(deadline - time.monotonic())
        if line is None:
            return before, after
        read_ns = time.monotonic_ns()
        if line == PHASE_MEASURE:
            before = take_snapshot(server, read_ns)
        elif line == PHASE_END and before is not None:
            after = take_snapshot(server, read_ns)


def build_result(
    point: PointSpec,
    config: SweepConfig,
    repeat: int,
    started_at: str,
    status: int,
    json_rel: str,
    before: Snapshot | None,
    after: Snapshot | None,
    final: dict[str, Any] | None,
) -> tuple[RunResult, dict[str, Any]]:
    """The run's numbers, and the load generator's result they came from."""
    assert before is not None and after is not None
    load = json.loads((config.run_dir / json_rel).read_text())
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
    client_cpu = tuple(float(c) for c in load["client_cpu"])
    parent_cpu = load.get("parent_cpu")
    # The busiest load process, the parent included: one saturated worker is enough to
    # hold a run back (issue 8 item 6), however idle the others were.
    client_util = max((*client_cpu, float(parent_cpu or 0.0)), default=0.0)
    requests = replies_window if replies_window is not None else int(load["requests_ok"])
    latency = load["latency_us"]
    metrics = derived_metrics(delta, server_cpu_s, window_s, requests)
    metrics.update(
        rps=float(load["rps"]),
        mib_per_s=float(load["mib_per_s"]),
        p50_us=float(latency["p50"]),
        p99_us=float(latency["p99"]),
        client_cpu_util=client_util,
    )
    run = RunResult(
        repeat=repeat,
        started_at=started_at,
        loadgen_status=status,
        loadgen_json=json_rel,
        window_s=window_s,
        requests_ok=int(load["requests_ok"]),
        requests_total=int(load["requests_total"]),
        errors={str(k): int(v) for k, v in load["errors"].items()},
        latency_us={str(k): float(v) for k, v in latency.items()},
        client_cpu=client_cpu,
        client_bound=client_bound(load),
        server_cpu_s=server_cpu_s,
        server_delta=delta,
        server_replies_window=replies_window,
        server_replies_total=replies_total,
        idle_open_at_end=load.get("connections", {}).get("idle_open_at_end"),
        metrics=metrics,
        server_connections_open=before.counters.get("connections_open"),
        client_window_s=float(load["duration_s"]) if "duration_s" in load else None,
        snapshot_lags_s=(before.lag_s, after.lag_s),
        parent_cpu=None if parent_cpu is None else float(parent_cpu),
        load_schema=int(load.get("schema_version", 1)),
    )
    return run, load


def client_bound(load: dict[str, Any]) -> bool:
    """Any one load process at the limit may have held the whole run back, so the test
    is per process (max), never the mean: schema 2 says it; schema 1 is computed."""
    if "client_bound" in load:
        return bool(load["client_bound"])
    busiest = max((float(c) for c in load["client_cpu"]), default=0.0)
    return busiest >= CLIENT_BOUND_UTIL


def judge(
    run: RunResult, point: PointSpec, load: dict[str, Any], kinds: tuple[str, ...]
) -> RunResult:
    """The run with its validity (benchmarks.validity) under its experiments' rules."""
    evidence = RepeatEvidence(
        connections=point.connections,
        idle=point.idle,
        pipeline=point.pipeline,
        loadgen_status=run.loadgen_status,
        load=load,
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

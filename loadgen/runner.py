"""``run_load``: plan the workers, start them, walk them through the phases, merge.

The parent does no traffic. It checks the preconditions (``loadgen.preflight``), starts N
workers with an explicit ``spawn`` context (nothing relies on state inherited by
``fork``), waits until every worker has opened its connections, then hands all of them
the same absolute phase boundaries. While they run it only reads their pipes: progress for
the live line, and at the end one report each, which it merges exactly.

Ctrl-C in the parent (``KeyboardInterrupt``) tells every worker to stop; each sends what
it measured so far, and the merged result is returned marked ``interrupted``. Workers
ignore SIGINT themselves, so a terminal's Ctrl-C, which reaches the whole process group,
cannot kill them before they report.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import cast

from loadgen.config import LoadConfig, resolve
from loadgen.messages import (
    Done,
    Failed,
    FromWorker,
    Go,
    RampReport,
    Ready,
    Stop,
    ToWorker,
    WorkerProgress,
    WorkerReport,
    WorkerSpec,
)
from loadgen.phase_lines import Phase
from loadgen.preflight import Target, fds_per_worker, preflight
from loadgen.result import LoadResult, merge_reports
from loadgen.schedule import Phases, split_evenly
from loadgen.worker import worker_main
from muxlab.environment import environment

# Start-up allowance per run: a spawned interpreter imports loadgen in well under a second;
# a loaded CI machine may take several.
SPAWN_ALLOWANCE_S = 30.0
# After the window (+ drain timeout) a worker only encodes its histogram and reports.
REPORT_ALLOWANCE_S = 10.0
# Lead time so that every worker has received "go" before the warm-up starts.
GO_LEAD_NS = 20_000_000
STOP_ALLOWANCE_S = 5.0
WORKER_LOST = "worker_lost"
WORKER_FAILED = "worker_failed"
# A worker not ready by the start deadline is told to stop and counted: starting it late
# would measure a shorter window than the others, silently.
WORKER_NOT_READY = "worker_not_ready"

PhaseCallback = Callable[[Phase], None]
# Called once every worker has opened its connections; returns the ``time.monotonic_ns()``
# at which the warm-up starts. Several hosts agree on one moment through it (loadgen.cluster).
StartGate = Callable[[], int]


@dataclass(frozen=True)
class Progress:
    time_left_s: float
    rps: float
    errors: int
    measuring: bool


ProgressCallback = Callable[[Progress], None]


def plan_workers(config: LoadConfig, target: Target, progress: bool) -> list[WorkerSpec]:
    assert config.processes is not None
    actives = split_evenly(config.connections, config.processes)
    idles = split_evenly(config.idle, config.processes)
    specs = []
    first_cid = 0
    for i, (active, idle) in enumerate(zip(actives, idles, strict=True)):
        rate = None
        if config.rate_rps is not None and active:
            rate = config.rate_rps * active / config.connections
        specs.append(
            WorkerSpec(
                index=i,
                family=target.family,
                sockaddr=target.sockaddr,
                protocol=config.protocol,
                request=target.request,
                first_cid=first_cid,
                active=active,
                idle=idle,
                all_active=config.connections,
                size_bytes=config.size_bytes,
                pipeline=config.pipeline,
                rate_rps=rate,
                connect_rate_cps=config.connect_rate_cps
                * (active + idle)
                / config.total_connections,
                timeout_s=config.timeout_s,
                cpu=config.cpus[i % len(config.cpus)] if config.cpus else None,
                fds_needed=fds_per_worker(config),
                progress=progress,
                source_addresses=target.source_addresses,
            )
        )
        first_cid += active
    return specs


class _Session:
    """The parent's view of its workers: processes, pipes, what each has said so far."""

    def __init__(self, config: LoadConfig, specs: list[WorkerSpec]) -> None:
        self.config = config
        self.specs = specs
        self.context = multiprocessing.get_context("spawn")
        self.procs: list[BaseProcess] = []
        self.pipes: dict[Pipe, int] = {}
        self.ready: dict[int, RampReport] = {}
        self.reports: dict[int, WorkerReport] = {}
        self.failures: list[str] = []
        self.errors: Counter[str] = Counter()
        self.done_by_worker = [0] * len(specs)
        self.errors_by_worker = [0] * len(specs)
        self.phases: Phases | None = None

    def start(self) -> None:
        # Children inherit the signal mask through fork and exec (sigprocmask(2)): with
        # SIGINT blocked here, a Ctrl-C during a worker's interpreter start-up stays
        # pending until worker_main has set it to be ignored, and reaches this process
        # once the mask is restored.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for spec in self.specs:
                parent_end, child_end = self.context.Pipe()
                proc = self.context.Process(
                    target=worker_main, args=(spec, child_end), name=f"muxlab-load-{spec.index}"
                )
                proc.daemon = True  # never outlives the parent
                proc.start()
                child_end.close()
                self.procs.append(proc)
                self.pipes[parent_end] = spec.index
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def receive(self, timeout_s: float) -> None:
        """Handle whatever the workers sent within ``timeout_s``."""
        ready = cast(list[Pipe], wait(list(self.pipes), max(0.0, timeout_s)))
        for pipe in ready:
            index = self.pipes[pipe]
            try:
                message: FromWorker = pipe.recv()
            except (EOFError, OSError):
                self._lose(pipe, index)
                continue
            if isinstance(message, Ready):
                self.ready[index] = message.ramp
            elif isinstance(message, WorkerProgress):
                self.done_by_worker[index] = message.requests_done
                self.errors_by_worker[index] = message.errors
            elif isinstance(message, Done):
                self.reports[index] = message.report
                self._retire(pipe)
            elif isinstance(message, Failed):
                self.failures.append(f"worker {index}: {message.reason}")
                self.errors[WORKER_FAILED] += 1
                self._retire(pipe)

    def _lose(self, pipe: Pipe, index: int) -> None:
        if index not in self.reports:
            self.failures.append(f"worker {index}: exited without a report")
            self.errors[WORKER_LOST] += 1
        self._retire(pipe)

    def _retire(self, pipe: Pipe) -> None:
        del self.pipes[pipe]
        pipe.close()

    def waiting_for_ready(self) -> bool:
        return any(index not in self.ready for index in self.pipes.values())

    def stop_unready(self) -> None:
        """Stop and count the workers that missed the start deadline."""
        for pipe, index in list(self.pipes.items()):
            if index in self.ready:
                continue
            self.failures.append(f"worker {index}: not ready by the start deadline")
            self.errors[WORKER_NOT_READY] += 1
            try:
                pipe.send(Stop())
            except OSError:
                self._lose(pipe, index)
                continue
            # Its report, if it sends one, has no window; it is not waited for.
            self._retire(pipe)

    def send_all(self, message: ToWorker) -> None:
        for pipe in list(self.pipes):
            try:
                pipe.send(message)
            except OSError:
                self._lose(pipe, self.pipes[pipe])

    def collect(self, deadline_ns: int) -> None:
        """Wait for every worker's report until ``deadline_ns``; count the missing as lost."""
        while self.pipes:
            now = time.monotonic_ns()
            if now >= deadline_ns:
                for pipe, index in list(self.pipes.items()):
                    self._lose(pipe, index)
                return
            self.receive(min(0.1, (deadline_ns - now) / 1e9))

    def close(self) -> None:
        for proc in self.procs:
            proc.join(STOP_ALLOWANCE_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self.pipes:
            pipe.close()


class _Follower:
    """Calls the phase and progress callbacks at the right moments while workers run."""

    def __init__(
        self,
        session: _Session,
        phases: Phases,
        on_phase: PhaseCallback | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.session = session
        self.phases = phases
        self.on_phase = on_phase
        self.on_progress = on_progress
        self.announced: list[Phase] = []
        # (process CPU ns, monotonic ns) as the window opened and closed: the parent is a
        # client process too, and must not be what limits the run.
        self.cpu_marks: dict[Phase, tuple[int, int]] = {}
        self.last_done = 0
        self.last_ns = phases.warmup_start_ns
        self.next_progress_ns = phases.warmup_start_ns

    def announce(self, phase: Phase) -> None:
        if phase not in self.announced:
            self.cpu_marks[phase] = (time.process_time_ns(), time.monotonic_ns())
            self.announced.append(phase)
            if self.on_phase is not None:
                self.on_phase(phase)

    def parent_cpu(self) -> float:
        """The parent's busy fraction over the window; 0.0 when it never opened."""
        if "measure" not in self.cpu_marks or "end" not in self.cpu_marks:
            return 0.0
        (cpu0, wall0), (cpu1, wall1) = self.cpu_marks["measure"], self.cpu_marks["end"]
        return (cpu1 - cpu0) / (wall1 - wall0) if wall1 > wall0 else 0.0

    def next_event_ns(self) -> int:
        if "measure" not in self.announced:
            return self.phases.measure_start_ns
        if "end" not in self.announced:
            return self.phases.end_ns
        return self.phases.end_ns + 3_600_000_000_000

    def tick(self) -> None:
        now = time.monotonic_ns()
        if now >= self.phases.measure_start_ns:
            self.announce("measure")
        if now >= self.phases.end_ns:
            self.announce("end")
        if self.on_progress is not None and now >= self.next_progress_ns:
            self.next_progress_ns = now + 500_000_000
            done = sum(self.session.done_by_worker)
            rps = (done - self.last_done) * 1e9 / max(1, now - self.last_ns)
            self.last_done, self.last_ns = done, now
            self.on_progress(
                Progress(
                    time_left_s=max(0.0, (self.phases.end_ns - now) / 1e9),
                    rps=rps,
                    errors=sum(self.session.errors_by_worker),
                    measuring=self.phases.measure_start_ns <= now < self.phases.end_ns,
                )
            )

    def follow(self, deadline_ns: int) -> None:
        session = self.session
        while session.pipes and time.monotonic_ns() < deadline_ns:
            wake_ns = min(self.next_event_ns(), deadline_ns)
            if self.on_progress is not None:
                wake_ns = min(wake_ns, self.next_progress_ns)
            session.receive((wake_ns - time.monotonic_ns()) / 1e9)
            self.tick()
        session.collect(deadline_ns)


def run_load(
    config: LoadConfig,
    on_phase: PhaseCallback | None = None,
    on_progress: ProgressCallback | None = None,
    start_gate: StartGate | None = None,
) -> LoadResult:
    """Run one load test; raises :class:`~muxlab.errors.MuxlabError` before starting if it
    cannot work. ``on_phase("measure")``/``on_phase("end")`` are called as the measurement
    window opens and closes; ``on_progress`` about twice a second; ``start_gate``, when
    given, chooses the moment the warm-up starts (default: as soon as all are ready)."""
    config = resolve(config)
    target = preflight(config)
    env = environment()
    specs = plan_workers(config, target, progress=on_progress is not None)
    session = _Session(config, specs)
    interrupted = False
    follower: _Follower | None = None
    try:
        try:
            session.start()
            ramp_s = max((s.active + s.idle) / s.connect_rate_cps for s in specs)
            ready_deadline = time.monotonic_ns() + round(
                (SPAWN_ALLOWANCE_S + ramp_s + config.timeout_s) * 1e9
            )
            while session.waiting_for_ready() and time.monotonic_ns() < ready_deadline:
                session.receive(0.1)
            session.stop_unready()
            start_ns = start_gate() if start_gate else time.monotonic_ns() + GO_LEAD_NS
            phases = Phases.starting_at(start_ns, config.warmup_s, config.duration_s)
            session.send_all(Go(phases))
            follower = _Follower(session, phases, on_phase, on_progress)
            follower.follow(phases.end_ns + round((config.timeout_s + REPORT_ALLOWANCE_S) * 1e9))
        except KeyboardInterrupt:
            interrupted = True
            session.send_all(Stop())
            if follower is not None and "measure" in follower.announced:
                follower.announce("end")
            session.collect(time.monotonic_ns() + round(STOP_ALLOWANCE_S * 1e9))
    finally:
        session.close()
    reports = [session.reports[i] for i in sorted(session.reports)]
    parent_cpu = follower.parent_cpu() if follower is not None else 0.0
    return merge_reports(config, env, reports, dict(session.errors), session.failures,
                         interrupted, parent_cpu)  # fmt: skip

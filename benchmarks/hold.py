"""Hold N connections against each server: did the ramp get them all, and what do they cost?

For each server in turn (a muxlab backend, started as ``muxlab serve`` with any extra
``--server-arg``, or ``nginx``), one ``muxlab load`` ramps ``--connections`` active and
``--idle`` idle connections, keeps the active ones busy (closed loop, HTTP, the one
protocol nginx serves too) for ``--duration`` seconds, then ends. Around it this tool
records what explains a failed ramp (issue 12, C20K):

- the kernel's TCP counters, before and after (``/proc/net/netstat`` and ``/proc/net/snmp``,
  what ``nstat`` reads): ``ListenOverflows``/``ListenDrops`` (accept queue full, SYN
  dropped), ``TCPReqQFullDrop``/``SyncookiesSent`` (SYN queue full), ``TCPSynRetrans``
  (a client waited out a retransmission, 1 s the first time, ``tcp(7)``);
- the listener's accept queue, sampled with ``ss -ltn`` during the ramp: for a listening
  socket Recv-Q is the queue's length and Send-Q its bound, the ``listen(2)`` backlog
  capped by ``net.core.somaxconn``;
- a muxlab server's accepts per wait call during the ramp (accept batching);
- what the load generator saw: connections opened, errors by kind, idle ones still open
  at the end;
- server memory: RSS (``VmRSS``, ``proc(5)``) of the server process and its descendants,
  before the ramp and in the middle of the hold, as RSS over connections and as the growth
  per connection; and per server worker (``--workers N``: ``muxlab serve --workers N
  --balance reuseport``, nginx with N ``reuseport`` workers), its RSS and the connections
  it holds, which :mod:`benchmarks.c50k` checks add up to the total.

Kernel counters are per network namespace and count every process in it: run in a private
one for clean figures (``unshare -n``, root; see results/c20k/README.md). Servers run one
after another, never side by side; each run is bounded by the load generator's own
duration and timeout, and every process started here is reaped, even on Ctrl-C.

Run: ``python -m benchmarks.hold --servers poll,epoll-et,nginx --connections 10
--idle 19926 --duration 5 --json results/c20k/hold.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.hold_probe import (
    QueueSample,
    QueueSampler,
    established_by_pid,
    read_kernel_counters,
    rss_kib,
    tree_rss_kib,
)
from benchmarks.sweep import PointFailed
from loadgen.child import LinePump, LoadChildError
from loadgen.phase_lines import parse_phase_line
from muxlab.atomic import write_json_atomic
from muxlab.environment import environment, read_sysctl
from muxlab.errors import MuxlabError, RunError, SetupError, UsageError
from servers.backends import BACKEND_NAMES
from servers.peers import NginxServer, nginx_path
from servers.process import ServerProcess, ServerProcessError, terminate

SCHEMA_VERSION = 1
NGINX = "nginx"
SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ip_local_port_range",
)
# Beyond the load generator's own bounds (ramp at the connect rate, warm-up, window,
# drain timeout), allowance for spawning its workers and writing its result.
LOAD_ALLOWANCE_S = 60.0
WARMUP_S = 0.5
LOG_TAIL_LINES = 5
# nginx slots beyond the connections held: its listener and the load generator's probe.
NGINX_SPARE_SLOTS = 16
# With several workers each listens in the port's SO_REUSEPORT group and the kernel
# hashes each connection's addresses to one of them: the shares are binomial, a standard
# deviation of about sqrt(n / workers), ~110 connections for 50,000 over 4. A worker is
# planned (and nginx's worker_connections sized) for its even share times this.
REUSEPORT_MARGIN = 1.25


@dataclass(frozen=True)
class HoldConfig:
    servers: tuple[str, ...]
    connections: int = 10
    idle: int = 0
    duration_s: float = 5.0
    connect_rate_cps: float = 5000.0
    timeout_s: float = 5.0
    load_processes: int = 1
    # Passed to every ``muxlab serve`` as they are.
    server_args: tuple[str, ...] = ()
    # Server processes: > 1 runs ``muxlab serve --workers N --balance reuseport``, and
    # nginx with N workers, each with its own SO_REUSEPORT listener.
    workers: int = 1
    server_cpu: int | None = None
    client_cpus: tuple[int, ...] = ()
    # Passed to ``muxlab load`` (e.g. ``--source-addresses 127.0.0.2,127.0.0.3``).
    load_args: tuple[str, ...] = ()

    @property
    def total_connections(self) -> int:
        return self.connections + self.idle


@dataclass(frozen=True)
class WorkerSample:
    """One server worker process at one moment."""

    pid: int
    rss_kib: int
    connections: int  # muxlab: connections_open; nginx: established connections (ss)


@dataclass(frozen=True)
class WorkerHeld:
    pid: int
    rss_before_kib: int
    rss_held_kib: int
    connections: int  # held in the middle of the hold


@dataclass(frozen=True)
class HoldOutcome:
    server: str
    load_exit_status: int
    connections_opened: int  # active + idle connected during the ramp
    connections_held_at_end: int  # active + idle still open when the hold ended
    connect_errors: int
    errors: dict[str, int]
    ramp_s: float  # from starting the load generator to its window opening, warm-up out
    listen_queue: QueueSample
    kernel: dict[str, int]  # counter increase over the run
    server_accepts: int | None  # muxlab servers: accepted during the ramp
    accepts_per_wait: float | None  # muxlab servers: accepts / wait calls during the ramp
    # muxlab servers: accepts per second of the server's own CPU time (user + system)
    # during the ramp: the rate it could sustain with a whole CPU to itself.
    accepts_per_cpu_s: float | None
    rss_before_kib: int
    rss_held_kib: int
    rss_over_connections_bytes: float  # RSS while holding / connections
    rss_growth_per_connection_bytes: float  # (held - before) / connections
    # Per server worker (the one process, or each of --workers; nginx: its workers, not
    # its master), in the middle of the hold: pid, RSS before and held, connections held
    # (a muxlab worker's own connections_open; nginx: its established connections, ss).
    workers: tuple[WorkerHeld, ...]
    workers_rss_growth_per_connection_bytes: float  # (sum held - sum before) / connections
    server_log_tail: tuple[str, ...]  # its last stderr lines (nginx: error log)


# -- one server ------------------------------------------------------------------------------


def nginx_worker_connections(held: int) -> int:
    """nginx's ``worker_connections`` for holding ``held`` connections.

    Once fewer than 1/16 of its connection slots are free, nginx closes idle keep-alive
    connections to make room ("worker_connections are not enough, reusing connections",
    ``ngx_drain_connections`` in src/core/ngx_connection.c), so the slots must exceed the
    connections held by more than that; unused slots cost no descriptor.
    """
    return math.ceil(held * 16 / 15) + NGINX_SPARE_SLOTS


def worker_share(config: HoldConfig) -> int:
    """Connections one server worker is planned for: all of them with one worker, else its
    even share with :data:`REUSEPORT_MARGIN`."""
    total = config.total_connections
    if config.workers == 1:
        return total
    return min(total, math.ceil(total / config.workers * REUSEPORT_MARGIN))


def start_server(name: str, config: HoldConfig, work_dir: Path) -> ServerProcess | NginxServer:
    if name == NGINX:
        return NginxServer(
            "http",
            cpu=config.server_cpu,
            connections=nginx_worker_connections(worker_share(config)),
            log_path=work_dir / "nginx-error.log",
            workers=config.workers,
        ).start()
    extra = list(config.server_args)
    cpu = config.server_cpu
    if config.workers > 1:
        extra += ["--workers", str(config.workers), "--balance", "reuseport"]
        if cpu is not None:
            extra += ["--cpus", str(cpu)]  # --cpu pins one process; --cpus every worker
            cpu = None
    return ServerProcess(name, "http", cpu=cpu, extra_args=extra).start()


def sample_workers(server: ServerProcess | NginxServer) -> list[WorkerSample]:
    """Each server worker's pid, RSS and connections now. A muxlab server's counters name
    its workers (``workers``, servers/multiproc.py) or it is one process; nginx's master
    holds no connection, its workers do."""
    if isinstance(server, NginxServer):
        held = established_by_pid(server.address[1])
        return [WorkerSample(p, rss_kib(p), held[p]) for p in server.worker_pids]
    snapshot = server.counters()
    each = snapshot.get("workers") or [{"pid": server.pid, **snapshot}]
    return [WorkerSample(w["pid"], rss_kib(w["pid"]), w["connections_open"]) for w in each]


def workers_held(before: list[WorkerSample], held: list[WorkerSample]) -> list[WorkerHeld]:
    by_pid = {w.pid: w for w in before}
    out = []
    for w in held:
        start = by_pid.get(w.pid, WorkerSample(w.pid, 0, 0))
        out.append(WorkerHeld(w.pid, start.rss_kib, w.rss_kib, w.connections - start.connections))
    return out


def load_argv(config: HoldConfig, port: int, json_path: Path) -> list[str]:
    argv = [
        sys.executable, "-m", "muxlab", "load", "--port", str(port), "--protocol", "http",
        "--connections", str(config.connections), "--idle", str(config.idle),
        "--processes", str(config.load_processes), "--duration", str(config.duration_s),
        "--warmup", str(WARMUP_S), "--connect-rate", str(config.connect_rate_cps),
        "--timeout", str(config.timeout_s), "--json", str(json_path), "--quiet",
        "--phase-lines",
    ]  # fmt: skip
    if config.client_cpus:
        argv += ["--cpus", ",".join(map(str, config.client_cpus))]
    if config.server_cpu is not None:
        argv += ["--server-cpus", str(config.server_cpu)]
    return argv + list(config.load_args)


def muxlab_counters(server: ServerProcess | NginxServer) -> dict[str, Any] | None:
    if not isinstance(server, ServerProcess):
        return None
    return server.counters()


def hold_one(name: str, config: HoldConfig, work_dir: Path) -> HoldOutcome:
    json_path = work_dir / f"load-{name}.json"
    with start_server(name, config, work_dir) as server:
        rss_before = tree_rss_kib(server.pid)
        workers_before = sample_workers(server)
        before = muxlab_counters(server)
        kernel_before = read_kernel_counters()
        started = time.monotonic()
        with QueueSampler(server.address[1]) as sampler:
            proc = subprocess.Popen(
                load_argv(config, server.address[1], json_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                ramp_s, at_measure, rss_held, workers_at_hold = watch_load(
                    proc, server, config, started
                )
                proc.wait(LOAD_ALLOWANCE_S)
            finally:
                terminate(proc, signal.SIGINT, 10.0)  # it keeps what it measured
        kernel_after = read_kernel_counters()
    log_tail = server_log_tail(server)
    if not json_path.exists():
        raise RunError(f"the load generator wrote no result (exit {proc.returncode})")
    load = json.loads(json_path.read_text())
    return outcome(
        name, config, load, proc.returncode, ramp_s, sampler.result(),
        {k: kernel_after[k] - kernel_before[k] for k in kernel_after},
        before, at_measure, rss_before, rss_held, log_tail,
        workers_held(workers_before, workers_at_hold),
    )  # fmt: skip


def server_log_tail(server: ServerProcess | NginxServer) -> list[str]:
    """The server's last stderr lines (nginx: its error log): why it closed connections."""
    if isinstance(server, ServerProcess):
        text = server.stderr
    else:
        assert server.error_log is not None
        text = server.error_log.read_text(errors="replace") if server.error_log.exists() else ""
    return text.splitlines()[-LOG_TAIL_LINES:]


def watch_load(
    proc: subprocess.Popen[str],
    server: ServerProcess | NginxServer,
    config: HoldConfig,
    started: float,
) -> tuple[float, dict[str, Any] | None, int, list[WorkerSample]]:
    """Wait for the window to open; then the server's counters, and its RSS and workers
    mid-hold.

    Every wait is bounded: the ramp by its length at the connect rate plus the connect
    timeout, the rest by the window, the drain timeout and an allowance.
    """
    assert proc.stdout is not None
    lines = LinePump(proc.stdout)
    ramp_bound_s = config.total_connections / config.connect_rate_cps + config.timeout_s
    deadline = started + ramp_bound_s + WARMUP_S + LOAD_ALLOWANCE_S
    while (line := lines.next(deadline - time.monotonic())) is not None:
        if parse_phase_line(line.strip()) == "measure":
            break
    else:
        return time.monotonic() - started, None, tree_rss_kib(server.pid), sample_workers(server)
    ramp_s = time.monotonic() - started - WARMUP_S
    at_measure = muxlab_counters(server)
    time.sleep(config.duration_s / 2)
    rss_held = tree_rss_kib(server.pid)
    workers_at_hold = sample_workers(server)
    deadline = time.monotonic() + config.duration_s + config.timeout_s + LOAD_ALLOWANCE_S
    while lines.next(deadline - time.monotonic()) is not None:
        pass
    return ramp_s, at_measure, rss_held, workers_at_hold


def outcome(
    name: str,
    config: HoldConfig,
    load: dict[str, Any],
    exit_status: int | None,
    ramp_s: float,
    queue: QueueSample,
    kernel: dict[str, int],
    before: dict[str, Any] | None,
    at_measure: dict[str, Any] | None,
    rss_before: int,
    rss_held: int,
    log_tail: list[str],
    workers: list[WorkerHeld],
) -> HoldOutcome:
    conns = load["connections"]
    total = config.total_connections
    accepts = waits = None
    cpu_s = 0.0
    # A counters line without these top-level keys (another server's) leaves them out.
    keys = ("accepts", "wait_calls", "cpu_user_s", "cpu_system_s")
    if (
        before is not None
        and at_measure is not None
        and all(k in before and k in at_measure for k in keys)
    ):
        accepts = at_measure["accepts"] - before["accepts"]
        waits = at_measure["wait_calls"] - before["wait_calls"]
        cpu_s = sum(at_measure[k] - before[k] for k in ("cpu_user_s", "cpu_system_s"))
    return HoldOutcome(
        server=name,
        load_exit_status=-1 if exit_status is None else exit_status,
        connections_opened=conns["active"] + conns["idle"],
        connections_held_at_end=conns["active"] + conns["idle_open_at_end"],
        connect_errors=conns["connect_errors"],
        errors=dict(load["errors"]),
        ramp_s=round(ramp_s, 3),
        listen_queue=queue,
        kernel=kernel,
        server_accepts=accepts,
        accepts_per_wait=None if not waits or accepts is None else round(accepts / waits, 2),
        accepts_per_cpu_s=None if not cpu_s or accepts is None else round(accepts / cpu_s),
        rss_before_kib=rss_before,
        rss_held_kib=rss_held,
        rss_over_connections_bytes=round(rss_held * 1024 / total, 1),
        rss_growth_per_connection_bytes=round((rss_held - rss_before) * 1024 / total, 1),
        workers=tuple(workers),
        workers_rss_growth_per_connection_bytes=round(
            sum(w.rss_held_kib - w.rss_before_kib for w in workers) * 1024 / total, 1
        ),
        server_log_tail=tuple(log_tail),
    )


# -- the whole run -----------------------------------------------------------------------------


def check(config: HoldConfig) -> None:
    known = (*BACKEND_NAMES, NGINX)
    unknown = [s for s in config.servers if s not in known]
    if unknown or not config.servers:
        raise UsageError(f"--servers: unknown {unknown}; choose from {', '.join(known)}")
    if config.connections < 1 or config.idle < 0 or config.duration_s <= 0:
        raise UsageError("--connections must be >= 1, --idle >= 0, --duration > 0")
    if config.workers < 1:
        raise UsageError(f"--workers must be >= 1, not {config.workers}")
    if NGINX in config.servers and nginx_path() is None:
        raise SetupError("nginx is not installed (scripts/setup.sh installs it)")
    if shutil.which("ss") is None:
        raise SetupError("ss (iproute2) is not installed: it samples the accept queue")


def run(config: HoldConfig, work_dir: Path, outcomes: list[dict[str, Any]]) -> None:
    """Hold against each server in turn, appending to ``outcomes`` as each one ends (so
    an interrupted run keeps the servers already measured)."""
    check(config)
    for name in config.servers:
        outcomes.append(hold_each(name, config, work_dir))
        print(format_outcome(outcomes[-1]), flush=True)


def hold_each(name: str, config: HoldConfig, work_dir: Path) -> dict[str, Any]:
    """:func:`hold_one` as a JSON object; a server that failed is one with ``failed``."""
    try:
        return asdict(hold_one(name, config, work_dir))
    except (ServerProcessError, LoadChildError, PointFailed, RunError) as exc:
        return {"server": name, "failed": str(exc)}


def result_json(config: HoldConfig, outcomes: list[dict[str, Any]], interrupted: bool) -> Any:
    return {
        "schema_version": SCHEMA_VERSION,
        "config": asdict(config),
        "sysctls": {name: read_sysctl(name) for name in SYSCTLS},
        "environment": environment(),
        "interrupted": interrupted,
        "outcomes": outcomes,
    }


def format_outcome(o: dict[str, Any]) -> str:
    if "failed" in o:
        return f"{o['server']:14} failed: {o['failed']}"
    k = o["kernel"]
    return (
        f"{o['server']:14} opened {o['connections_opened']:6} held {o['connections_held_at_end']:6}"
        f" errors {sum(o['errors'].values()):5} ramp {o['ramp_s']:6.1f} s"
        f"  queue peak {o['listen_queue']['peak_queued']:5}/{o['listen_queue']['backlog']}"
        f"  overflows {k['TcpExt.ListenOverflows']} syn-retrans {k['TcpExt.TCPSynRetrans']}"
        f"  accepts/wait {o['accepts_per_wait']} per CPU s {o['accepts_per_cpu_s']}"
        f"  RSS/conn {o['rss_over_connections_bytes']:.0f} B"
        f" (+{o['rss_growth_per_connection_bytes']:.0f} B)"
    )


def parse_args(argv: Sequence[str] | None) -> tuple[HoldConfig, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hold", description=__doc__)
    add = parser.add_argument
    add("--servers", required=True, help=f"comma-separated: {', '.join(BACKEND_NAMES)}, nginx")
    add("--connections", type=int, default=10, help="active connections (closed loop)")
    add("--idle", type=int, default=0, help="idle connections held beside them")
    add("--duration", type=float, default=5.0, help="seconds the connections are held")
    add("--connect-rate", type=float, default=5000.0, help="ramp, connections per second")
    add("--timeout", type=float, default=5.0, help="muxlab load --timeout, seconds")
    add("--load-processes", type=int, default=1, help="load generator processes")
    add("--workers", type=int, default=1, help="server processes (SO_REUSEPORT), nginx too")
    add("--server-cpu", type=int, default=None, help="pin the server to this CPU")
    add("--client-cpus", default="", help="pin the load generator, e.g. '1'")
    add("--server-arg", action="append", default=[], help="extra muxlab serve argument")
    add("--load-arg", action="append", default=[], help="extra muxlab load argument")
    add("--json", type=Path, default=None, help="write the result here (atomically)")
    args = parser.parse_args(argv)
    try:
        client_cpus = tuple(int(c) for c in args.client_cpus.split(",") if c)
    except ValueError:
        parser.error(f"--client-cpus {args.client_cpus!r}: expected e.g. '1' or '0,1'")
    config = HoldConfig(
        servers=tuple(s for s in args.servers.split(",") if s),
        connections=args.connections,
        idle=args.idle,
        duration_s=args.duration,
        connect_rate_cps=args.connect_rate,
        timeout_s=args.timeout,
        load_processes=args.load_processes,
        server_args=tuple(args.server_arg),
        workers=args.workers,
        server_cpu=args.server_cpu,
        client_cpus=client_cpus,
        load_args=tuple(args.load_arg),
    )
    return config, args.json


def main(argv: Sequence[str] | None = None) -> int:
    config, json_path = parse_args(argv)
    outcomes: list[dict[str, Any]] = []
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="muxlab-hold-") as work_dir:
            run(config, Path(work_dir), outcomes)
    except MuxlabError as exc:
        print(f"hold: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        interrupted = True
    if json_path is not None and outcomes:
        write_json_atomic(json_path, result_json(config, outcomes, interrupted))
    if interrupted:
        return 130
    clean = all(
        "failed" not in o and not o["errors"] and o["load_exit_status"] == 0 for o in outcomes
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())

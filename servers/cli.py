"""``muxlab serve``: run one backend with one protocol until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any

from muxlab.clibase import HelpFormatter, Subparsers
from muxlab.cpu import pin_to_cpu
from muxlab.errors import RunError, SetupError, UsageError
from muxlab.fdbudget import SERVER_RESERVE, raise_fd_limit
from servers.backends import (
    BACKEND_NAMES,
    BackendUnavailableError,
    brings_own_loop,
    require_available,
)
from servers.contract import ReadyLine, format_counters_line
from servers.counters import format_counters_table
from servers.loop import ET_DRAINS, Server, ServerConfig, ServerFailedError, ServerSetupError
from servers.multiproc import (
    BALANCE_NAMES,
    Supervisor,
    WorkersConfig,
    WorkersError,
    exclusive_refusal,
)
from servers.protocols import PROTOCOL_NAMES
from servers.uring_loop import UringServer


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a server on one backend",
        description=(
            "Serve echo or HTTP on one readiness backend. The first stdout line is "
            "'muxlab: listening on HOST:PORT backend=NAME protocol=NAME'. Send SIGUSR1 to "
            "print the counters as one 'muxlab: counters {json}' line on stdout; "
            "SIGINT/SIGTERM stop the server, which prints the final counters and exits 0."
        ),
        formatter_class=HelpFormatter,
    )
    defaults = ServerConfig()
    parser.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default=defaults.backend,
        help="readiness mechanism, or io_uring (completion loop)",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOL_NAMES,
        default=defaults.protocol,
        help="echo: every byte back; http: fixed 200 OK, keep-alive",
    )
    parser.add_argument("--host", default=defaults.host, help="address to bind")
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="TCP port to bind; 0 picks a free one"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=defaults.backlog,
        help="listen(2) backlog, in connections; the kernel caps it at net.core.somaxconn, "
        "which is the default (read at start)",
    )
    parser.add_argument(
        "--read-bytes",
        type=int,
        default=defaults.read_bytes,
        help="bytes asked for per recv(2) call",
    )
    parser.add_argument(
        "--high-water",
        type=int,
        default=defaults.high_water_bytes,
        help="bytes of queued output per connection at which the server "
        "stops reading from it (backpressure)",
    )
    parser.add_argument(
        "--low-water",
        type=int,
        default=defaults.low_water_bytes,
        help="bytes of queued output below which reading resumes",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="connections held at once; past it a new connection is accepted and closed at "
        "once (errors: over_max_connections). Default: the descriptor budget, "
        f"RLIMIT_NOFILE minus {SERVER_RESERVE}",
    )
    parser.add_argument(
        "--max-output-bytes",
        type=int,
        default=defaults.max_output_bytes,
        help="bound on the queued output of all connections together; past it, reading "
        "stops on every connection holding queued output until the total is below 3/4 of it "
        "or that connection's own queue is empty",
    )
    parser.add_argument(
        "--max-headers",
        type=int,
        default=defaults.max_headers,
        help="http: header lines per request past which the request gets 400",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout_s,
        help="http: seconds a request may stay incomplete (head, or the body being "
        "skipped) before it gets 408 and a close; 0 disables",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        help="close a connection with no data either way for this many seconds; 0 (the "
        "default) never does, because idle connections are what the lab measures "
        "(nginx's keepalive_timeout is 75 s)",
    )
    parser.add_argument(
        "--et-read-budget",
        type=int,
        default=0,
        help="edge-triggered backends (epoll-et, io_uring-poll): bytes read from one "
        "connection per event before it waits for the "
        "next loop turn, so one flooding client cannot starve the others; 0 (the default) "
        "reads until EAGAIN",
    )
    parser.add_argument(
        "--et-drain",
        choices=ET_DRAINS,
        default=defaults.et_drain,
        help="epoll-et: how a drain ends. strict: every read, write and accept repeats "
        "until EAGAIN (the textbook rule, one wasted recv per request); short-read: a "
        "recv or send that moves fewer bytes than asked ends it (epoll(7)); accept "
        "still drains to EAGAIN",
    )
    parser.add_argument(
        "--cpu",
        type=int,
        default=None,
        help="pin the server to this CPU number (default: not pinned)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes, each with its own backend and loop; 1 (the default) is "
        "one process, as without the option",
    )
    parser.add_argument(
        "--balance",
        choices=BALANCE_NAMES,
        default="reuseport",
        help="with --workers > 1: reuseport, a listener per worker (SO_REUSEPORT); shared, "
        "one listener every worker watches (the thundering herd); exclusive, shared with "
        "EPOLLEXCLUSIVE (epoll backends only)",
    )
    parser.add_argument(
        "--cpus",
        default=None,
        help="pin worker i to the i-th CPU of this list, round robin: '0,1' or '0-3' "
        "(default: not pinned)",
    )
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0..65535, not {args.port}")
    if args.read_bytes < 1 or args.backlog < 1:
        raise UsageError("--read-bytes and --backlog must be positive")
    if not 0 <= args.low_water <= args.high_water:
        raise UsageError("need 0 <= --low-water <= --high-water")
    if args.max_connections is not None and args.max_connections < 1:
        raise UsageError("--max-connections must be positive")
    if args.max_output_bytes < 1 or args.max_headers < 1:
        raise UsageError("--max-output-bytes and --max-headers must be positive")
    if args.header_timeout < 0 or args.idle_timeout < 0 or args.et_read_budget < 0:
        raise UsageError("--header-timeout, --idle-timeout and --et-read-budget must be >= 0")
    return ServerConfig(
        backend=args.backend,
        protocol=args.protocol,
        host=args.host,
        port=args.port,
        backlog=args.backlog,
        read_bytes=args.read_bytes,
        high_water_bytes=args.high_water,
        low_water_bytes=args.low_water,
        max_headers=args.max_headers,
        header_timeout_s=args.header_timeout or None,
        idle_timeout_s=args.idle_timeout or None,
        max_connections=args.max_connections,
        max_output_bytes=args.max_output_bytes,
        et_read_budget_bytes=args.et_read_budget or None,
        et_drain=args.et_drain,
    )


def print_counters(snapshot: dict[str, Any]) -> None:
    print(format_counters_line(snapshot), flush=True)


def print_ready(host: str, port: int, config: ServerConfig) -> None:
    """The ready line (servers/contract.py), the first line a server prints on stdout."""
    print(ReadyLine(host, port, config.backend, config.protocol).format(), flush=True)


def log_to_stderr() -> None:
    logging.basicConfig(format="muxlab serve: %(levelname)s: %(message)s", stream=sys.stderr)


def create_server(config: ServerConfig) -> Server | UringServer:
    """The shared readiness loop, or the loop a completion mechanism brings."""
    if brings_own_loop(config.backend):
        require_available(config.backend)
        return UringServer(config, on_snapshot=print_counters)
    return Server(config, on_snapshot=print_counters)


def parse_cpus(text: str | None) -> tuple[int, ...]:
    """``0,2`` or ``0-3`` (or both, ``0-1,4``) as CPU numbers this process may run on."""
    if text is None:
        return ()
    allowed = os.sched_getaffinity(0)
    cpus: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            cpus += range(int(low), int(high or low) + 1)
        except ValueError:
            raise UsageError(f"--cpus: {part!r} is not a CPU number or range") from None
    if not cpus or not set(cpus) <= allowed:
        raise UsageError(f"--cpus {text!r}: this process may run on CPUs {sorted(allowed)}")
    return tuple(cpus)


def workers_config_from_args(args: argparse.Namespace, server: ServerConfig) -> WorkersConfig:
    if not 1 <= args.workers <= 1024:
        raise UsageError(f"--workers must be 1..1024, not {args.workers}")
    if args.balance == "exclusive":
        refusal = exclusive_refusal(server.backend)
        if refusal is not None:
            raise UsageError(refusal)
    if args.workers > 1 and args.cpu is not None:
        raise UsageError("--cpu pins one process; with --workers use --cpus")
    return WorkersConfig(server, args.workers, args.balance, parse_cpus(args.cpus))


def run_workers(config: WorkersConfig) -> int:
    """``--workers N`` (N > 1): the parent of N server processes (servers/multiproc.py)."""
    raise_fd_limit()
    log_to_stderr()
    supervisor = Supervisor(config, print_line=print_counters)
    try:
        host, port = supervisor.start()
    except (ServerSetupError, BackendUnavailableError, WorkersError) as exc:
        raise SetupError(str(exc)) from None
    print_ready(host, port, config.server)
    snapshot = supervisor.run()
    print_counters(snapshot)
    print(format_counters_table({k: v for k, v in snapshot.items() if k != "workers"}),
          file=sys.stderr)  # fmt: skip
    if supervisor.deaths:
        raise RunError("; ".join(supervisor.deaths))
    return 0


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    workers = workers_config_from_args(args, config)
    if workers.workers > 1:
        return run_workers(workers)
    cpu = workers.cpus[0] if workers.cpus else args.cpu
    if cpu is not None:
        pin_to_cpu(cpu)
    raise_fd_limit()
    log_to_stderr()
    try:
        server = create_server(config)
    except (ServerSetupError, BackendUnavailableError) as exc:
        raise SetupError(str(exc)) from None

    def stop(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    def report(signum: int, frame: FrameType | None) -> None:
        server.request_snapshot()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, report)
    print_ready(*server.address, config)
    # A Python signal handler runs between bytecodes, so a signal that arrives after the
    # loop's last check and before its wait system call starts would leave the wait
    # blocked until the next event (seen: SIGUSR1 unanswered for seconds on an idle
    # io_uring server). The C-level handler writes to the wakeup descriptor at delivery,
    # which ends the wait; the Python handler then runs and the loop sees its request.
    previous_wakeup_fd = signal.set_wakeup_fd(server.wakeup_fd, warn_on_full_buffer=False)
    try:
        server.run()
    except ServerFailedError as exc:
        # The listener or the backend failed: every connection is gone with it. Report
        # what was counted, then one line and exit 1 (RunError).
        print_counters(server.counters.snapshot())
        raise RunError(str(exc)) from None
    finally:
        # run() has closed the wake pair; nothing opens a descriptor before this reset.
        signal.set_wakeup_fd(previous_wakeup_fd)
    snapshot = server.counters.snapshot()
    print_counters(snapshot)
    print(format_counters_table(snapshot), file=sys.stderr)
    return 0

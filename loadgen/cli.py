"""``muxlab load``: drive a server, verify every reply, report throughput and latency.

Exit status: 0 when the run completed with no error, 1 when it completed with errors (a
server that died or stalled included), 2 when the options or the machine made it
impossible to start, 3 when an open loop achieved less than 99% of its offered rate
without errors (overloaded), 130 after Ctrl-C (the partial result is still written).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from loadgen import cluster_cli
from loadgen.config import DEFAULT_CONNECT_RATE_CPS, LOAD_PROTOCOLS
from loadgen.options import config_from_args
from loadgen.phase_lines import Phase, phase_line
from loadgen.report import format_progress, format_summary
from loadgen.runner import Progress, run_load
from muxlab.atomic import write_json_atomic
from muxlab.clibase import HelpFormatter, Subparsers
from muxlab.errors import UsageError


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "load",
        help="drive a server with verified echo or HTTP requests",
        description=(
            "Open connections at --connect-rate, warm up, then measure for --duration: "
            "closed loop (--pipeline requests in flight per connection) or open loop "
            "(--rate, latency corrected for coordinated omission). Every reply is verified. "
            "Exit 0: no errors; 1: errors; 2: could not start; 3: open loop overloaded "
            "(achieved < 99% of --rate, no errors); 130: interrupted."
        ),
        formatter_class=HelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="server address")
    add("--port", type=int, required=True, help="server TCP port")
    add(
        "--protocol",
        choices=LOAD_PROTOCOLS,
        default="echo",
        help="echo: verified byte for byte; http: any HTTP/1.1 server, 2xx replies expected",
    )
    add("--method", default="GET", help="http: request method (no body is sent)")
    add("--path", default="/", help="http: request target")
    add("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'",
        help="http: add this request header (repeatable); Host is set unless given")  # fmt: skip
    add("--connections", type=int, default=10, help="active connections")
    add(
        "--idle",
        type=int,
        default=0,
        help="extra connections opened and held silent, checked still open at the end",
    )
    add(
        "--processes",
        type=int,
        default=None,
        help="worker processes (default: one per entry of --cpus, else one per CPU this "
        "process may use that is not in --server-cpu; at least 1)",
    )
    add("--cpus", default=None, help="pin workers to these CPUs, round-robin, e.g. '1,2-3'")
    add(
        "--server-cpus",
        "--server-cpu",
        dest="server_cpu",
        metavar="CPUS",
        default=None,
        help="CPUs the server runs on: left out of the default --processes, and refused "
        "in --cpus unless --force",
    )
    add("--force", action="store_true",
        help="accept --cpus that overlap --server-cpus (the result then says so)")  # fmt: skip
    add("--duration", type=float, default=10.0, help="measurement window, seconds")
    add("--warmup", type=float, default=1.0, help="discarded warm-up, seconds")
    add("--size", type=int, default=64, help="echo message size, bytes")
    add("--pipeline", type=int, default=1, help="requests in flight per connection")
    add(
        "--rate",
        type=float,
        default=None,
        help="open loop: total requests per second (default: closed loop)",
    )
    add(
        "--connect-rate",
        type=float,
        default=DEFAULT_CONNECT_RATE_CPS,
        help="connections opened per second during the ramp",
    )
    add(
        "--timeout",
        type=float,
        default=5.0,
        help="a request unanswered this long (seconds) is an error; also bounds the "
        "connect and the drain after the window",
    )
    add(
        "--source-addresses",
        default=None,
        metavar="ADDRESSES",
        help="spread the connections over these local addresses, round-robin, e.g. "
        "'127.0.0.2,127.0.0.3': each address has its own ephemeral port range (default: "
        "automatic, more loopback addresses only when one would hold over a quarter of "
        "net.ipv4.ip_local_port_range)",
    )
    add("--json", type=Path, default=None, help="write the result here (atomically)")
    add("--quiet", action="store_true", help="no summary and no progress line")
    add("--phase-lines", action="store_true",
        help=f"print '{phase_line('measure')}' and '{phase_line('end')}' on stdout "
        "as the measurement window opens and closes")  # fmt: skip
    cluster_cli.add_options(parser)
    parser.set_defaults(run=run)


def check_output_path(path: Path) -> None:
    """Fail before the run, not after it, when the result file cannot be written."""
    if path.is_dir():
        raise UsageError(f"--json {path} is a directory")
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"--json {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--json {path}: cannot write in {existing}")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.json is not None:
        check_output_path(args.json)
    if args.cluster is not None:
        return cluster_cli.run(args, config)
    show_progress = not args.quiet and sys.stderr.isatty()

    def on_phase(phase: Phase) -> None:
        if args.phase_lines:
            print(phase_line(phase), flush=True)

    def on_progress(progress: Progress) -> None:
        sys.stderr.write("\r" + format_progress(progress) + "\033[K")
        sys.stderr.flush()

    result = run_load(config, on_phase=on_phase, on_progress=on_progress if show_progress else None)
    if show_progress:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
    if args.json is not None:
        write_json_atomic(args.json, result.to_json())
    if not args.quiet:
        print(format_summary(result), flush=True)
    return result.exit_status

"""``muxlab trace``: a timeline of one real server's wait calls, events, reads and writes."""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.trace import TraceConfig, format_timeline, run_trace
from muxlab.clibase import HelpFormatter, Subparsers
from muxlab.errors import SetupError, UsageError
from servers.backends import BACKEND_NAMES, BackendUnavailableError
from servers.loop import ServerSetupError

MAX_CONNECTIONS = 100
MAX_MESSAGE_BYTES = 1 << 20


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="print every wait call, its events and the I/O that followed",
        description=(
            "Run the muxlab echo server on one backend in this process, drive it with a "
            "short scripted client (connect; every size on every connection, echo read back "
            "in full; close), and print the timeline: each wait call and the events it "
            "returned, then the accepts, recvs and sends that followed, with byte counts and "
            "EAGAINs marked. Compare --backend epoll-lt with epoll-et."
        ),
        formatter_class=HelpFormatter,
    )
    defaults = TraceConfig()
    parser.add_argument("--backend", choices=BACKEND_NAMES, default=defaults.backend,
                        help="readiness mechanism")  # fmt: skip
    parser.add_argument("--connections", type=int, default=defaults.connections,
                        help=f"client connections, 1..{MAX_CONNECTIONS}")  # fmt: skip
    parser.add_argument("--sizes", default=",".join(map(str, defaults.sizes_bytes)),
                        help="comma-separated message sizes in bytes, in order")  # fmt: skip
    parser.add_argument("--read-bytes", type=int, default=defaults.read_bytes,
                        help="bytes the server asks for per recv(2)")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the trace as JSON to PATH")  # fmt: skip
    parser.set_defaults(run=run)


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--sizes must be comma-separated integers, not {text!r}") from None
    if not all(1 <= size <= MAX_MESSAGE_BYTES for size in sizes):
        raise UsageError(f"every --sizes value must be 1..{MAX_MESSAGE_BYTES} bytes")
    return sizes


def config_from_args(args: argparse.Namespace) -> TraceConfig:
    if not 1 <= args.connections <= MAX_CONNECTIONS:
        raise UsageError(f"--connections must be 1..{MAX_CONNECTIONS}, not {args.connections}")
    if args.read_bytes < 1:
        raise UsageError(f"--read-bytes must be positive, not {args.read_bytes}")
    return TraceConfig(
        backend=args.backend,
        connections=args.connections,
        sizes_bytes=parse_sizes(args.sizes),
        read_bytes=args.read_bytes,
    )


def check_json_path(path: Path) -> None:
    """Refuse an unwritable --json before tracing, not after the timeline has printed."""
    if path.is_dir():
        raise UsageError(f"--json {path} is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"--json {path}: {path.parent} is not a directory")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.json is not None:
        check_json_path(Path(args.json))
    try:
        result = run_trace(config)
    except (BackendUnavailableError, ServerSetupError) as exc:
        raise SetupError(str(exc)) from None
    print(format_timeline(result))
    if args.json is not None:
        try:
            result.write_json(args.json)
        except OSError as exc:
            raise SetupError(f"cannot write {args.json}: {exc.strerror}") from None
    return 0

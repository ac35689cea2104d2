"""``muxlab``: one command, one subcommand per job.

Each subcommand lives next to the code it drives and contributes ``add_parser``; this
module only wires them together and turns :class:`~muxlab.errors.MuxlabError` into one
line on stderr and an exit status, so no user-caused failure ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
from collections.abc import Iterator, Sequence
from types import FrameType

from muxlab import __version__
from muxlab.clibase import HelpFormatter, OneLineParser
from muxlab.errors import MuxlabError

# name -> module providing ``add_parser(subparsers)``. The modules keep heavy imports
# (matplotlib, numpy) inside their run functions, so ``muxlab serve`` starts fast.
SUBCOMMANDS: dict[str, str] = {
    "serve": "servers.cli",
    "load": "loadgen.cli",
    "demo": "lab.demo_cli",
    "trace": "lab.trace_cli",
    "grade": "lab.grade_cli",
    "sweep": "benchmarks.cli",
    "plot": "benchmarks.plot_cli",
    "report": "benchmarks.report_cli",
    "c50k": "benchmarks.c50k_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="muxlab",
        description="Measure select, poll, epoll-LT and epoll-ET servers on real sockets.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"muxlab {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser
    )
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM both raise KeyboardInterrupt while a command runs, so ``kill``,
    ``timeout`` or a CI cancellation stop a sweep or a load run as cleanly as Ctrl-C:
    children reaped, what was measured written. SIGINT is set explicitly because a shell
    starts background jobs with it ignored. ``muxlab serve`` installs its own handlers."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with interruptible():
            status: int = args.run(args)
    except MuxlabError as exc:
        print(f"muxlab {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return status

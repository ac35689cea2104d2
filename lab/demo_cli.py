"""``muxlab demo NAME``: run one coursework demo; exit 0 when it reproduced its behaviour."""

from __future__ import annotations

import argparse

from lab.demos import DEMOS, run_demo
from muxlab.clibase import HelpFormatter, Subparsers
from muxlab.errors import RunError, UsageError


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="reproduce one select/poll/epoll pitfall on loopback sockets",
        description=(
            "Run a small deterministic experiment that makes a documented select/poll/epoll "
            "behaviour happen, with the naive handler and the fix. Prints what it did, the "
            "counts it observed, why, and the man page section. Exit status 0: reproduced; "
            "1: not reproduced."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("name", nargs="?", choices=list(DEMOS), metavar="NAME",
                        help="the demo to run (see --list)")  # fmt: skip
    parser.add_argument("--list", action="store_true", help="list the demos and exit")
    parser.set_defaults(run=run)


def format_list() -> str:
    width = max(len(name) for name in DEMOS)
    return "\n".join(f"{name:<{width}}  {demo.summary}" for name, demo in DEMOS.items())


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(format_list())
        return 0
    if args.name is None:
        raise UsageError("name a demo, or use --list to see them")
    demo = DEMOS[args.name]
    if (reason := demo.unavailable()) is not None:
        raise RunError(f"{args.name} cannot run here: {reason}")
    try:
        report = run_demo(demo)
    except (OSError, RuntimeError) as exc:
        # The machine could not run the experiment at all (a limit, an old kernel).
        raise RunError(f"{args.name} could not run here: {exc}") from None
    print(report.text)
    return report.exit_status

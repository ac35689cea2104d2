"""``muxlab grade PATH``: score an echo server against the coursework rubric.

Exit status 0 only at full marks, 1 when any point was lost, 2 for bad input or a
machine that cannot run every check (too low a descriptor limit).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.grade import (
    FD_HEADROOM,
    FULL_MARKS,
    MANY_CONNECTIONS,
    RUBRIC,
    grade,
    header,
    score_line,
)
from muxlab.clibase import HelpFormatter, Subparsers
from muxlab.errors import SetupError, UsageError
from muxlab.fdbudget import raise_fd_limit


def add_parser(subparsers: Subparsers) -> None:
    names = [c.name for c in RUBRIC]
    parser = subparsers.add_parser(
        "grade",
        help="grade a student's echo server (lab/assignment/) against the rubric",
        description=(
            "Start PATH as 'python PATH --host 127.0.0.1 --port PORT' (a .py file) or "
            "'PATH --host ... --port ...' (an executable), a fresh process per criterion, "
            "drive it with the contract checks, and print a score per criterion "
            f"(out of {FULL_MARKS}) with a one-line reason for each lost point. Exit status 0 "
            "only at full marks."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="the server program to grade")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the random payloads and chunkings (default: 0)")  # fmt: skip
    parser.add_argument("--backend", metavar="NAME",
                        help="pass '--backend NAME' to the server (second task: poll)")  # fmt: skip
    only_help = f"grade only this criterion (repeatable): {', '.join(names)}"
    parser.add_argument("--only", action="append", choices=names, metavar="CRITERION",
                        help=only_help)  # fmt: skip
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    limit = raise_fd_limit()
    if limit < MANY_CONNECTIONS + FD_HEADROOM:
        raise SetupError(
            f"the descriptor limit is {limit}; the connections check needs "
            f"{MANY_CONNECTIONS + FD_HEADROOM} (raise the hard limit: ulimit -Hn)"
        )
    criteria = [c for c in RUBRIC if not args.only or c.name in args.only]
    extra_args = ("--backend", args.backend) if args.backend else ()
    # One line per criterion as it finishes: a broken server takes up to a minute or two.
    print(header(path), flush=True)
    report = grade(path, seed=args.seed, extra_args=extra_args, criteria=criteria,
                   progress=lambda score: print(score_line(score), flush=True))  # fmt: skip
    print(report.text().splitlines()[-1])
    return 0 if report.full_marks else 1

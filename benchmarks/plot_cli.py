"""``muxlab plot``: redraw charts from a sweep results file or pytest-benchmark JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from muxlab.clibase import HelpFormatter, Subparsers
from muxlab.errors import UsageError


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "plot",
        help="redraw charts from a results file",
        description=(
            "Draw every chart (PNG and SVG) from a 'muxlab sweep' results.json, or from "
            "pytest-benchmark's --benchmark-json output (cost against N, one line per "
            "backend). Charts come from the file only, never from a live run."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("results", type=Path, help="results.json or a --benchmark-json file")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for the charts (default: charts/ next to the file)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.plot import plot_file

    try:
        paths = plot_file(args.results, args.out)
    except OSError as exc:
        raise UsageError(
            f"cannot write charts to {exc.filename or args.out}: {exc.strerror}"
        ) from None
    for path in paths:
        print(path)
    if not paths:
        print(f"muxlab plot: {args.results} has no measured points to draw", file=sys.stderr)
        return 1
    return 0

"""``muxlab report RUN_DIR``: the README's results section, generated from results.json."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from muxlab.clibase import HelpFormatter, Subparsers
from muxlab.errors import UsageError


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the README's results section from a run",
        description=(
            "Write Markdown from a 'muxlab sweep' results.json (valid repeats only): headline "
            "sentences with their numbers, the run's provenance, the headline tables, every "
            "headline ratio with its bootstrap 95%% interval and a met/missed/undecided "
            "verdict against its goal, and links to the charts. Prints to stdout, or writes "
            "--out FILE, or replaces the text between the markers "
            "'<!-- muxlab report begin -->' and '<!-- muxlab report end -->' in --update FILE."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "run_dir", type=Path, metavar="RUN_DIR", help="run directory or its results.json"
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", type=Path, default=None, help="write the Markdown to this file")
    target.add_argument(
        "--update",
        type=Path,
        default=None,
        metavar="FILE",
        help="replace the section between the report markers in FILE (e.g. README.md)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.report import render, update_file
    from benchmarks.results import ResultsFile
    from muxlab.atomic import write_text_atomic

    results = ResultsFile.load(args.run_dir)
    # Chart links are relative to where the Markdown ends up.
    written_to = args.update or args.out
    base = written_to.resolve().parent if written_to else Path.cwd()
    section = render(results.data, results.run_dir.resolve(), base)
    try:
        if args.update:
            update_file(args.update, section)
        elif args.out:
            write_text_atomic(args.out, section)
        else:
            sys.stdout.write(section)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename or written_to}: {exc.strerror}") from None
    return 0

"""The ground floor of every muxlab command line: help formatting and one-line usage errors.

It imports nothing of muxlab, so any subcommand module (``servers.cli``, ``loadgen.cli``,
``lab.demo_cli``, ...) and any ``python -m`` entry point can use it without importing
:mod:`muxlab.cli`, which imports every subcommand: no import cycle at run time.
"""

from __future__ import annotations

import argparse
from typing import NoReturn, TypeAlias

# What ``add_parser(subparsers)`` receives from :func:`muxlab.cli.build_parser`; a string,
# because argparse's action class is not subscriptable at run time.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none worth showing (None, False)
    or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``muxlab serve: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

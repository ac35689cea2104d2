"""The CLI's ground floor: muxlab/clibase.py imports nothing of muxlab, every subcommand
module imports without muxlab.cli (no cycle at run time), and every subcommand gets the
house help formatter and one-line usage errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from muxlab.cli import SUBCOMMANDS, build_parser
from muxlab.clibase import HelpFormatter, OneLineParser

# Prints the muxlab modules loaded by importing one module alone, in a fresh interpreter.
PROBE = (
    "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
    "print(json.dumps(sorted(m for m in sys.modules if m == 'muxlab' or "
    "m.startswith('muxlab.'))))"
)


def muxlab_modules_after_importing(module: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    loaded: list[str] = json.loads(out)
    return set(loaded)


def test_clibase_imports_nothing_of_muxlab() -> None:
    assert muxlab_modules_after_importing("muxlab.clibase") == {"muxlab", "muxlab.clibase"}


@pytest.mark.parametrize("module", [*SUBCOMMANDS.values(), "servers.peers"])
def test_subcommand_module_imports_alone_without_muxlab_cli(module: str) -> None:
    loaded = muxlab_modules_after_importing(module)
    assert "muxlab.clibase" in loaded
    assert "muxlab.cli" not in loaded


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    choices: dict[str, argparse.ArgumentParser] = actions[0].choices
    return choices


def test_every_subcommand_uses_the_ground_floor() -> None:
    parsers = subcommand_parsers()
    assert sorted(parsers) == sorted(SUBCOMMANDS)
    for name, sub in parsers.items():
        assert isinstance(sub, OneLineParser), name
        assert sub.formatter_class is HelpFormatter, name


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_a_usage_error_is_one_line_and_exit_2(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "muxlab", name, "--no-such-option"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # argparse reports an unknown option from the top-level parser ("muxlab: error:"),
    # unless the subcommand misses a required argument first ("muxlab grade: error:").
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(("muxlab: error: ", f"muxlab {name}: error: "))
    assert result.stderr.rstrip().endswith("--help)"), result.stderr

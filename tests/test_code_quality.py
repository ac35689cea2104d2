"""The house style is checked, not hoped for: ruff (lint and format) and mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["servers", "loadgen", "benchmarks", "lab", "muxlab", "tests"]


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "argv",
    [("ruff", "check", "."), ("ruff", "format", "--check", "."), ("mypy", *PACKAGES)],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(argv: tuple[str, ...]) -> None:
    result = run_tool(*argv)
    if "No module named" in result.stderr:
        pytest.skip(f"{argv[0]} is not installed (pip install -e '.[dev]')")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

"""``pytest --benchmark-only``'s first screen: the table, failures and meaningful skips.

The root conftest deselects every test without a ``benchmark`` fixture before
pytest-benchmark would mark it skipped, so ``-ra`` does not list one "Skipping
non-benchmark" line per test; a benchmark that skips itself still shows, with its reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TESTS = """
import pytest


def test_plain_one():
    assert True


def test_plain_two():
    assert True


def test_measured(benchmark):
    assert benchmark(sum, [1, 2, 3]) == 6


def test_cannot_run_here(benchmark):
    pytest.skip("needs a thing this machine lacks")
"""


def test_benchmark_only_lists_meaningful_skips_not_the_deselected_tests(tmp_path: Path) -> None:
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's options
    (tmp_path / "test_screen.py").write_text(TESTS)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--benchmark-only", "-ra", "-p", "no:cacheprovider",
         "--benchmark-disable-gc", "--benchmark-min-rounds=1", "test_screen.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Skipping non-benchmark" not in out
    assert re.search(
        r"^SKIPPED \[1\] test_screen\.py:\d+: needs a thing this machine lacks$", out, re.M
    )
    assert "1 passed, 1 skipped, 2 deselected" in out
    assert "test_measured" in out  # the benchmark table

"""Root conftest: plain ``pytest`` runs tests/; ``pytest --benchmark-only`` adds benchmarks/.

Under ``--benchmark-only`` the tests that take no ``benchmark`` fixture are deselected
here rather than skipped by pytest-benchmark: ``-ra`` (pyproject's pytest options) then
lists only the skips that mean something, a benchmark that cannot run on this machine and
why, under the benchmark table instead of one "Skipping non-benchmark" line per test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent / "benchmarks"


def benchmark_only(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_only", default=False))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    in_benchmarks = BENCHMARKS in (collection_path, *collection_path.parents)
    if in_benchmarks and not benchmark_only(config):
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Before pytest-benchmark marks them skipped: deselect what is not a benchmark."""
    if not benchmark_only(config):
        return
    benchmarks = [item for item in items if "benchmark" in getattr(item, "fixturenames", ())]
    others = [item for item in items if item not in benchmarks]
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = benchmarks

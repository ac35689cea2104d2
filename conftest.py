"""Root conftest: plain ``pytest`` runs tests/; ``pytest --benchmark-only`` adds benchmarks/."""

from __future__ import annotations

from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent / "benchmarks"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    in_benchmarks = BENCHMARKS in (collection_path, *collection_path.parents)
    if in_benchmarks and not config.getoption("benchmark_only", default=False):
        return True
    return None

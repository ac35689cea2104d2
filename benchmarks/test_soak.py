"""Soak: normal clients at a fixed rate next to hostile ones, for minutes, per backend.

For every backend: a baseline run with the normal clients alone (``min(duration, 60 s)``),
then ``MUXLAB_SOAK_S`` seconds (default 600) with the hostile clients of
:mod:`benchmarks.hostile` alongside (slowloris, never-reading, reset mid-message,
half-close, garbage, connect-and-close storms, bursts past ``--max-connections``). The
table printed at the end and each benchmark's ``extra_info`` hold: crashes (must be 0),
descriptor leaks (0), server RSS growth, the normal clients' p99 with and without the
hostile ones, and the server's errors by kind.

Run: ``MUXLAB_SOAK_S=600 pytest --benchmark-only benchmarks/test_soak.py -s``.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import pytest

from benchmarks.hostile import TABLE_HEADER, SoakResult, soak
from servers.backends import BACKEND_NAMES, BACKENDS

DURATION_S = float(os.environ.get("MUXLAB_SOAK_S", "600"))
BASELINE_S = min(DURATION_S, 60.0)
RATE = 2000  # normal requests per second, open loop: well under any backend's capacity
ROWS: list[str] = []


def _backend_param(name: str) -> object:
    reason = BACKENDS[name].unavailable_reason()  # type: ignore[index]
    return pytest.param(name, marks=[pytest.mark.skip(reason=reason)] if reason else [])


# The suite's per-test timeout (pyproject) is for tests; a soak runs for its duration.
@pytest.mark.timeout(BASELINE_S + DURATION_S + 300)
@pytest.mark.parametrize("backend", [_backend_param(name) for name in BACKEND_NAMES])
def test_soak_hostile_clients_next_to_normal_ones(benchmark: Any, backend: str) -> None:
    results: list[SoakResult] = []

    def run() -> None:
        results.append(soak(backend, BASELINE_S, RATE, hostile=False))
        results.append(soak(backend, DURATION_S, RATE, hostile=True))

    benchmark.group = "soak"
    benchmark.pedantic(run, rounds=1, iterations=1)
    baseline, hostile = results
    benchmark.extra_info.update(
        {"backend": backend, "rate": RATE, "baseline": asdict(baseline), "hostile": asdict(hostile),
         "p99_us_without_hostile": baseline.normal_p99_us,
         "p99_us_with_hostile": hostile.normal_p99_us}
    )  # fmt: skip
    ROWS.extend([baseline.row(), hostile.row()])
    print("\n" + "\n".join([TABLE_HEADER, *ROWS]))
    for result in results:
        assert not result.crashed
        assert result.fd_leak == 0
        assert result.normal_errors == {}
        assert result.normal_requests > 0
        # Open loop: every normal request due in the window was answered in it (a stall
        # of the normal clients, as the io_uring loop's piled-up receives caused, shows
        # here first).
        assert result.normal_requests >= 0.99 * RATE * result.duration_s
    assert hostile.server_errors.get("over_max_connections", 0) > 0  # the burst met the cap

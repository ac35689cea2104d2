"""A reduced end-to-end set: each backend as a server process under ``muxlab load``.

Each case is one run of the sweep's own procedure (:func:`benchmarks.sweep.run_point_once`):
server pinned to one CPU, load generator on the others, server counters and CPU time read
at the start and end of the measurement window. The run lasts a fixed time, so the
benchmark's time column is the wall time of one whole run, not the result; the results
are in ``extra_info``: ``rps``, ``cpu_us_per_request``, ``p50_us``, ``p99_us`` and the
rest of the sweep's metrics. ``muxlab plot`` draws ``rps`` against connections from it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.experiments import PointSpec, SweepPlan
from benchmarks.results import consistency_problems
from benchmarks.sweep import SweepConfig, default_cpus, run_point_once
from muxlab.fdbudget import raise_fd_limit
from servers.backends import BACKEND_NAMES, BACKENDS

# (active, idle): few connections; many active; few active among many idle. All three
# fit under select's FD_SETSIZE so every backend runs every case.
CASES = ((10, 0), (1000, 0), (10, 900))
PLAN = SweepPlan(experiments=(), repeats=1, duration_s=1.0, warmup_s=0.5)
CAPTION = (
    "One run of muxlab sweep's procedure per point: 1 KiB echo, closed loop, server pinned "
    "to one CPU, load generator on the others; requests/s in the measurement window."
)


@pytest.mark.parametrize(("connections", "idle"), CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_end_to_end(
    benchmark: pytest.FixtureRequest,
    tmp_path: Path,
    backend_name: str,
    connections: int,
    idle: int,
) -> None:
    reason = BACKENDS[backend_name].unavailable_reason()  # type: ignore[index]
    if reason:
        pytest.skip(reason)
    raise_fd_limit()
    server_cpu, client_cpus = default_cpus()
    config = SweepConfig(run_dir=tmp_path, server_cpu=server_cpu, client_cpus=client_cpus)
    point = PointSpec(backend_name, "echo", connections, idle, 1024, 1)
    benchmark.group = f"end to end: 1 KiB echo, {idle} idle connections"  # type: ignore[attr-defined]
    run = benchmark.pedantic(  # type: ignore[attr-defined]
        run_point_once, args=(point, PLAN, config, 1), rounds=1, iterations=1
    )
    benchmark.extra_info.update(  # type: ignore[attr-defined]
        backend=backend_name,
        connections=connections,
        idle=idle,
        msg_bytes=1024,
        client_bound=run.client_bound,
        x="connections",
        y="rps",
        x_label="active connections (log)",
        y_label="requests/s (log)",
        caption=CAPTION,
        **{k: v for k, v in run.metrics.items() if v is not None},
    )
    assert run.requests_ok > 0
    assert run.errors == {}
    record = {"key": point.key, "spec": asdict(point), "repeats": [asdict(run)]}
    assert consistency_problems(record) == []

"""How the run-to-run spread of one point changes with the window length (docs/sweep.md).

``python -m benchmarks.window_spread [--repeats 7] [--windows 1,2,3]`` measures one point
(epoll-lt, 100 connections, 1 KiB echo) with the sweep's own procedure, the windows
interleaved (1 s, 2 s, 3 s, 1 s, ...) so that background load hits each alike, and prints
per window the median, the median absolute deviation and the width of the median's
bootstrap 95% interval, as fractions of the median, for requests/s and CPU per request.
It takes about (warm-up + window + 1.5 s) x windows x repeats: 1.5 min by default.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.experiments import ExperimentSpec, PointSpec, SweepPlan
from benchmarks.stats import median_interval
from benchmarks.sweep import PointFailed, SweepConfig, default_cpus, run_point_once
from muxlab.fdbudget import raise_fd_limit

POINT = PointSpec("epoll-lt", "echo", 100, 0, 1024, 1)
WARMUP_S = 0.5
METRICS = {"rps": "requests/s", "cpu_us_per_request": "CPU us/request"}


def spread(values: list[float]) -> str:
    sample = np.asarray(values, dtype=float)
    median = float(np.median(sample))
    mad = float(np.median(np.abs(sample - median))) / median
    interval = median_interval(values)
    width = "-" if interval is None else f"{(interval.high - interval.low) / median:.0%}"
    return f"median {median:,.4g}  MAD {mad:.1%}  CI width {width}  (n={sample.size})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--windows", default="1,2,3", help="window lengths in seconds")
    args = parser.parse_args(argv)
    windows = [float(w) for w in args.windows.split(",")]
    raise_fd_limit()
    server_cpu, client_cpus = default_cpus()
    samples: dict[float, dict[str, list[float]]] = {w: {m: [] for m in METRICS} for w in windows}
    experiment = ExperimentSpec("window", "active", (POINT.impl,), connections=(100,))
    with tempfile.TemporaryDirectory(prefix="muxlab-window-") as run_dir:
        config = SweepConfig(Path(run_dir), server_cpu, client_cpus)
        for repeat in range(1, args.repeats + 1):
            for index, window in enumerate(windows):
                plan = SweepPlan((experiment,), 1, window, WARMUP_S)
                # attempt = window index: each run gets its own loadgen/*.json name.
                try:
                    run = run_point_once(POINT, plan, config, repeat, attempt=index + 1)
                except PointFailed as exc:
                    print(f"window {window} s repeat {repeat}: failed: {exc}", file=sys.stderr)
                    continue
                if not run.valid:
                    print(f"window {window} s repeat {repeat}: invalid: {run.problems}")
                    continue
                for metric in METRICS:
                    value = run.metrics[metric]
                    if value is not None:
                        samples[window][metric].append(value)
    for window in windows:
        for metric, label in METRICS.items():
            values = samples[window][metric]
            print(f"window {window:g} s  {label:<15} {spread(values) if values else 'no data'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

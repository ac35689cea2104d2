"""A stand-in for ``muxlab load --rate R`` with a known knee, for ``muxlab sweep --loadgen``.

It takes muxlab load's options (parsed by muxlab load's own parser), prints the two phase
lines the sweep snapshots the server at, and writes a schema 2 result (LOAD_CONTRACT,
built by ``loadgen.result.LoadResult`` itself) in which the server keeps up to
``MUXLAB_STUB_KNEE_RPS`` requests/s (p99 300 us) and achieves only that much above it
(p99 50 ms). Exit status 3 when overloaded, as muxlab load's. It sends nothing: the sweep
around it (server start, counters, teardown, results, charts) is what is under test.
"""

from __future__ import annotations

import os
import sys

from loadgen.options import config_from_args
from loadgen.phase_lines import phase_line
from loadgen.recording import LatencySummary, encode, new_histogram
from loadgen.result import ConnectionCounts, LoadResult, OpenLoopCounts
from muxlab.atomic import write_json_atomic
from muxlab.cli import build_parser

FAST_P99_US = 300.0
SLOW_P99_US = 50_000.0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(["load", *argv])
    config = config_from_args(args)
    assert config.rate_rps is not None and args.json is not None and args.phase_lines
    knee = float(os.environ["MUXLAB_STUB_KNEE_RPS"])
    print(phase_line("measure"), flush=True)
    print(phase_line("end"), flush=True)
    achieved = min(config.rate_rps, knee)
    p99 = FAST_P99_US if config.rate_rps <= knee else SLOW_P99_US
    due = round(config.rate_rps * config.duration_s)
    answered = round(achieved * config.duration_s)
    latency = LatencySummary(p99 / 4, p99 / 2, p99, p99 * 2, p99 * 3, p99 / 3, answered)
    late = due - answered
    slots = OpenLoopCounts(config.rate_rps, due, due, answered, late, 0, config.duration_s)
    result = LoadResult(
        config=config,
        environment={},
        requests_ok=answered,
        requests_total=answered,
        errors={},
        duration_s=config.duration_s,
        bytes_sent=0,
        bytes_received=0,
        per_second=(),
        client_cpu=(0.1,),
        connections=ConnectionCounts(config.connections, config.idle, config.idle, 0),
        latency=latency,
        latency_uncorrected=latency,
        histogram=encode(new_histogram()),
        histogram_uncorrected=encode(new_histogram()),
        open_loop=slots,
        parent_cpu=0.1,
    )
    write_json_atomic(args.json, result.to_json())
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

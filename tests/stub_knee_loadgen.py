"""A stand-in for ``muxlab load --rate R`` with a known knee, for ``muxlab sweep --loadgen``.

It takes muxlab load's options, prints the two phase lines the sweep snapshots the server
at, and writes a schema 2 result (LOAD_CONTRACT) in which the server keeps up to
``MUXLAB_STUB_KNEE_RPS`` requests/s (p99 300 us) and achieves only that much above it
(p99 50 ms). Exit status 3 when overloaded, as muxlab load's. It sends nothing: the sweep
around it (server start, counters, teardown, results, charts) is what is under test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

FAST_P99_US = 300.0
SLOW_P99_US = 50_000.0


def main() -> int:
    parser = argparse.ArgumentParser()
    for option in ("--host", "--protocol", "--cpus"):
        parser.add_argument(option)
    for option in ("--port", "--connections", "--idle", "--processes", "--pipeline", "--size"):
        parser.add_argument(option, type=int)
    for option in ("--duration", "--warmup", "--timeout", "--connect-rate"):
        parser.add_argument(option, type=float)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--phase-lines", action="store_true")
    args = parser.parse_args()
    knee = float(os.environ["MUXLAB_STUB_KNEE_RPS"])
    print("muxlab load: phase measure", flush=True)
    print("muxlab load: phase end", flush=True)
    achieved = min(args.rate, knee)
    p99 = FAST_P99_US if args.rate <= knee else SLOW_P99_US
    due = round(args.rate * args.duration)
    answered = round(achieved * args.duration)
    result = {
        "schema_version": 2,
        "requests_ok": answered,
        "requests_total": answered,
        "rps": achieved,
        "errors": {},
        "latency_us": {
            "p50": p99 / 4,
            "p90": p99 / 2,
            "p99": p99,
            "p99_9": p99 * 2,
            "max": p99 * 3,
        },
        "open_loop": {
            "offered_rps": args.rate,
            "sent_rps": args.rate,
            "achieved_rps": achieved,
            "due": due,
            "sent": due,
            "answered": answered,
            "late": due - answered,
            "refused": 0,
        },
        "overloaded": achieved < 0.99 * args.rate,
        "client_cpu": [0.1],
        "parent_cpu": 0.1,
        "client_bound": False,
        "mib_per_s": 0.0,
        "connections": {"idle_open_at_end": args.idle},
    }
    args.json.write_text(json.dumps(result))
    return 3 if result["overloaded"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""A load generator that misbehaves on purpose, for the sweep's validity tests.

``python tests/stub_loadgen.py STATE FAULTS <muxlab load options...>`` runs the real
``muxlab load`` with the options (so the server sees real traffic and the phase lines are
real), then injects the fault of this invocation into its result file and exit status.
FAULTS is a comma-separated list, one fault per invocation in order (``ok`` for none);
invocations past its end are ``ok``. STATE counts invocations and logs each one's
``--json`` path, so a test can read the order the sweep ran its points in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Result = dict[str, Any]


def errors(result: Result) -> int:
    result["errors"] = {"timeout": 2, "reset": 1}
    return 0  # the exit status alone must not be what makes it invalid


def lost_idle(result: Result) -> int:
    result["connections"]["idle_open_at_end"] -= 1
    return 0


def under_rate(result: Result) -> int:
    """Schema 2 open loop that reached half its offered rate."""
    result["schema_version"] = 2
    achieved = float(result["rps"])
    result["open_loop"] = {
        "offered_rps": 2 * achieved,
        "sent_rps": achieved,
        "achieved_rps": achieved,
        "due": 2 * int(result["requests_ok"]),
        "sent": int(result["requests_ok"]),
        "answered": int(result["requests_ok"]),
        "late": int(result["requests_ok"]),
        "refused": 0,
    }
    result["overloaded"] = True
    return 3


def exit1(result: Result) -> int:
    return 1


def worker_lost(result: Result) -> int:
    result["worker_failures"] = ["worker 1 exited with -9"]
    return 1


def ok(result: Result) -> int:
    return 0


FAULTS: dict[str, Callable[[Result], int]] = {
    "ok": ok,
    "errors": errors,
    "lost-idle": lost_idle,
    "under-rate": under_rate,
    "exit1": exit1,
    "worker-lost": worker_lost,
}


def main(argv: list[str]) -> int:
    state, faults, options = Path(argv[0]), argv[1].split(","), argv[2:]
    calls = state.read_text().splitlines() if state.exists() else []
    fault = faults[len(calls)] if len(calls) < len(faults) else "ok"
    json_path = Path(options[options.index("--json") + 1])
    with state.open("a") as log:
        log.write(f"{json_path.name} {fault}\n")
    status = subprocess.call([sys.executable, "-m", "muxlab", "load", *options])
    if status != 0:
        return status
    result = json.loads(json_path.read_text())
    status = FAULTS[fault](result)
    json_path.write_text(json.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``muxlab load --cluster``: the options, and the run that replaces the local one when given.

Dask is an optional extra: without it, ``--cluster`` is one line saying how to install it
(exit 2), and ``muxlab load`` itself never imports it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.util import find_spec

from loadgen.config import LoadConfig
from loadgen.phase_lines import Phase, phase_line
from muxlab.atomic import write_json_atomic
from muxlab.errors import UsageError

INSTALL_HINT = 'pip install "muxlab[cluster]"'
# A window opened 5 ms apart on two hosts is 0.05% of the default 10 s window; NTP on a LAN
# keeps clocks well within it (chrony: tens of microseconds).
DEFAULT_MAX_SKEW_MS = 5.0


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        default=None,
        help="spread the load over the workers of this Dask cluster: a running scheduler "
        "(tcp://HOST:PORT) or ssh:HOST1,HOST2,... (needs muxlab[cluster]); --processes and "
        "--cpus then apply on each host, --connections and --rate are split over them",
    )
    parser.add_argument(
        "--max-skew-ms",
        type=float,
        default=DEFAULT_MAX_SKEW_MS,
        help="--cluster: refuse to run when the hosts' clocks differ by more (ms)",
    )


def require_distributed(cluster: str) -> None:
    needed = ["distributed"] + (["asyncssh"] if cluster.startswith("ssh:") else [])
    missing = [name for name in needed if find_spec(name) is None]
    if missing:
        raise UsageError(f"--cluster needs {' and '.join(missing)}, not installed: {INSTALL_HINT}")


def run(args: argparse.Namespace, config: LoadConfig) -> int:
    """The ``--cluster`` run: result file, summary with one line per host, exit status."""
    require_distributed(args.cluster)
    # Dask logs every lost connection at WARNING; a lost host is reported once, below.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    from loadgen.cluster import run_cluster_load
    from loadgen.cluster_report import format_hosts
    from loadgen.report import format_summary

    def on_phase(phase: Phase) -> None:
        if args.phase_lines:
            print(phase_line(phase), flush=True)

    result = run_cluster_load(config, args.cluster, args.max_skew_ms, on_phase)
    if args.json is not None:
        write_json_atomic(args.json, result.to_json())
    if not args.quiet:
        print(format_summary(result.merged), flush=True)
        print(format_hosts(result), flush=True)
    for failure in result.failures:
        print(f"muxlab load: error: {failure}", file=sys.stderr, flush=True)
    return result.exit_status

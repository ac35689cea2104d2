"""``muxlab sweep --cluster/--server-host``: the options, checked before anything starts.

Dask is imported only when ``--cluster`` is given (by :func:`open_session`), so a local
sweep never needs the ``cluster`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from benchmarks.experiments import SCALING_KINDS, SweepPlan
from benchmarks.topology import LOCAL_HOST, SweepTopology
from loadgen.cluster_cli import DEFAULT_MAX_SKEW_MS, require_distributed
from muxlab.errors import UsageError

if TYPE_CHECKING:
    from benchmarks.cluster_sweep import ClusterSession, ClusterTarget


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load from several hosts (needs muxlab[cluster])")
    group.add_argument(
        "--cluster",
        metavar="ADDRESS",
        default=None,
        help="run every point's load over the workers of this Dask cluster, as "
        "'muxlab load --cluster' does: a running scheduler (tcp://HOST:PORT) or "
        "ssh:HOST1,HOST2,...; --client-cpus then apply on each client host (default: one "
        "load process per host, unpinned)",
    )
    group.add_argument(
        "--server-host",
        metavar="NAME",
        default=None,
        help="--cluster: run the server on this Dask worker (its name or address), which "
        "then sends no load (default: this machine)",
    )
    group.add_argument(
        "--max-skew-ms",
        type=float,
        default=DEFAULT_MAX_SKEW_MS,
        help="--cluster: refuse to run when the client hosts' clocks differ by more (ms)",
    )


def target_from_args(args: argparse.Namespace) -> ClusterTarget | None:
    """A new sweep's cluster, or None for a local one; UsageError for options that do
    not go together."""
    if args.cluster is None:
        if args.server_host is not None:
            raise UsageError("--server-host names a Dask worker: it needs --cluster")
        return None
    if args.loadgen is not None:
        raise UsageError("--loadgen replaces the load generator here: not with --cluster")
    require_distributed(args.cluster)
    from benchmarks.cluster_sweep import ClusterTarget

    processes = len(args.client_cpus) if args.client_cpus else 1
    return ClusterTarget(args.cluster, args.server_host, args.max_skew_ms, processes)


def target_from_topology(topology: SweepTopology, max_skew_ms: float) -> ClusterTarget | None:
    """A resumed sweep's cluster: the one it started on."""
    if topology.mode == "local" or topology.cluster is None:
        return None
    require_distributed(topology.cluster)
    from benchmarks.cluster_sweep import ClusterTarget

    server = None if topology.server_host == LOCAL_HOST else topology.server_host
    processes = topology.clients[0].processes if topology.clients else 1
    return ClusterTarget(topology.cluster, server, max_skew_ms, processes)


@contextlib.contextmanager
def open_session(target: ClusterTarget | None) -> Iterator[ClusterSession | None]:
    if target is None:
        yield None
        return
    # Dask logs every lost connection at WARNING; a lost host is reported once, by us.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    from benchmarks.cluster_sweep import open_cluster

    with open_cluster(target) as session:
        yield session


def check_same_hosts(stored: SweepTopology, now: SweepTopology, force: bool) -> None:
    """A resumed cluster sweep continues on the hosts it started on (unless --force)."""
    before = sorted(c.name for c in stored.clients)
    after = sorted(c.name for c in now.clients)
    if (before, stored.server_host) != (after, now.server_host) and not force:
        raise UsageError(
            f"the cluster's hosts changed since the run started (clients {before}, server "
            f"{stored.server_host}; now {after}, {now.server_host}): resume anyway with --force"
        )


def local_only(plan: SweepPlan) -> tuple[SweepPlan, list[str]]:
    """The plan without the kinds that load the server from this machine only (herd,
    cores: benchmarks/herd.py), and a note naming what was left out."""
    dropped = [e.name for e in plan.experiments if e.kind in SCALING_KINDS]
    if not dropped:
        return plan, []
    kept = tuple(e for e in plan.experiments if e.kind not in SCALING_KINDS)
    note = f"--cluster: left out {', '.join(dropped)} (their load runs on this machine only)"
    return replace(plan, experiments=kept), [note]

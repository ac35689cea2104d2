"""One result from several hosts: each host's :class:`LoadResult` merged exactly, plus ``hosts``.

Every host runs its share of the connections as an ordinary ``muxlab load`` run and sends
back its :class:`LoadResult`, whose histograms are in HdrHistogram's standard compressed
encoding. Here they are decoded and added by ``loadgen.result.merge_parts``, the merge that
also adds up one run's workers: the merged percentiles are those of every latency recorded
on every host, not an average of per-host percentiles.
Counts add up; ``per_second`` adds second by second, which is meaningful because all hosts
opened their window at the same agreed moment (``loadgen.cluster``).

The result file is the ``muxlab load --json`` schema (version 2, LOAD_CONTRACT.md) with two
more keys: ``hosts`` (one entry per host: its requests, errors, client CPU, client-bound
flag and clock skew) and ``cluster`` (the topology: how the hosts were reached, the
measured skew and the tolerance).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen.config import LoadConfig
from loadgen.result import LoadResult, Part, merge_parts

# errors[...] keys a cluster run adds to the ones a single host reports.
HOST_LOST = "host_lost"
HOST_FAILED = "host_failed"
HOST_NOT_READY = "host_not_ready"


@dataclass(frozen=True)
class HostClock:
    """A host's clock against the coordinator's (``CLOCK_REALTIME``, ``clock_gettime(2)``):
    ``offset_ns`` = host minus coordinator, known to within ``uncertainty_ns`` (half the
    round trip of the best of several probes, as NTP bounds it, RFC 5905)."""

    offset_ns: int
    uncertainty_ns: int


@dataclass(frozen=True)
class HostOutcome:
    """What one host did: its result, or why there is none (lost, failed, not ready)."""

    name: str
    address: str
    share: LoadConfig
    clock: HostClock
    result: LoadResult | None
    failure: str | None = None
    error_kind: str | None = None

    def to_json(self) -> dict[str, Any]:
        result = self.result
        return {
            "name": self.name,
            "address": self.address,
            "connections": self.share.connections,
            "idle": self.share.idle,
            "processes": result.config.processes if result else None,
            "requests_ok": result.requests_ok if result else 0,
            "requests_total": result.requests_total if result else 0,
            "errors": dict(sorted(result.errors.items())) if result else {},
            "client_cpu": [round(u, 4) for u in result.client_cpu] if result else [],
            "parent_cpu": round(result.parent_cpu, 4) if result else 0.0,
            "client_bound": result.client_bound if result else False,
            "skew_ms": round(self.clock.offset_ns / 1e6, 3),
            "skew_uncertainty_ms": round(self.clock.uncertainty_ns / 1e6, 3),
            "failure": self.failure,
            "environment": result.environment if result else None,
        }


@dataclass(frozen=True)
class Topology:
    """How the hosts were reached and how well their clocks agreed."""

    cluster: str
    # Spread of the hosts' clock offsets (latest minus earliest), with its uncertainty.
    skew: HostClock
    max_skew_ns: int
    start_lead_ns: int

    def to_json(self, hosts: int) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "hosts": hosts,
            "skew_ms": round(self.skew.offset_ns / 1e6, 3),
            "skew_uncertainty_ms": round(self.skew.uncertainty_ns / 1e6, 3),
            "max_skew_ms": round(self.max_skew_ns / 1e6, 3),
            "start_lead_ms": round(self.start_lead_ns / 1e6, 3),
        }


@dataclass(frozen=True)
class ClusterResult:
    merged: LoadResult
    hosts: tuple[HostOutcome, ...]
    topology: Topology

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(f"host {h.name} ({h.address}): {h.failure}" for h in self.hosts if h.failure)

    @property
    def exit_status(self) -> int:
        return self.merged.exit_status

    def to_json(self) -> dict[str, Any]:
        data = self.merged.to_json()
        data["hosts"] = [host.to_json() for host in self.hosts]
        data["cluster"] = self.topology.to_json(len(self.hosts))
        return data


def merge_host_results(
    config: LoadConfig, environment: dict[str, Any], hosts: Sequence[HostOutcome]
) -> LoadResult:
    """The hosts' results as one (``loadgen.result.merge_parts``, as a run's workers are
    merged), with every host's processes counted and its failures named."""
    results = [h.result for h in hosts if h.result is not None]
    host_errors: Counter[str] = Counter(h.error_kind for h in hosts if h.error_kind)
    failures = [f"host {h.name} ({h.address}): {h.failure}" for h in hosts if h.failure]
    failures += [f"host {h.name}: {f}" for h in hosts if h.result
                 for f in h.result.worker_failures]  # fmt: skip
    processes = sum(r.config.processes or 0 for r in results) or None
    return merge_parts(
        dataclasses.replace(config, processes=processes),
        environment,
        [Part.of_result(r) for r in results],
        dict(host_errors),
        failures,
        interrupted=any(r.interrupted for r in results),
        # The busiest host's runner: the one that could limit the run.
        parent_cpu=max((r.parent_cpu for r in results), default=0.0),
    )

"""What a person reads after a ``--cluster`` run, below the usual summary: one line per host."""

from __future__ import annotations

from loadgen.cluster_result import ClusterResult


def format_hosts(result: ClusterResult) -> str:
    topology = result.topology
    skew = topology.skew
    lines = [
        f"  cluster      {topology.cluster}, {len(result.hosts)} host(s), clock skew "
        f"{skew.offset_ns / 1e6:.3f} +- {skew.uncertainty_ns / 1e6:.3f} ms "
        f"(limit {topology.max_skew_ns / 1e6:g} ms)"
    ]
    for host in result.hosts:
        head = f"  host {host.name:<8}"
        if host.result is None:
            lines.append(f"{head}{host.failure}")
            continue
        cpu = ", ".join(f"{u:.0%}" for u in host.result.client_cpu)
        lines.append(
            f"{head}{host.result.requests_ok:,} ok, {host.result.error_count:,} errors, "
            f"cpu {cpu} (parent {host.result.parent_cpu:.0%})"
            + (", CLIENT-BOUND" if host.result.client_bound else "")
            + f", clock {host.clock.offset_ns / 1e6:+.3f} ms"
        )
    return "\n".join(lines)

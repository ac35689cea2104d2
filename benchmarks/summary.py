"""The sweep's stdout report: one table row per point, then the headline ratios (issue 4).

(a) throughput at 10 active + the most idle connections measured, as a fraction of the
    same backend's 0-idle throughput (epoll should stay near 1, poll should collapse);
(b) server CPU per request of each epoll backend over uvloop's, at 100 and 1000
    connections with 1 KiB echo messages;
(c) the same over asyncio's protocol and streams servers.
Every ratio reads medians from the results document; a ratio whose points are not in the
run says so instead of printing a number.
"""

from __future__ import annotations

from typing import Any

from benchmarks.experiments import IDLE_ACTIVE_CONNECTIONS, RATIO_CONNECTIONS, RATIO_MSG_BYTES

IDLE_BACKENDS = ("epoll-lt", "epoll-et", "poll", "select")
EPOLL = ("epoll-lt", "epoll-et")
CPU_REFERENCES = ("uvloop-protocol", "asyncio-protocol", "asyncio-streams")


def median(record: dict[str, Any] | None, metric: str) -> float | None:
    if record is None or record["status"] != "done":
        return None
    value = record["summary"].get(metric, {}).get("median")
    return None if value is None else float(value)


def find(data: dict[str, Any], **spec: Any) -> dict[str, Any] | None:
    for record in data["points"]:
        if all(record["spec"][k] == v for k, v in spec.items()):
            found: dict[str, Any] = record
            return found
    return None


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def format_table(data: dict[str, Any]) -> str:
    header = (
        f"{'impl':<17}{'proto':<6}{'conns':>7}{'idle':>7}{'bytes':>9}{'req/s':>11}"
        f"{'IQR':>9}{'p50 us':>9}{'p99 us':>9}{'cpu us/req':>11}{'srv cpu':>8}{'cli cpu':>8}"
        "  flags"
    )
    lines = [header, "-" * len(header)]
    for record in data["points"]:
        spec = record["spec"]
        summary = record.get("summary") or {}
        rps = summary.get("rps", {})
        iqr = None
        if rps.get("q75") is not None:
            iqr = rps["q75"] - rps["q25"]
        flags = []
        if record["client_bound"]:
            flags.append("client-bound")
        errors = sum(sum(run["errors"].values()) for run in record["repeats"])
        if errors:
            flags.append(f"{errors} client errors")
        if record["status"] != "done":
            flags.append(f"{record['status']}: {record['reason'] or 'not measured yet'}")
        util = [median(record, "server_cpu_util"), median(record, "client_cpu_util")]
        lines.append(
            f"{spec['impl']:<17}{spec['protocol']:<6}{spec['connections']:>7}{spec['idle']:>7}"
            f"{spec['msg_bytes'] or '-':>9}{_fmt(median(record, 'rps')):>11}{_fmt(iqr):>9}"
            f"{_fmt(median(record, 'p50_us')):>9}{_fmt(median(record, 'p99_us')):>9}"
            f"{_fmt(median(record, 'cpu_us_per_request'), 1):>11}"
            + "".join(f"{'-' if u is None else f'{u:.0%}':>8}" for u in util)
            + ("  " + "; ".join(flags) if flags else "")
        )
    return "\n".join(lines)


def idle_ratios(data: dict[str, Any]) -> list[str]:
    lines = ["(a) throughput at 10 active + most idle, as a fraction of 0 idle (closed loop):"]
    for backend in IDLE_BACKENDS:
        base = find(
            data,
            impl=backend,
            protocol="echo",
            connections=IDLE_ACTIVE_CONNECTIONS,
            idle=0,
            msg_bytes=RATIO_MSG_BYTES,
        )
        loaded = [
            r
            for r in data["points"]
            if r["spec"]["impl"] == backend
            and r["spec"]["connections"] == IDLE_ACTIVE_CONNECTIONS
            and r["spec"]["idle"] > 0
            and r["spec"]["msg_bytes"] == RATIO_MSG_BYTES
            and r["status"] == "done"
        ]
        base_rps = median(base, "rps")
        if not loaded or base_rps is None:
            lines.append(f"    {backend:<10} n/a (no 0-idle and idle points in this run)")
            continue
        top = max(loaded, key=lambda r: r["spec"]["idle"])
        top_rps = median(top, "rps")
        assert top_rps is not None
        lines.append(
            f"    {backend:<10} {top_rps / base_rps:5.2f}  at {top['spec']['idle']:,} idle "
            f"({top_rps:,.0f} vs {base_rps:,.0f} req/s)"
        )
    return lines


def cpu_ratios(data: dict[str, Any]) -> list[str]:
    lines = [
        "(b, c) server CPU per request, epoll backend / reference "
        f"({RATIO_MSG_BYTES} B echo; < 1 means muxlab is cheaper):"
    ]
    for conns in RATIO_CONNECTIONS:
        for reference in CPU_REFERENCES:
            ref = median(
                find(
                    data,
                    impl=reference,
                    protocol="echo",
                    connections=conns,
                    idle=0,
                    msg_bytes=RATIO_MSG_BYTES,
                ),
                "cpu_us_per_request",
            )
            if ref is None:
                continue  # this run did not measure that reference at that count
            cells = []
            for backend in EPOLL:
                own = median(
                    find(
                        data,
                        impl=backend,
                        protocol="echo",
                        connections=conns,
                        idle=0,
                        msg_bytes=RATIO_MSG_BYTES,
                    ),
                    "cpu_us_per_request",
                )
                cells.append(f"{backend} n/a" if own is None else f"{backend} {own / ref:.2f}")
            lines.append(f"    {conns:>5} conns vs {reference:<17} " + "   ".join(cells))
    if len(lines) == 1:
        lines.append("    n/a (no reference peer was measured at these connection counts)")
    return lines


CLOSED_LOOP_HEADING = "closed loop, saturated (latency = connections / throughput, Little's law):"


def format_report(data: dict[str, Any]) -> str:
    from benchmarks.capacity import format_capacity
    from benchmarks.latency import format_latency

    parts = [CLOSED_LOOP_HEADING, format_table(data), "", *idle_ratios(data), *cpu_ratios(data)]
    for section in (format_capacity(data), format_latency(data)):
        if section:
            parts += ["", *section]
    if data["notes"]:
        parts += ["", "notes:", *(f"    {note}" for note in data["notes"])]
    return "\n".join(parts)

"""The chart "system calls per request", drawn from a sweep's ``results.json`` only.

It reads the server's own counters over each measurement window (``syscalls``, the one
sum :meth:`servers.counters.Counters.syscalls` defines: every wait, ``recv``, ``send``/
``sendmsg``, ``accept`` and ``epoll_ctl`` of the readiness loop; every ``io_uring_enter``
of the ring) divided by the requests served, so it needs no tracer and costs the run
nothing. Two panels: against message size (the experiments of kind ``ltet``) and against
active connections (``active`` and ``peers``, echo). The reference peers (asyncio, uvloop,
nginx) count no system calls, so they have no line; the caption names the ones left out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from benchmarks.chart_helpers import (
    LINESTYLES,
    MARKERS,
    byte_size,
    draw_series,
    finish_grid_chart,
    group_records,
    label_axes,
    size_ticks,
    variant_colour,
)

Record = dict[str, Any]
METRIC = "syscalls_per_request"
STEM = "syscalls"
SIZE_KINDS = frozenset({"ltet"})
CONNECTION_KINDS = frozenset({"active", "peers"})


def records_of(data: dict[str, Any], kinds: frozenset[str]) -> list[Record]:
    """The points of every experiment of these kinds, each once (experiments share)."""
    names = {e["name"] for e in data["plan"]["experiments"] if e["kind"] in kinds}
    return [r for r in data["points"] if names.intersection(r["experiments"])]


def counted(record: Record) -> bool:
    return (record["summary"].get(METRIC) or {}).get("median") is not None


def impl_label(spec: dict[str, Any]) -> str:
    drain = spec.get("et_drain")
    return spec["impl"] if drain is None else f"{spec['impl']} {drain}"


def draw_panel(
    ax: Axes, records: list[Record], x_field: str, line_field: str, line_name: Callable[[Any], str]
) -> None:
    groups = group_records(records, "impl", "et_drain", line_field)
    line_values = sorted({k[2] for k in groups})
    for (impl, drain, value), group in groups.items():
        label = impl_label(group[0]["spec"])
        position = line_values.index(value)
        draw_series(
            ax,
            group,
            lambda r: r["spec"][x_field],
            METRIC,
            label=f"{label}, {line_name(value)}",
            color=variant_colour(impl, drain),
            linestyle=LINESTYLES[position % len(LINESTYLES)],
            marker=MARKERS[position % len(MARKERS)],
        )


def chart_syscalls(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """The chart, or nothing when no point of the run counted its system calls."""
    by_size = [r for r in records_of(data, SIZE_KINDS) if r["spec"]["protocol"] == "echo"]
    by_conns = [
        r
        for r in records_of(data, CONNECTION_KINDS)
        if r["spec"]["protocol"] == "echo" and r["spec"]["idle"] == 0
    ]
    drawn_size = [r for r in by_size if counted(r)]
    drawn_conns = [r for r in by_conns if counted(r)]
    if not drawn_size and not drawn_conns:
        return []
    left_out = sorted(
        {r["spec"]["impl"] for r in by_size + by_conns if r["status"] == "done" and not counted(r)}
    )
    fig, (size_ax, conns_ax) = plt.subplots(1, 2, figsize=(14, 5.2))
    draw_panel(size_ax, drawn_size, "msg_bytes", "connections", lambda c: f"{c} conns")
    size_ax.set_xscale("log", base=2)
    label_axes(size_ax, "message size (log 2)", METRIC, "against message size (ltet)")
    sizes = sorted({r["spec"]["msg_bytes"] for r in drawn_size})
    if sizes:
        size_ticks(size_ax, sizes)
    draw_panel(conns_ax, drawn_conns, "connections", "msg_bytes", byte_size)
    conns_ax.set_xscale("log")
    label_axes(conns_ax, "active connections (log)", METRIC, "against connections (echo)")
    for ax in (size_ax, conns_ax):
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no counted points of these experiments in this run",
                    ha="center", va="center", transform=ax.transAxes)  # fmt: skip
    peers = (
        f" Left out, because they count no system calls: {', '.join(left_out)}."
        if left_out
        else " Reference peers (asyncio, uvloop, nginx) count no system calls and have no line."
    )
    body = (
        "System calls per request from the server's own counters over "
        "the window: for the readiness loop every wait, recv, send/sendmsg, accept and "
        "epoll_ctl (including the recv or send that returned EAGAIN); for io_uring, every "
        "io_uring_enter (the kernel does the receives and sends). A request that fits one "
        "recv costs LT a wait, a recv and a send; ET strict adds the EAGAIN recv; ET "
        "short-read saves it; the completion loop batches a whole turn into one enter." + peers
    )
    return finish_grid_chart(fig, "system calls per request", body, data, out_dir, STEM)

"""Charts, always drawn from a results file, never from live state (house style 8).

Two inputs: a sweep's ``results.json`` (one chart set per experiment, chosen by its kind)
and pytest-benchmark's ``--benchmark-json`` output (cost against N, one line per backend,
one chart per benchmark group). Every chart is written as PNG and SVG, carries a title,
axis labels with units, a legend, and a caption line saying how to read it.

Conventions in every sweep chart: a marker is the median over the valid repeats, the
error bar is the percentile-bootstrap 95% interval of that median (benchmarks/stats.py;
the inter-quartile range for schema 1 files, which have none), a thin pale bar spans the
min-max of the valid repeats, a hollow marker is a client-bound point (a load process was
>= 90% busy, so the server may have had capacity left), and an x on the bottom edge, in
the line's colour, is a failed point (no valid repeat: no value to draw).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from benchmarks.chart_helpers import (
    LINESTYLES,
    MARKERS,
    Record,
    ceiling_label,
    draw_impl_series,
    finish_grid_chart,
    group_records,
    label_axes,
    log_axes,
    size_ticks,
    variant_colour,
)
from benchmarks.chart_helpers import draw_series as draw_series  # re-exported: tests draw with it
from benchmarks.chart_helpers import finish as finish  # re-exported: tests spy on it
from benchmarks.results import read_results_json
from muxlab.errors import UsageError
from muxlab.fdbudget import SELECT_RESERVE
from servers import registry

# -- sweep charts, one function per experiment kind ------------------------------------


def connections_of(record: Record) -> float:
    """The x of a chart against active connections."""
    return float(record["spec"]["connections"])


def chart_active(data: dict[str, Any], name: str, records: list[Record], out: Path) -> list[Path]:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    panels = (("rps", "throughput"), ("p50_us", "median latency"), ("p99_us", "p99 latency"))
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for (impl, protocol, size), group in group_records(
            records, "impl", "protocol", "msg_bytes"
        ).items():
            label = f"{impl} ({protocol}{f' {size} B' if size else ''})"
            draw_impl_series(ax, group, connections_of, metric, impl, label=label)
        log_axes(ax, metric)
        label_axes(ax, "active connections (log)", metric, title)
    axes[0].legend(fontsize=8)
    body = (
        "Closed loop, one request in flight per connection. With every connection busy, "
        "each wait call returns many events, so the mechanisms' fixed cost is spread thin "
        "and the lines stay close; latency grows with connections because the server serves "
        "them in turn."
    )
    return finish_grid_chart(fig, f"{name}: throughput and latency", body, data, out, name)


def chart_idle(data: dict[str, Any], name: str, records: list[Record], out: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = (
        ("rps", "throughput relative to 0 idle"),
        ("p99_us", "p99 latency"),
        ("cpu_us_per_request", "server CPU per request"),
        ("wait_cpu_us", "CPU per wait call, dispatch included"),
    )
    groups = group_records(records, "impl", "connections", "msg_bytes")
    ceilings: dict[str, float] = {}  # implementation -> idle count where its line ends
    for ax, (metric, title) in zip(axes.flat, panels, strict=True):
        for (impl, active, _), group in groups.items():
            scale = 1.0
            if metric == "rps":
                base = [r for r in group if r["spec"]["idle"] == 0 and r["status"] == "done"]
                if not base:
                    continue
                scale = base[0]["summary"]["rps"]["median"]
            draw_impl_series(ax, group, lambda r: r["spec"]["idle"], metric, impl, scale=scale)
            entry = registry.find(impl)
            most = None if entry is None else entry.max_connections(SELECT_RESERVE)
            if most is not None and any(r["status"] == "skipped" for r in group):
                ceilings[impl] = most - active
                mark_ceiling(ax, impl, group, metric, scale, ceilings[impl])
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        if metric != "rps":
            ax.set_yscale("log")
        else:
            ax.axhline(1.0, color="black", linewidth=0.8, alpha=0.5)
        label_axes(ax, "idle connections (0, then log)", metric, title)
        if metric == "rps":
            ax.set_ylabel("throughput / throughput at 0 idle")
    axes[0][0].legend(fontsize=8)
    ceiling = "".join(
        f" {impl}'s line ends at its descriptor ceiling (x marker, dotted line at {x:,.0f} "
        f"idle): it cannot watch descriptor {registry.get(impl).fd_ceiling} or above, so "
        "those points are skipped, not measured."
        for impl, x in ceilings.items()
    )
    body = (
        "10 active connections plus idle ones that never send. select and poll pass every "
        "registered descriptor to the kernel on every call, so their cost per wait grows "
        "with idle connections and their throughput falls; epoll's wait cost depends on "
        "ready descriptors only, so its line stays flat near 1.0." + ceiling
    )
    title = f"{name}: 10 active connections plus idle ones"
    return finish_grid_chart(fig, title, body, data, out, name)


def mark_ceiling(
    ax: Axes, impl: str, group: list[Record], metric: str, scale: float, ceiling_x: float
) -> None:
    colour = registry.style_of(impl).colour
    measured = [r for r in group if r["status"] == "done" and r["summary"][metric]["median"]]
    ax.axvline(ceiling_x, color=colour, linestyle=":", linewidth=1.2)
    if measured:
        last = max(measured, key=lambda r: r["spec"]["idle"])
        y = last["summary"][metric]["median"] / scale
        ax.plot([ceiling_x], [y], marker="X", markersize=11, color=colour, linestyle="none")
        ax.annotate(
            ceiling_label(impl),
            (ceiling_x, y),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
            color=colour,
        )


def chart_ltet(data: dict[str, Any], name: str, records: list[Record], out: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    panels = (
        ("wait_calls_per_request", "wait calls per request"),
        ("events_per_wait", "events per wait call"),
        ("reads_per_request", "reads per request"),
        ("reads_eagain_per_request", "reads that hit EAGAIN, per request"),
        ("mib_per_s", "throughput"),
        ("cpu_us_per_request", "server CPU per request"),
    )
    groups = group_records(records, "impl", "et_drain", "connections")
    conns_order = sorted({k[2] for k in groups})
    sizes = sorted({r["spec"]["msg_bytes"] for r in records})
    for ax, (metric, title) in zip(axes.flat, panels, strict=True):
        for (impl, drain, conns), group in groups.items():
            style = LINESTYLES[conns_order.index(conns) % len(LINESTYLES)]
            impl_label = impl if drain is None else f"{impl} {drain}"
            draw_series(
                ax,
                group,
                lambda r: r["spec"]["msg_bytes"],
                metric,
                label=f"{impl_label}, {conns} conns",
                color=variant_colour(impl, drain),
                linestyle=style,
                marker=MARKERS[conns_order.index(conns) % len(MARKERS)],
            )
        ax.set_xscale("log", base=2)
        if metric in ("mib_per_s", "cpu_us_per_request"):
            ax.set_yscale("log")
        label_axes(ax, "message size (log 2)", metric, title)
        size_ticks(ax, sizes)
    axes[0][0].legend(fontsize=8)
    body = (
        "Echo, closed loop. Edge-triggered (ET) must read until EAGAIN after each event, so "
        "it pays about one extra recv per wake-up (EAGAIN reads/request near 1) and is never "
        "told twice about the same data; level-triggered (LT) does one recv (up to 64 KiB) "
        "per event and lets the next wait report the rest, so a message larger than one recv "
        "costs it extra wait calls and events. ET short-read (--et-drain short-read) stops "
        "a drain at a recv that returned less than asked, as epoll(7) allows on a stream "
        "socket, and so skips the EAGAIN recv."
    )
    title = f"{name}: epoll level-triggered vs edge-triggered"
    return finish_grid_chart(fig, title, body, data, out, name)


def chart_peers(data: dict[str, Any], name: str, records: list[Record], out: Path) -> list[Path]:
    protocols = sorted({r["spec"]["protocol"] for r in records})
    fig, axes = plt.subplots(len(protocols), 3, figsize=(15, 4.6 * len(protocols)), squeeze=False)
    panels = (
        ("rps", "throughput"),
        ("cpu_us_per_request", "server CPU per request"),
        ("p99_us", "p99 latency"),
    )
    for row, protocol in zip(axes, protocols, strict=True):
        mine = [r for r in records if r["spec"]["protocol"] == protocol]
        for ax, (metric, title) in zip(row, panels, strict=True):
            for (impl,), group in group_records(mine, "impl").items():
                draw_impl_series(ax, group, connections_of, metric, impl)
            log_axes(ax, metric)
            label_axes(ax, "connections (log)", metric, f"{protocol}: {title}")
        row[0].legend(fontsize=8)
    body = (
        "muxlab's epoll servers against what one would otherwise pick: asyncio (protocol and "
        "streams APIs), uvloop (libuv, in C) and nginx (one worker, HTTP). Server CPU per "
        "request is the server's user+system CPU in the window over the requests it served: "
        "it stays comparable when the client is the bottleneck. Lower is better."
    )
    title = f"{name}: muxlab against reference servers"
    return finish_grid_chart(fig, title, body, data, out, name)


CHARTS: dict[str, Callable[[dict[str, Any], str, list[Record], Path], list[Path]]] = {
    "active": chart_active,
    "idle": chart_idle,
    "ltet": chart_ltet,
    "peers": chart_peers,
}


def plot_results(data: dict[str, Any], out_dir: Path) -> list[Path]:
    # Imported here: that module draws with this one's helpers.
    from benchmarks.charts_open_loop import OPEN_LOOP_CHARTS
    from benchmarks.herd import SCALING_CHARTS

    own_charts = {**OPEN_LOOP_CHARTS, **SCALING_CHARTS}
    paths: list[Path] = []
    for experiment in data["plan"]["experiments"]:
        name = experiment["name"]
        if experiment["kind"] in own_charts:
            paths += own_charts[experiment["kind"]](data, name, out_dir)
            continue
        records = [r for r in data["points"] if name in r["experiments"]]
        if any(r["status"] == "done" for r in records):
            paths += CHARTS[experiment["kind"]](data, name, records, out_dir)
    from benchmarks.charts_syscalls import chart_syscalls  # draws with this module's helpers

    return paths + chart_syscalls(data, out_dir)


# -- pytest-benchmark JSON -------------------------------------------------------------


def plot_benchmark_json(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """One chart per group: the timed cost (or a recorded rate) against N, per backend."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench.get("group") or "ungrouped"].append(bench)
    paths: list[Path] = []
    machine = data.get("machine_info", {})
    where = (
        f"{machine.get('cpu', {}).get('brand_raw', 'unknown CPU')}, Python "
        f"{machine.get('python_version', '?')}, {data.get('datetime', '')}"
    )
    for group, benches in sorted(groups.items()):
        if not all("backend" in bench["extra_info"] for bench in benches):
            # The load generator's own benchmarks compare clients, not backends: their
            # numbers are in extra_info and docs/loadgen.md, not on a per-backend chart.
            continue
        x_key = benches[0]["extra_info"].get("x", "n_fds")
        y_key = benches[0]["extra_info"].get("y")
        fig, ax = plt.subplots(figsize=(8, 5.2))
        lines: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        for bench in benches:
            info = bench["extra_info"]
            if y_key:
                value = float(info[y_key])
                lines[info["backend"]].append((float(info[x_key]), value, value, value))
            else:
                stats = bench["stats"]
                lines[info["backend"]].append(
                    (
                        float(info[x_key]),
                        stats["median"] * 1e6,
                        stats["q1"] * 1e6,
                        stats["q3"] * 1e6,
                    )
                )
        for backend, points in sorted(lines.items(), key=lambda kv: registry.draw_order(kv[0])):
            points.sort()
            xs, med, lo, hi = zip(*points, strict=True)
            ax.errorbar(
                xs,
                med,
                yerr=[
                    [m - q for m, q in zip(med, lo, strict=True)],
                    [q - m for m, q in zip(med, hi, strict=True)],
                ],
                color=registry.style_of(backend).colour,
                marker=registry.style_of(backend).marker,
                capsize=3,
                label=backend,
            )
        # The file says a ceiling was reached ("select_ceiling", pytest-benchmark's
        # extra_info); the registry says whose, and how to draw it.
        if benches[0]["extra_info"].get("select_ceiling"):
            for entry in registry.entries():
                if entry.name in lines and entry.fd_ceiling is not None:
                    mark_benchmark_ceiling(ax, entry.name, entry.fd_ceiling)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(benches[0]["extra_info"].get("x_label", "registered descriptors N (log)"))
        ax.set_ylabel(benches[0]["extra_info"].get("y_label", "time per pass (us, log)"))
        ax.set_title(group, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        caption = benches[0]["extra_info"].get("caption", "") + f"\n{where}"
        stem = "bench-" + re.sub(r"[^A-Za-z0-9]+", "-", group).strip("-")
        paths += finish(fig, f"pytest-benchmark: {group}", caption, out_dir, stem)
    return paths


def mark_benchmark_ceiling(ax: Axes, impl: str, ceiling: int) -> None:
    """A dotted line at the descriptor count ``impl`` cannot reach, labelled."""
    colour = registry.style_of(impl).colour
    ax.axvline(ceiling, color=colour, linestyle=":")
    ax.annotate(
        ceiling_label(impl),
        (ceiling, 0.9),
        xycoords=("data", "axes fraction"),
        xytext=(4, 0),
        textcoords="offset points",
        fontsize=8,
        color=colour,
    )


def plot_file(path: Path, out_dir: Path | None) -> list[Path]:
    """Charts from a sweep results file or a pytest-benchmark JSON file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if isinstance(raw, dict) and "benchmarks" in raw and "machine_info" in raw:
        return plot_benchmark_json(raw, out_dir or path.parent / "charts")
    data = read_results_json(path)
    return plot_results(data, out_dir or path.parent / "charts")
